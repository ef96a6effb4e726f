"""Detection datasets: COCO / YOLO / VOC readers, writers, round trips, `data convert`, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnkit.data.detection import detect_layout, load_detection, write_coco, write_voc, write_yolo
from cnnkit.errors import CnnkitError
from conftest import run_cli

CATEGORIES = [(3, "cat"), (7, "dog"), (1, "bird")]  # COCO ids: not 0-based, not contiguous, not sorted
# split -> [(file name, image id, (w, h), [(x, y, w, h, category id)])]
IMAGES = {
    "train": [("a.jpg", 11, (64, 48), [(4.5, 6, 20, 10.25, 3), (30, 20, 30, 25, 7)]),
              ("b.png", 12, (40, 40), [(0, 0, 40, 40, 1)]),
              ("neg.jpg", 13, (32, 32), [])],
    "val": [("c.jpg", 21, (50, 30), [(10, 5, 15, 15, 7), (1, 1, 5, 5, 1)])],
}


def _image(path: Path, size, boxes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (40, 40, 40))
    draw = ImageDraw.Draw(image)
    for x, y, w, h, _ in boxes:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=(200, 80, 30))
    image.save(path)


def make_coco(root: Path, images=IMAGES, crowd: bool = False) -> Path:
    for split, entries in images.items():
        coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in CATEGORIES]}
        for name, image_id, size, boxes in entries:
            _image(root / "images" / split / name, size, boxes)
            coco["images"].append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
            for x, y, w, h, cat in boxes:
                coco["annotations"].append({"id": 100 + len(coco["annotations"]), "image_id": image_id, "category_id": cat,
                                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        if crowd and split == "train":
            coco["annotations"].append({"id": 999, "image_id": 11, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(json.dumps(coco, indent=1))
    return root


def make_yolo(root: Path, lines: str = "0 0.5 0.5 0.5 0.5\n", names="[a, b]") -> Path:
    _image(root / "images" / "train" / "x.jpg", (40, 20), [])
    _image(root / "images" / "train" / "empty.jpg", (10, 10), [])
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "x.txt").write_text(lines)
    (root / "data.yaml").write_text(f"train: images/train\nnames: {names}\n")
    return root


def _boxes_by_file(data) -> dict:
    return {(split, Path(image.path).name): (image.boxes, image.labels.tolist(), (image.width, image.height))
            for split, images in data.splits.items() for image in images}


def test_read_coco(tmp_path):
    data = load_detection(make_coco(tmp_path / "coco", crowd=True))
    assert data.layout == "coco" and data.categories == CATEGORIES
    assert [image.image_id for image in data.splits["train"]] == [11, 12, 13]
    a, b, neg = data.splits["train"]
    np.testing.assert_allclose(a.boxes, [[4.5, 6, 24.5, 16.25], [30, 20, 60, 45]])
    assert a.labels.tolist() == [3, 7] and a.crowd == 1 and (a.width, a.height) == (64, 48)
    assert neg.boxes.shape == (0, 4) and neg.labels.shape == (0,)
    assert data.num_boxes() == 5


def test_round_trip_coco_yolo_voc_coco(tmp_path):
    coco = load_detection(make_coco(tmp_path / "coco"))
    write_yolo(coco, tmp_path / "yolo")
    yolo = load_detection(tmp_path / "yolo")
    write_voc(yolo, tmp_path / "voc")
    voc = load_detection(tmp_path / "voc")
    write_coco(voc, tmp_path / "back")
    back = load_detection(tmp_path / "back")
    assert [detect_layout(tmp_path / d) for d in ("yolo", "voc", "back")] == ["yolo", "voc", "coco"]
    expected = _boxes_by_file(coco)
    for data in (yolo, voc, back):
        assert data.categories == CATEGORIES
        found = _boxes_by_file(data)
        assert found.keys() == expected.keys()
        for key, (boxes, labels, size) in expected.items():
            assert np.allclose(found[key][0], boxes, atol=1e-3), (data.layout, key)
            assert found[key][1:] == (labels, size)
    # COCO -> COCO keeps the image ids; YOLO/VOC name images by stem
    write_coco(coco, tmp_path / "coco2")
    assert [i.image_id for i in load_detection(tmp_path / "coco2").splits["train"]] == [11, 12, 13]
    assert [i.image_id for i in voc.splits["train"]] == ["a", "b", "neg"]


def test_read_yolo_and_voc_conventions(tmp_path):
    data = load_detection(make_yolo(tmp_path / "y", names="{0: a, 1: b}"))
    assert data.categories == [(0, "a"), (1, "b")]
    x, empty = sorted(data.splits["train"], key=lambda i: i.image_id, reverse=True)
    np.testing.assert_allclose(x.boxes, [[10, 5, 30, 15]])
    assert empty.boxes.shape == (0, 4)  # no label file: a negative
    write_voc(data, tmp_path / "voc")
    xml = (tmp_path / "voc" / "Annotations" / "x.xml").read_text()
    assert "<xmin>11</xmin>" in xml and "<ymin>6</ymin>" in xml and "<xmax>30</xmax>" in xml  # VOC: 1-based inclusive
    assert (tmp_path / "voc" / "classes.txt").read_text() == "a\nb\n"
    assert not (tmp_path / "voc" / "categories.json").exists()
    np.testing.assert_allclose(load_detection(tmp_path / "voc").splits["train"][1].boxes, [[10, 5, 30, 15]])
    # no class list and no ImageSets: ids = sorted names, every annotation is training data
    (tmp_path / "voc" / "classes.txt").unlink()
    (tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").unlink()
    voc = load_detection(tmp_path / "voc")
    assert voc.categories == [(0, "a")] and sorted(i.image_id for i in voc.splits["train"]) == ["empty", "x"]


def test_cli_convert(tmp_path, monkeypatch, capsys):
    src = make_coco(tmp_path / "coco")
    code, out, err = run_cli(["data", "convert", src, "--to", "yolo", "--out", tmp_path / "yolo"], monkeypatch, capsys)
    assert code == 0, err
    assert "coco -> yolo: 4 images, 5 boxes, 3 categories" in err
    assert (tmp_path / "yolo" / "labels" / "train" / "a.txt").read_text().count("\n") == 2
    code, _, err = run_cli(["data", "convert", src, "--to", "yolo", "--out", tmp_path / "yolo"], monkeypatch, capsys)
    assert code == 2 and "not empty" in err
    args = ["data", "convert", tmp_path / "yolo" / "data.yaml", "--to", "voc", "--out", tmp_path / "voc", "--copy"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["data", "convert", src, "--to", "kitti", "--out", tmp_path / "k"], monkeypatch, capsys)
    assert code == 2 and "kitti" in err


def _coco_with(root: Path, edit) -> Path:
    make_coco(root)
    file = root / "annotations" / "train.json"
    coco = json.loads(file.read_text())
    edit(coco)
    file.write_text(json.dumps(coco, indent=1))
    return root


BAD = {
    "invalid_json": (lambda r: (make_coco(r), (r / "annotations" / "val.json").write_text('{"images": [\n  1,\n}')),
                     ["val.json:3:1", "not valid JSON"]),
    "not_coco": (lambda r: (make_coco(r), (r / "annotations" / "val.json").write_text("[1, 2]")), ["val.json", "not a COCO"]),
    "unknown_category": (lambda r: _coco_with(r, lambda c: c["annotations"][0].update(category_id=5)),
                         ["train.json", "annotation id 100", "category_id 5"]),
    "negative_width": (lambda r: _coco_with(r, lambda c: c["annotations"][1].update(bbox=[30, 20, -3, 4])),
                       ["train.json", "annotation id 101", "negative"]),
    "missing_image": (lambda r: _coco_with(r, lambda c: c["images"][1].update(file_name="gone.png")), ["train.json", "gone.png"]),
    "no_boxes": (lambda r: make_coco(r, {"train": [("n.jpg", 1, (8, 8), [])]}), ["without a single box"]),
    "yolo_fields": (lambda r: make_yolo(r, "0 0.5 0.5 0.5\n"), ["x.txt:1", "5 fields"]),
    "yolo_numbers": (lambda r: make_yolo(r, "0 0.5 0.5 0.5 0.5\n1 a b c d\n"), ["x.txt:2", "not numbers"]),
    "yolo_nan": (lambda r: make_yolo(r, "0 nan 0.5 0.5 0.5\n"), ["x.txt:1", "not finite"]),
    "yolo_class_float": (lambda r: make_yolo(r, "1.5 0.5 0.5 0.5 0.5\n"), ["x.txt:1", "class 1.5"]),
    "yolo_class": (lambda r: make_yolo(r, "2 0.5 0.5 0.5 0.5\n"), ["x.txt:1", "class 2"]),
    "voc_xml": (lambda r: ((r / "Annotations").mkdir(parents=True),
                           (r / "Annotations" / "x.xml").write_text("<annotation>\n<size>")),
                ["x.xml:2", "not valid XML"]),
    "not_dataset": (lambda r: r.mkdir(), ["not a detection dataset"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, case):
    build, needles = BAD[case]
    root = tmp_path / "data"
    build(root)
    with pytest.raises(CnnkitError):
        load_detection(root)
    code, _, err = run_cli(["data", "convert", root, "--to", "coco", "--out", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def test_box_outside_image_clipped_or_strict(tmp_path, capsys):
    root = make_yolo(tmp_path / "y", "0 0.9 0.5 0.4 0.5\n1 1.5 0.5 0.2 0.2\n")  # one over the right edge, one wholly outside
    data = load_detection(root)
    x = next(i for i in data.splits["train"] if i.image_id == "x")
    np.testing.assert_allclose(x.boxes, [[28, 5, 40, 15]])
    assert x.labels.tolist() == [0]
    assert "clipped" in capsys.readouterr().err
    with pytest.raises(CnnkitError, match=r"x.txt:1: box outside the 40x20 image"):
        load_detection(root, strict=True)


def test_match_categories_by_name_with_the_models_verb(tmp_path):
    from cnnkit.data.detection import DetectionData, match_categories

    data = DetectionData(tmp_path, "coco", CATEGORIES, {"val": []})
    known, label_ids = match_categories(data, ["dog", "cat", "fish"])
    assert known == [(3, "cat"), (7, "dog")] and label_ids == [7, 3, None]  # bird: unknown to the model, left out
    known, label_ids = match_categories(data, ["dog", "cat", "fish"], "detects", classes="cat")
    assert known == [(3, "cat")] and label_ids == [None, 3, None]
    with pytest.raises(CnnkitError) as error:
        match_categories(data, ["fish"], "segments")
    assert "\n" not in error.value.message and "none of its classes (cat, dog, bird)" in error.value.message
    assert error.value.hint == "the model segments fish"
