"""`cnnkit data synth objects|textures|cells --task classify`: ImageFolder layout, class counts (balanced and
long-tailed), determinism, the textures' train/eval split of every photo, bad input and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import synth_classify
from cnnkit.data.synth_classify import (TRAIN_SHARE, classes_of, make_texture_image, synth_classification,
                                        train_counts)
from cnnkit.errors import CnnkitError
from conftest import run_cli

SPLITS = ("train", "val", "test")


def _layout(root):
    """{split: {class: sorted file names}} of an ImageFolder tree."""
    return {split: {d.name: sorted(p.name for p in d.iterdir()) for d in sorted((root / split).iterdir())}
            for split in SPLITS}


@pytest.mark.parametrize("kind", ["objects", "textures", "cells"])
def test_imagefolder_layout_size_and_mode(tmp_path, kind):
    out = tmp_path / kind
    summary = synth_classification(kind, out, n=3, eval_n=2, imgsz=32, seed=0, progress=False)
    classes = list(classes_of(kind))
    assert summary["classes"] == classes and summary["task"] == "classify"
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    layout = _layout(out)
    for split, want in (("train", 3), ("val", 2), ("test", 2)):
        assert sorted(layout[split]) == sorted(classes)
        for name in classes:
            assert layout[split][name] == [f"{i:06d}.png" for i in range(want)], (split, name)
    assert summary["images"] == {"train": 3 * len(classes), "val": 2 * len(classes), "test": 2 * len(classes)}
    for path in out.rglob("*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (32, 32), path
    assert [p.name for p in tmp_path.iterdir()] == [kind]  # the temporary sibling is gone


def test_train_counts_balanced_and_long_tailed():
    assert train_counts(5, 6, 1.0) == [5] * 6
    counts = train_counts(300, 6, 10.0)
    assert len(counts) == 6 and counts[0] == 300 and counts[-1] == 30
    assert all(a >= b for a, b in zip(counts, counts[1:])) and counts[1] < 300 and counts[-2] > 30
    assert train_counts(4, 1, 10.0) == [4]
    assert min(train_counts(2, 6, 100.0)) == 1  # never a class without a training image


def test_long_tail_on_disk_and_balanced_eval(tmp_path):
    out = tmp_path / "lt"
    summary = synth_classification("cells", out, n=6, eval_n=2, imgsz=16, imbalance=3.0, progress=False)
    want = train_counts(6, 5, 3.0)
    assert want[0] == 6 and want[-1] == 2
    assert summary["per_class"] == {"train": want, "val": [2] * 5, "test": [2] * 5}
    layout = _layout(out)
    assert [len(layout["train"][name]) for name in classes_of("cells")] == want
    assert {len(files) for split in ("val", "test") for files in layout[split].values()} == {2}


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.mark.parametrize("kind", ["objects", "textures", "cells"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, kind):
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (3, 3, 4)):
        synth_classification(kind, root, n=2, eval_n=1, imgsz=32, seed=seed, progress=False)
    a, b, c = map(_bytes, roots)
    assert a.keys() == b.keys() == c.keys() and len(a) == 4 * len(classes_of(kind))
    assert a == b
    assert all(a[name] != c[name] for name in a)


@pytest.mark.parametrize("kind", ["objects", "cells"])
def test_no_image_repeats_across_splits_or_classes(tmp_path, kind):
    """Every image has its own generator: val/test image i of a class is not train image i (a leak)."""
    synth_classification(kind, tmp_path / "d", n=2, eval_n=2, imgsz=32, progress=False)
    files = _bytes(tmp_path / "d")
    assert len(set(files.values())) == len(files)


def test_first_images_do_not_depend_on_n(tmp_path):
    """Each image has its own generator: a larger --n adds images and leaves the first ones as they were."""
    synth_classification("objects", tmp_path / "small", n=1, eval_n=1, imgsz=32, progress=False)
    synth_classification("objects", tmp_path / "big", n=2, eval_n=1, imgsz=32, progress=False)
    small, big = _bytes(tmp_path / "small"), _bytes(tmp_path / "big")
    assert small.items() <= big.items() and len(big) > len(small)


# ---------------------------------------------------------------- textures: no pixel of val/test in train

def _crops_taken(monkeypatch, split, count=20, size=32):
    """The photo regions make_texture_image cuts for ``split``, as (lowest, highest) source column: the source
    holds its own column index in every pixel, and every float image handed to PIL is recorded."""
    source = np.tile(np.arange(600, dtype=np.float32), (400, 1))
    seen = []
    fromarray = Image.fromarray

    def spy(array, *args, **kwargs):
        if array.dtype == np.float32 and array.ndim == 2:
            seen.append((float(array.min()), float(array.max())))
        return fromarray(array, *args, **kwargs)

    monkeypatch.setattr(synth_classify.Image, "fromarray", spy)
    for i in range(count):
        image = make_texture_image(np.random.default_rng([0, i]), source, split, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    monkeypatch.undo()
    assert len(seen) == count
    return seen


def test_texture_train_crops_from_left_and_eval_from_right(monkeypatch):
    cut = int(600 * TRAIN_SHARE)
    train = _crops_taken(monkeypatch, "train")
    assert max(hi for _, hi in train) < cut
    assert min(lo for lo, _ in train) < cut / 2  # the whole training part is used, not one corner
    for split in ("val", "test"):
        crops = _crops_taken(monkeypatch, split)
        assert min(lo for lo, _ in crops) >= cut, split


def test_texture_split_is_visible_in_the_pixels():
    """Behaviour, not implementation: a photo whose training part is flat and whose evaluation part is a
    checkerboard gives flat training images and textured val/test images."""
    source = np.zeros((400, 600), dtype=np.float32)
    cut = int(600 * TRAIN_SHARE)
    yy, xx = np.mgrid[0:400, 0:600 - cut]
    source[:, cut:] = 255.0 * (((yy // 6) + (xx // 6)) % 2)

    def roughness(split, i):  # mean absolute difference of horizontal neighbours, brightest channel
        image = make_texture_image(np.random.default_rng([1, i]), source, split, 32).astype(np.float32)
        return float(np.abs(np.diff(image.max(axis=2), axis=1)).mean())

    train = [roughness("train", i) for i in range(10)]
    evaluation = [roughness(split, i) for split in ("val", "test") for i in range(5)]
    assert max(train) < min(evaluation), (train, evaluation)


def test_texture_sources_are_grey_photos():
    sources = synth_classify.texture_sources()
    assert len(sources) == len(classes_of("textures"))
    for source in sources:
        assert source.ndim == 2 and source.dtype == np.float32 and min(source.shape) >= 256
        assert source.std() > 5  # a photo, not a blank
        assert source.shape[1] - int(source.shape[1] * TRAIN_SHARE) >= 64  # room for an eval crop


# ------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, needle", [
    ({"kind": "planets"}, "no 'planets' dataset"),
    ({"n": 0}, "--n 0"),
    ({"eval_n": 0}, "--eval-n 0"),
    ({"imbalance": 0.5}, "--imbalance 0.5"),
    ({"imbalance": float("nan")}, "--imbalance nan"),
    ({"imgsz": 15}, "--imgsz 15"),
    ({"imgsz": 1025}, "--imgsz 1025"),
    ({"seed": -1}, "--seed -1"),
])
def test_bad_arguments(tmp_path, kwargs, needle):
    args = {"kind": "objects", "out": tmp_path / "x", "n": 2, "eval_n": 1, "imgsz": 32, "progress": False, **kwargs}
    with pytest.raises(CnnkitError) as info:
        synth_classification(**args)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_refuses_non_empty_out_unless_force(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(CnnkitError, match="not empty.*--force"):
        synth_classification("cells", out, n=1, eval_n=1, imgsz=16, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    synth_classification("cells", out, n=1, eval_n=1, imgsz=16, force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "train" / "round" / "000000.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_objects_classify(tmp_path, monkeypatch, capsys):
    out = tmp_path / "objects"
    code, stdout, err = run_cli(["data", "synth", "objects", "--task", "classify", "--n", "3", "--eval-n", "2",
                                 "--imgsz", "32", "--out", out], monkeypatch, capsys)
    assert code == 0, err
    said = " ".join((stdout + err).split())
    assert "18 train (3 to 3 per class) + 12 val + 12 test images of 6 classes" in said
    assert len(list((out / "val" / "ring").glob("*.png"))) == 2


def test_cli_long_tail_and_cells_classify(tmp_path, monkeypatch, capsys):
    code, stdout, err = run_cli(["data", "synth", "cells", "--task", "classify", "--n", "4", "--imbalance", "4",
                                 "--eval-n", "1", "--imgsz", "16", "--out", tmp_path / "c"], monkeypatch, capsys)
    assert code == 0, err
    assert "(4 to 1 per class)" in " ".join((stdout + err).split())
    assert sorted(p.name for p in (tmp_path / "c" / "train").iterdir()) == sorted(classes_of("cells"))


@pytest.mark.parametrize("args, needle", [
    (["objects", "--task", "detect"], "--task detect"),
    (["textures", "--task", "segment"], "--task segment"),
    (["planets", "--task", "classify"], "no 'planets' dataset"),
    (["objects", "--imbalance", "0.5"], "--imbalance 0.5"),
    (["objects", "--imgsz", "2000"], "--imgsz 2000"),
    (["objects", "--seed", "-1"], "--seed -1"),
])
def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, needle):
    code, _, err = run_cli(["data", "synth", *args, "--n", "2", "--out", tmp_path / "x"], monkeypatch, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
