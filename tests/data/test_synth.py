"""`cnnkit data synth shapes`: layouts, box agreement between COCO and YOLO, determinism, bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.synth import SHAPES, synth_dataset
from conftest import run_cli


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "shapes"
    summary = synth_dataset("shapes", root, n=12, imgsz=96, seed=0, progress=False)
    return root, summary


def test_cli_writes_coco_and_yolo(tmp_path, monkeypatch, capsys):
    out = tmp_path / "shapes"
    code, _, err = run_cli(["data", "synth", "shapes", "--task", "detect", "--n", "12", "--imgsz", "96", "--out", out,
                            "--val-fraction", "0.25"], monkeypatch, capsys)
    assert code == 0, err
    assert "9 train + 3 val images" in err
    for rel in ("annotations/train.json", "annotations/val.json", "data.yaml"):
        assert (out / rel).is_file()
    assert len(list((out / "images" / "train").glob("*.png"))) == 9
    assert len(list((out / "labels" / "val").glob("*.txt"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "shapes"]  # the temporary sibling is gone
    yaml_text = (out / "data.yaml").read_text()
    assert "path: .\n" in yaml_text and "train: images/train\n" in yaml_text and "val: images/val\n" in yaml_text
    assert f"names: [{', '.join(SHAPES)}]" in yaml_text


def test_coco_valid_and_yolo_agrees(small):
    root, summary = small
    assert summary["images"] == {"train": 10, "val": 2}
    total = 0
    for split in ("train", "val"):
        doc = json.loads((root / "annotations" / f"{split}.json").read_text())
        assert [c["id"] for c in doc["categories"]] == [1, 2, 3, 4, 5]
        assert [c["name"] for c in doc["categories"]] == list(SHAPES)
        images = {im["id"]: im for im in doc["images"]}
        assert len(images) == summary["images"][split]
        assert len({a["id"] for a in doc["annotations"]}) == len(doc["annotations"])
        for im in images.values():
            path = root / "images" / im["file_name"]
            assert im["file_name"].startswith(f"{split}/")
            with Image.open(path) as image:
                assert image.size == (im["width"], im["height"]) == (96, 96) and image.mode == "RGB"
            boxes = [a for a in doc["annotations"] if a["image_id"] == im["id"]]
            assert 1 <= len(boxes) <= 6
            label = root / "labels" / split / (path.stem + ".txt")
            rows = [line.split() for line in label.read_text().splitlines()]
            assert len(rows) == len(boxes)
            for a, row in zip(boxes, rows):
                x, y, w, h = a["bbox"]
                assert all(isinstance(v, float) for v in a["bbox"])
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96
                assert a["iscrowd"] == 0 and 0 < a["area"] <= w * h
                assert 1 <= a["category_id"] <= len(SHAPES)
                # YOLO: class index 0-based, normalised centre and size, same box
                cls, cx, cy, bw, bh = int(row[0]), *map(float, row[1:])
                assert cls == a["category_id"] - 1
                np.testing.assert_allclose([(cx - bw / 2) * 96, (cy - bh / 2) * 96, bw * 96, bh * 96], [x, y, w, h], atol=1e-3)
            total += len(boxes)
    assert total == summary["objects"]


def test_deterministic(tmp_path, small):
    root, _ = small
    again = tmp_path / "again"
    synth_dataset("shapes", again, n=12, imgsz=96, seed=0, progress=False)
    assert _files(again) == _files(root)
    other = tmp_path / "other"
    synth_dataset("shapes", other, n=12, imgsz=96, seed=1, progress=False)
    a, b = _files(root), _files(other)
    assert a["annotations/train.json"] != b["annotations/train.json"]
    assert sum(a[k] != b.get(k) for k in a if k.endswith(".png")) >= 10


def test_every_class_and_size_occurs(tmp_path):
    root = tmp_path / "many"
    synth_dataset("shapes", root, n=40, imgsz=320, seed=3, val_fraction=0.0, progress=False)
    doc = json.loads((root / "annotations" / "train.json").read_text())
    assert len(doc["images"]) == 40
    assert json.loads((root / "annotations" / "val.json").read_text())["images"] == []
    assert {a["category_id"] for a in doc["annotations"]} == set(range(1, len(SHAPES) + 1))
    areas = np.array([a["area"] for a in doc["annotations"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()


def test_segment_masks_match_boxes(tmp_path, small):
    root, _ = small
    seg = tmp_path / "seg"
    synth_dataset("shapes", seg, task="segment", n=12, imgsz=96, seed=0, progress=False)
    assert (seg / "classes.txt").read_text().split() == ["background", *SHAPES]
    assert not (seg / "annotations").exists()
    doc = json.loads((root / "annotations" / "train.json").read_text())
    for im in doc["images"]:
        # same seed: the same image as the detection run, and each visible pixel lies in a box of its class
        assert (seg / "images" / im["file_name"]).read_bytes() == (root / "images" / im["file_name"]).read_bytes()
        mask = np.asarray(Image.open(seg / "masks" / im["file_name"]))
        assert mask.dtype == np.uint8 and mask.shape == (96, 96) and mask.max() <= len(SHAPES)
        covered = np.zeros_like(mask, dtype=bool)
        for a in doc["annotations"]:
            if a["image_id"] == im["id"]:
                x, y, w, h = map(int, a["bbox"])
                covered[y:y + h, x:x + w] |= mask[y:y + h, x:x + w] == a["category_id"]
                assert (mask[y:y + h, x:x + w] == a["category_id"]).any()  # every labelled object is visible
        assert covered[mask > 0].all()


@pytest.mark.parametrize("args, needle", [
    (["cubes"], "unknown synthetic dataset 'cubes'"),
    (["shapes", "--n", "0"], "--n 0"),
    (["shapes", "--imgsz", "31"], "--imgsz 31"),
    (["shapes", "--task", "track"], "--task track"),
    (["shapes", "--val-fraction", "1.5"], "--val-fraction 1.5"),
    (["shapes", "--seed", "-1"], "--seed -1"),
])
def test_bad_input(tmp_path, monkeypatch, capsys, args, needle):
    code, _, err = run_cli(["data", "synth", *args, "--out", tmp_path / "x"], monkeypatch, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_refuses_non_empty_out_unless_force(tmp_path, monkeypatch, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["data", "synth", "shapes", "--n", "2", "--imgsz", "32", "--out", out], monkeypatch, capsys)
    assert code == 2 and "not empty" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"
    code, _, err = run_cli(["data", "synth", "shapes", "--n", "2", "--imgsz", "32", "--out", out, "--force"], monkeypatch, capsys)
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "annotations" / "train.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
