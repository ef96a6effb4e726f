"""Finding inputs and naming outputs (cnnkit.data.sources): folders and ``**`` globs with directory links
(loops end, a linked folder outside is read once), and one distinct output name per input."""

from __future__ import annotations

import contextlib
import glob
import signal
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from cnnkit.api import expand_sources
from cnnkit.data.imagefolder import list_class_images
from cnnkit.data.sources import expand_source_files, glob_files, glob_root, output_names, walk_files
from cnnkit.errors import CnnkitError


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: the old recursive glob never came back from a link loop."""
    def expired(signum, frame):
        raise TimeoutError(f"still walking after {seconds} s: a link loop is being followed")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(path)
    return path


@pytest.fixture
def looped(tmp_path) -> Path:
    """photos/x.png, photos/a/y.png, photos/b/z.png, where a/up and b/up link back to photos: every level of
    the tree holds two ways back up, so a walk that follows them grows as 2^depth (until ELOOP, at 40 links)."""
    root = tmp_path / "photos"
    for name in ("x.png", "a/y.png", "b/z.png"):
        _png(root / name)
    (root / "a" / "up").symlink_to("..")
    (root / "b" / "up").symlink_to("..")
    return root


def test_a_glob_over_a_link_loop_ends_and_lists_each_file_once(looped):
    with deadline(20):
        found = glob_files(f"{looped}/**/*.png")
    assert found == [looped / "a/y.png", looped / "b/z.png", looped / "x.png"]


def test_a_folder_with_a_link_loop_as_a_source_and_as_a_glob(looped, monkeypatch):
    monkeypatch.chdir(looped.parent)
    with deadline(20):
        as_folder = expand_sources(["photos"])
        as_glob = expand_sources(["photos/**/*.png"])
    expected = [Path("photos/a/y.png"), Path("photos/b/z.png"), Path("photos/x.png")]
    assert [p for p, _ in as_folder] == expected and [p for p, _ in as_glob] == expected


def test_an_imagefolder_class_with_a_link_loop(looped):
    with deadline(20):
        classes = list_class_images(looped.parent)
    assert classes == {"photos": [looped / "a/y.png", looped / "b/z.png", looped / "x.png"]}


def test_a_link_to_a_folder_outside_is_read_once(tmp_path):
    """Data linked in from elsewhere is found (Path.rglob skipped it); a link back inside is not read twice."""
    outside = tmp_path / "mounted"
    _png(outside / "far.png")
    root = tmp_path / "data"
    _png(root / "near.png")
    (root / "linked").symlink_to(outside)
    (root / "again").symlink_to(root)  # inside: skipped
    (outside / "back").symlink_to(root)  # from outside back in: every real folder is entered once
    assert walk_files(root) == [root / "linked/far.png", root / "near.png"]
    assert glob_files(f"{root}/**/*.png") == [root / "linked/far.png", root / "near.png"]


def test_glob_keeps_globs_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("d/a.jpg", "d/.hidden.jpg", "d/.cache/b.jpg", "d/s/t/c.jpg", "d/s/c.png", "e/f.jpg"):
        _png(tmp_path / name)
    for pattern in ("d/**/*.jpg", "d/**", "**/*.jpg", "d/*/*.png", "d/**/t/*.jpg", "*/a.jpg", "d/**/.cache/*.jpg"):
        expected = sorted(p for p in map(Path, glob.glob(pattern, recursive=True)) if p.is_file())
        assert glob_files(pattern) == expected, pattern
    assert glob_root("d/**/*.jpg") == Path("d") and glob_root("*.jpg") == Path(".") and glob_root("/x/y*/z") == Path("/x")


def test_sources_carry_their_path_below_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("scans/a/IM0001.png", "scans/b/IM0001.png", "x.png"):
        _png(tmp_path / name)
    found = expand_source_files(["scans", "scans/*/IM*.png", "x.png"], lambda p: p.suffix == ".png")
    assert [(str(f.path), f.named, str(f.relative)) for f in found] == [
        ("scans/a/IM0001.png", False, "a/IM0001.png"), ("scans/b/IM0001.png", False, "b/IM0001.png"),
        ("scans/a/IM0001.png", False, "a/IM0001.png"), ("scans/b/IM0001.png", False, "b/IM0001.png"),
        ("x.png", True, "x.png")]
    with pytest.raises(CnnkitError, match="matches no files"):
        expand_source_files(["scans/**/*.dcm"], lambda p: True)


def test_output_names_are_unique_and_mirror_the_inputs():
    assert output_names(["a/IM0001.dcm", "b/IM0001.dcm", "IM0002.dcm"], ".png") == ["a/IM0001.png", "b/IM0001.png", "IM0002.png"]
    # x.jpg and x.png in one folder keep their suffix; the same name from two sources gets -2
    assert output_names(["x.jpg", "x.png", "y.png", "y.png"], ".png") == ["x.jpg.png", "x.png.png", "y.png", "y-2.png"]
    assert output_names(["X.png", "x.jpg"], ".png") == ["X.png.png", "x.jpg.png"]  # case-insensitive file systems
    assert output_names(["y.png", "y.png", "y-2.png"], ".png") == ["y.png", "y-2.png", "y-2-2.png"]
    # per-input endings: a volume's slices, a video beside an image of the same name
    assert output_names(["vol.nii.gz", "vol.nii.gz", "vol_0001.png"], ["_0000.png", "_0001.png", ".png"]) == [
        "vol_0000.png", "vol.nii.gz_0001.png", "vol_0001.png.png"]
    assert output_names(["clip.mp4", "clip.png"], [".mp4", ".png"]) == ["clip.mp4", "clip.png"]
    # never outside the output folder
    assert output_names([PurePosixPath("../../etc/passwd")], ".png") == ["etc/passwd.png"]
