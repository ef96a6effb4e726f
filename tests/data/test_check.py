import io
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from cnnkit.data.check import check_imagefolder, print_report
from cnnkit.errors import CnnkitError


def _png(path, seed=0, size=(8, 6), mode="RGB"):
    """Write a small PNG whose pixels depend on seed, so different seeds give different bytes."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    elif mode == "RGBA":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    elif mode == "L":
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").quantize(16)
    elif mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")
    return path


def _dataset(root, counts, seed=0):
    """counts: {split: {class: n}} -> files root/split/class/i.png, all with distinct content."""
    for split, classes in counts.items():
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                _png(root / split / name / f"{i}.png", seed=seed)
    return root


def _messages(report, level):
    return [(f.path, f.message) for f in report.findings if f.level == level]


def test_clean_dataset(tmp_path):
    root = _dataset(tmp_path, {"train": {"cat": 6, "dog": 3}, "val": {"cat": 2, "dog": 2}})
    report = check_imagefolder(root, progress=False)
    assert report.findings == []
    assert not report.has_errors()
    assert report.layout == "imagefolder"
    assert report.classes == ["cat", "dog"]
    assert report.counts == {"train": {"cat": 6, "dog": 3}, "val": {"cat": 2, "dog": 2}}
    assert report.imbalance_ratio == {"train": 2.0, "val": 1.0}
    assert report.sizes["train"] == {"width": {"min": 8, "median": 8, "max": 8},
                                     "height": {"min": 6, "median": 6, "max": 6}}
    assert report.modes == {"train": {"RGB": 9}, "val": {"RGB": 4}}
    assert report.duplicates == []


def test_single_split_layout_is_train(tmp_path):
    for i, name in enumerate(["a", "b"]):
        _png(tmp_path / name / "x.png", seed=i)
    report = check_imagefolder(tmp_path, progress=False)
    assert report.counts == {"train": {"a": 1, "b": 1}}
    assert not report.has_errors()


def test_imbalance_warning(tmp_path):
    root = _dataset(tmp_path, {"train": {"many": 12, "few": 1}, "val": {"many": 1, "few": 1}})
    report = check_imagefolder(root, progress=False)
    assert report.imbalance_ratio["train"] == 12.0
    warnings = _messages(report, "warning")
    assert len(warnings) == 1 and "--balance weights, oversample or undersample" in warnings[0][1]
    assert not report.has_errors()


def test_truncated_png_is_error_naming_file(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    bad = _png(root / "train" / "a" / "big.png", seed=99, size=(64, 64))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    report = check_imagefolder(root, progress=False)
    errors = _messages(report, "error")
    assert [p for p, _ in errors] == [str(bad)]
    assert "truncated" in errors[0][1]
    assert report.counts["train"]["a"] == 3  # counted as a file, but not in size/mode stats
    assert sum(report.modes["train"].values()) == 4


def test_non_image_file_is_warning(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}})
    (root / "train" / "a" / "notes.txt").write_text("hello")
    report = check_imagefolder(root, progress=False)
    warnings = _messages(report, "warning")
    assert [p for p, _ in warnings] == [str(root / "train" / "a" / "notes.txt")]
    assert "not an image" in warnings[0][1]
    assert report.counts["train"]["a"] == 1
    assert not report.has_errors()


def test_duplicate_across_splits_is_error(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    src = root / "train" / "b" / "1.png"
    copy = root / "val" / "b" / "copied.png"
    shutil.copy(src, copy)
    report = check_imagefolder(root, progress=False)
    assert len(report.duplicates) == 1
    assert sorted(report.duplicates[0]["files"]) == sorted([str(src), str(copy)])
    assert report.duplicates[0]["splits"] == ["train", "val"]
    errors = _messages(report, "error")
    assert [p for p, _ in errors] == [str(copy)] and "leak" in errors[0][1]


def test_duplicate_inside_one_split_is_warning(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    shutil.copy(root / "train" / "a" / "0.png", root / "train" / "b" / "dup.png")
    report = check_imagefolder(root, progress=False)
    assert report.duplicates == []
    assert not report.has_errors()
    assert [p for p, _ in _messages(report, "warning")] == [str(root / "train" / "b" / "dup.png")]


def test_empty_class_folder_is_error(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    (root / "train" / "empty").mkdir()
    report = check_imagefolder(root, progress=False)
    errors = _messages(report, "error")
    assert [p for p, _ in errors] == [str(root / "train" / "empty")]
    assert "empty class folder" in errors[0][1]
    assert math.isinf(report.imbalance_ratio["train"])


def test_class_in_val_not_in_train_is_error(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1, "zebra": 1}})
    report = check_imagefolder(root, progress=False)
    errors = _messages(report, "error")
    assert [p for p, _ in errors] == [str(root / "val" / "zebra")]
    assert "zebra" in errors[0][1]
    assert report.classes == ["a", "b", "zebra"]


def test_train_class_missing_from_val_is_warning(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1}})
    report = check_imagefolder(root, progress=False)
    assert not report.has_errors()
    assert [p for p, _ in _messages(report, "warning")] == [str(root / "train" / "b")]


def test_modes_are_counted(tmp_path):
    modes = ["L", "RGBA", "P", "P", "I;16", "RGB"]
    for i, mode in enumerate(modes):
        _png(tmp_path / "train" / "x" / f"{i}.png", seed=i, mode=mode)
    _png(tmp_path / "train" / "y" / "0.png", seed=50, mode="L")
    report = check_imagefolder(tmp_path, progress=False)
    assert report.modes["train"] == {"L": 2, "RGBA": 1, "P": 2, "I;16": 1, "RGB": 1}
    assert not report.has_errors()


def test_to_dict_is_json_and_print_report(tmp_path):
    root = _dataset(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}})
    (root / "train" / "empty").mkdir()  # gives an infinite imbalance ratio
    shutil.copy(root / "train" / "a" / "0.png", root / "val" / "a" / "copy.png")
    report = check_imagefolder(root, progress=True)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["imbalance_ratio"]["train"] is None
    assert data["counts"]["val"] == {"a": 2, "b": 1}
    assert data["errors"] == 2 and data["findings"][0]["level"] == "error"
    assert len(data["duplicates"]) == 1

    console = Console(file=io.StringIO(), width=200)
    print_report(report, console)
    text = console.file.getvalue()
    assert "empty class folder" in text and "FAIL" in text and "2 error(s)" in text


def test_save_writes_json(tmp_path):
    root = _dataset(tmp_path / "d", {"train": {"a": 1, "b": 1}})
    report = check_imagefolder(root, progress=False)
    out = report.save(tmp_path / "out" / "check.json")
    assert json.loads(out.read_text())["counts"] == {"train": {"a": 1, "b": 1}}


def test_missing_root_raises(tmp_path):
    with pytest.raises(CnnkitError, match="nope"):
        check_imagefolder(tmp_path / "nope", progress=False)
