"""`cnnkit data check` on the masks layout: every problem of a broken dataset reported at once, a clean one passes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from cnnkit.data.check_segmentation import check_segmentation, print_segmentation_report
from tests.conftest import run_cli

VOC = {0: (0, 0, 0), 1: (128, 0, 0), 15: (192, 128, 128)}  # background, aeroplane, person
BOUNDARY = (224, 224, 192)


def _image(path: Path, size=(16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 60, 30)).save(path)
    return path


def _mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), "RGB" if values.ndim == 3 else "L").save(path)
    return path


def _index(fill=0, size=(16, 12)) -> np.ndarray:
    return np.full(size[::-1], fill, np.uint8)


def _broken(root: Path) -> Path:
    """Every problem kind at once, one file each, with classes background, cat, dog, bird."""
    (root).mkdir(parents=True)
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    good = _index()
    good[2:6, 2:8], good[8:, 10:] = 1, 2
    good[0, 0] = 255  # the ignore index is never an error
    for name in ("good", "small", "values", "colour", "empty", "truncated", "nomask"):
        _image(root / "images" / "train" / f"{name}.png")
    _mask(root / "masks" / "train" / "good.png", good)
    _mask(root / "masks" / "train" / "small.png", _index(1, size=(10, 10)))
    values = good.copy()
    values[0, :3], values[1, :2] = 7, 9  # 5 px of values that are not classes
    _mask(root / "masks" / "train" / "values.png", values)
    colour = np.zeros((12, 16, 3), np.uint8)
    colour[1:4, 1:4], colour[5:9, 5:9], colour[0, :] = VOC[1], VOC[15], BOUNDARY
    _mask(root / "masks" / "train" / "colour.png", colour)
    _mask(root / "masks" / "train" / "empty.png", _index())
    _mask(root / "masks" / "train" / "truncated.png", good)
    whole = (root / "images" / "train" / "truncated.png").read_bytes()
    (root / "images" / "train" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    _mask(root / "masks" / "train" / "orphan.png", good)
    (root / "masks" / "train" / "garbage.png").write_bytes(b"not a png")
    _image(root / "images" / "train" / "garbage.png")
    _image(root / "images" / "val" / "v.png")
    _mask(root / "masks" / "val" / "v.png", good)
    return root


def test_every_problem_is_reported_at_once(tmp_path):
    root = _broken(tmp_path / "seg")
    report = check_segmentation(root, progress=False)
    found = {(f.level, Path(f.path).name): f.message for f in report.findings}
    errors = {name for level, name in found if level == "error"}
    assert {"train", "small.png", "values.png", "colour.png", "truncated.png", "garbage.png"} <= errors, found
    warnings = " | ".join(f.message for f in report.findings if f.level == "warning")

    assert "1 of 8 train images have no mask (images/train/nomask.png)" in found[("error", "train")]
    assert "1 train masks have no image (masks/train/orphan.png)" in warnings
    small = found[("error", "small.png")]
    assert "10x10" in small and "16x12" in small and str(root / "images" / "train" / "small.png") in small
    assert "values 7, 9 (5 px) are not classes" in found[("error", "values.png")] and "0..3" in found[("error", "values.png")]
    assert "truncated" in found[("error", "truncated.png")].lower()
    assert "cannot read mask" in found[("error", "garbage.png")]

    colour = found[("error", "colour.png")]
    assert "1 of 8 masks are RGB colour images" in colour and "4 colours" in colour
    assert "(224, 224, 192) 16 px" in colour and "(192, 128, 128) 16 px" in colour and "(128, 0, 0) 9 px" in colour
    assert "all are Pascal VOC palette colours" in colour
    assert "(128, 0, 0) -> 1 aeroplane" in colour and "(192, 128, 128) -> 15 person" in colour and "-> 255" in colour
    assert f"`cnnkit data convert {root} --to masks --palette voc --out {root.parent / 'seg-index'}`" in colour
    assert report.segmentation["colour_masks"]["voc_palette"] is True

    assert "1 of 5 train masks are all background or ignore (masks/train/empty.png)" in warnings
    assert "classes with no pixels in train: bird" in warnings
    assert report.has_errors()

    seg = report.segmentation
    assert seg["files"]["train"] == {"images": 8, "masks": 8, "pairs": 7, "samples": 7, "images_without_masks": 1,
                                     "masks_without_images": 1}
    assert report.counts["train"]["dog"] == 3  # good, values and truncated hold dog pixels
    assert report.counts["val"] == {"background": 1, "cat": 1, "dog": 1, "bird": 0}
    assert seg["ignore_pixels"]["train"] == 2  # good and truncated (values overwrote its 255)
    assert report.modes["train"] == {"L": 5, "RGB": 1}  # the unreadable mask has no mode

    text = io.StringIO()
    print_segmentation_report(report, Console(file=text, width=200))
    assert "pixel share (images) per class" in text.getvalue() and "FAIL" in text.getvalue()


def test_cli_exits_2_with_json_and_tables(tmp_path, monkeypatch, capsys):
    root = _broken(tmp_path / "seg")
    code, out, _ = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 2 and report["layout"] == "segmentation" and report["errors"] >= 6
    code, out, _ = run_cli(["data", "check", root], monkeypatch, capsys)
    assert code == 2 and "FAIL" in out


def test_no_classes_txt_other_colours_and_a_broken_classes_txt(tmp_path):
    root = tmp_path / "flat"  # no split folders: all train
    _image(root / "images" / "a.png")
    _image(root / "images" / "b.png")
    values = _index()
    values[:3] = 4
    _mask(root / "masks" / "a.png", values)
    _mask(root / "masks" / "b.png", np.full((12, 16, 3), (10, 20, 30), np.uint8))
    report = check_segmentation(root, progress=False)
    assert report.classes == ["background", "class_1", "class_2", "class_3", "class_4"]
    messages = " | ".join(f.message for f in report.findings)
    assert "missing: 5 classes (0..4) inferred from the masks' values" in messages
    assert "not the Pascal VOC palette (e.g. (10, 20, 30) is not a VOC colour)" in messages and "--palette FILE" in messages
    assert "classes with no pixels in train: class_1, class_2, class_3" in messages

    (root / "classes.txt").write_text("background\nbackground\n")
    report = check_segmentation(root, progress=False)
    assert any(f.level == "error" and "appears twice" in f.message for f in report.findings)


def test_clean_synthetic_dataset_passes_and_shares_sum_to_one(tmp_path, monkeypatch, capsys):
    from cnnkit.data.synth import synth_dataset

    root = tmp_path / "shapes"
    synth_dataset("shapes", root, task="segment", n=8, imgsz=64, progress=False)
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 0, err
    assert report["errors"] == 0 and report["classes"][0] == "background"
    for split in ("train", "val"):
        assert abs(sum(report["segmentation"]["pixel_share"][split].values()) - 1) < 1e-9
        assert report["segmentation"]["files"][split]["pairs"] == report["segmentation"]["files"][split]["images"]
    assert sum(report["segmentation"]["files"][s]["pairs"] for s in ("train", "val")) == 8
