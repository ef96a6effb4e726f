"""Datasets as other tools export them (issue 19, part 6): CVAT's and COCO's own instances_*.json, Roboflow's COCO
and YOLO exports, Label Studio's file names, Ultralytics' segmentation rows, Pascal VOC's difficult objects and
COCO's crowd regions through `data convert`. Each is built here, small, in the layout the tool writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.detection import detect_layout, load_detection
from cnnkit.errors import CnnkitError
from conftest import run_cli


def _jpg(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 60, 30)).save(path)
    return path


def _coco(images: list[tuple[int, str]], boxes: list[tuple[int, int, list, int]], categories=((1, "car"), (2, "person")),
          size=(40, 30), **extra) -> dict:
    """A COCO dict: images (id, file_name), annotations (id, image_id, bbox, category_id), as tools write them."""
    return {"info": {"description": "export"}, "licenses": [],
            "images": [{"id": i, "file_name": name, "width": size[0], "height": size[1]} for i, name in images],
            "annotations": [{"id": k, "image_id": image, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3],
                             "iscrowd": 0, "segmentation": [], **extra} for k, image, bbox, cat in boxes],
            "categories": [{"id": i, "name": n, "supercategory": ""} for i, n in categories]}


def _write(path: Path, coco: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


# ------------------------------------------------------------------------------------------------ COCO layouts

def _cvat(root: Path, polygons: bool = False) -> Path:
    """CVAT's "COCO 1.0" export: annotations/instances_default.json + images/NAME (one subset, 'default')."""
    names = [f"frame_{i:06d}.jpg" for i in range(4)]
    for name in names:
        _jpg(root / "images" / name)
    boxes = [(k + 1, k + 1, [2.0 + k, 3.0, 10.0, 8.0], 1 + k % 2) for k in range(4)]
    coco = _coco(list(enumerate(names, 1)), boxes)
    if polygons:
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    _write(root / "annotations" / "instances_default.json", coco)
    return root


def test_cvat_coco_export_is_coco_with_val_cut_from_train(tmp_path, monkeypatch, capsys):
    from cnnkit.tasks.detect.api import load_split_data

    root = _cvat(tmp_path / "cvat")
    assert detect_layout(root) == "coco"  # was None: read as an ImageFolder with classes 'annotations', 'images'
    data = load_detection(root)
    assert list(data.splits) == ["train"] and data.classes == ["car", "person"]
    first = data.splits["train"][0]
    assert first.path == root / "images" / "frame_000000.jpg" and first.labels.tolist() == [1]
    np.testing.assert_allclose(first.boxes, [[2, 3, 12, 11]])
    assert data.sources["train"] == root / "annotations" / "instances_default.json"
    split = load_split_data(str(root), False, 0.25, 0)
    assert len(split.splits["train"]) == 3 and len(split.splits["val"]) == 1
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 0, err
    assert report["layout"] == "coco" and report["counts"]["train"] == {"car": 2, "person": 2}
    code, _, err = run_cli(["data", "convert", root, "--to", "yolo", "--out", tmp_path / "yolo"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "yolo" / "labels" / "train" / "frame_000000.txt").read_text().startswith("0 ")
    from cnnkit.data.imagefolder import load_imagefolder

    with pytest.raises(CnnkitError, match="a COCO detection dataset, not class folders"):  # classification says what it is
        load_imagefolder(root)


def test_cvat_polygons_train_instance_segmentation(tmp_path):
    from cnnkit.tasks.instance.api import load_instance_data

    data = load_instance_data(str(_cvat(tmp_path / "cvat", polygons=True)), 0.25, 0)
    assert {split: len(images) for split, images in data.splits.items()} == {"train": 3, "val": 1}
    image = next(im for im in data.splits["train"] + data.splits["val"] if im.image_id == 1)
    assert image.segmentations == [[[2.0, 3.0, 12.0, 3.0, 12.0, 11.0, 2.0, 11.0]]]


def test_coco_2017_naming_keypoints_and_captions_left_out(tmp_path):
    """COCO's own layout: annotations/instances_{train,val}2017.json beside person_keypoints_* and captions_*,
    images in train2017/ and val2017/ at the root."""
    root = tmp_path / "coco"
    _jpg(root / "train2017" / "000000000009.jpg")
    _jpg(root / "val2017" / "000000000139.jpg")
    _write(root / "annotations" / "instances_train2017.json", _coco([(9, "000000000009.jpg")], [(1, 9, [1, 1, 5, 5], 2)]))
    _write(root / "annotations" / "instances_val2017.json", _coco([(139, "000000000139.jpg")], [(2, 139, [3, 3, 6, 6], 1)]))
    _write(root / "annotations" / "person_keypoints_train2017.json", _coco([(9, "missing.jpg")], []))
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps({"images": [], "annotations": []}))
    data = load_detection(root)
    assert list(data.splits) == ["train", "val"]
    assert data.splits["train"][0].path == root / "train2017" / "000000000009.jpg"
    assert data.splits["val"][0].labels.tolist() == [1]


def test_roboflow_coco_export_drops_its_group_category(tmp_path, monkeypatch, capsys):
    """Roboflow: train/ valid/ test/ each with _annotations.coco.json beside the images; category 0 is the
    project, the supercategory of the real classes, with no annotation."""
    root = tmp_path / "roboflow"
    categories = [(0, "vehicles"), (1, "car"), (2, "truck")]
    for k, folder in enumerate(("train", "valid", "test")):
        _jpg(root / folder / f"img{k}_jpg.rf.abc{k}.jpg")
        coco = _coco([(0, f"img{k}_jpg.rf.abc{k}.jpg")], [(0, 0, [4, 4, 10, 10], 1 + k % 2)], categories)
        for cat in coco["categories"]:
            cat["supercategory"] = "none" if cat["id"] == 0 else "vehicles"
        _write(root / folder / "_annotations.coco.json", coco)
    (root / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    data = load_detection(root)
    assert list(data.splits) == ["train", "val", "test"]
    assert data.categories == [(1, "car"), (2, "truck")]
    assert data.splits["val"][0].labels.tolist() == [2]
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["classes"] == ["car", "truck"]


def test_label_studio_file_names_resolve_against_images_and_root(tmp_path, monkeypatch, capsys):
    """Label Studio: result.json + images/; file_name 'images/NAME' relative to the export root, written
    with backslashes on Windows, or a server path (1.16's '..\\..\\label-studio\\media\\upload\\4\\NAME')."""
    root = tmp_path / "label-studio"
    for name in ("a1b2-cat.jpg", "c3d4-dog.jpg", "e5f6-bird.jpg"):
        _jpg(root / "images" / name)
    names = ["images/a1b2-cat.jpg", "images\\c3d4-dog.jpg", "..\\..\\label-studio\\media\\upload\\4\\e5f6-bird.jpg"]
    coco = _coco(list(enumerate(names)), [(k, k, [1, 2, 8, 9], 1) for k in range(3)])
    coco = {"images": coco["images"], "categories": coco["categories"], "annotations": coco["annotations"],
            "info": {"year": 2024, "contributor": "Label Studio"}}  # Label Studio's key order
    _write(root / "result.json", coco)
    data = load_detection(root)
    assert [image.path.name for image in data.splits["train"]] == ["a1b2-cat.jpg", "c3d4-dog.jpg", "e5f6-bird.jpg"]
    code, _, err = run_cli(["data", "check", root], monkeypatch, capsys)
    assert code == 0, err
    coco["images"][1]["file_name"] = "images/gone.jpg"
    _write(root / "result.json", coco)
    with pytest.raises(CnnkitError, match="file_name 'images/gone.jpg' not found"):
        load_detection(root)
    code, out, _ = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    assert code == 2 and "images/gone.jpg" in json.loads(out)["findings"][0]["message"]


def test_unnamed_coco_files_are_refused_in_one_line(tmp_path):
    root = tmp_path / "two"
    _jpg(root / "images" / "a.jpg")
    for name in ("export_a.json", "export_b.json"):
        _write(root / "annotations" / name, _coco([(1, "a.jpg")], [(1, 1, [1, 1, 4, 4], 1)]))
    with pytest.raises(CnnkitError, match="cannot tell which split"):
        load_detection(root)


# ------------------------------------------------------------------------------------------------ YOLO layouts

def _yolo_split(root: Path, folder: str, rows: dict[str, str]) -> None:
    for stem, text in rows.items():
        _jpg(root / folder / "images" / f"{stem}.jpg", (50, 40))
        (root / folder / "labels").mkdir(parents=True, exist_ok=True)
        (root / folder / "labels" / f"{stem}.txt").write_text(text)


def _roboflow_yolo(root: Path) -> Path:
    """Roboflow's YOLOv8 export: data.yaml at the root saying '../train/images', train/ valid/ test/ with images/ + labels/."""
    _yolo_split(root, "train", {"a": "0 0.5 0.5 0.2 0.5\n", "b": "1 0.25 0.25 0.1 0.1\n"})
    _yolo_split(root, "valid", {"c": "1 0.5 0.5 0.4 0.4\n"})
    _yolo_split(root, "test", {"d": "0 0.5 0.5 0.2 0.2\n"})
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\n"
                                    "names: ['helmet', 'head']\n\nroboflow:\n  workspace: demo\n  project: hats\n"
                                    "  version: 3\n  license: CC BY 4.0\n  url: https://universe.roboflow.com/demo/hats/3\n")
    return root


def test_roboflow_data_yaml_resolves_like_ultralytics(tmp_path, monkeypatch, capsys):
    root = _roboflow_yolo(tmp_path / "hats")
    data = load_detection(root)
    assert {split: [im.path.stem for im in images] for split, images in data.splits.items()} == \
        {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    np.testing.assert_allclose(data.splits["train"][0].boxes, [[20, 10, 30, 30]])
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["counts"] == {"train": {"helmet": 1, "head": 1}, "val": {"helmet": 0, "head": 1},
                                         "test": {"helmet": 1, "head": 0}}


def test_data_yaml_path_key_lists_and_parent_relative_paths(tmp_path):
    root = _roboflow_yolo(tmp_path / "hats")
    # 'path:' names the dataset root; split entries may be lists
    (tmp_path / "elsewhere.yaml").write_text("path: hats\ntrain: [train/images, test/images]\nval: valid/images\n"
                                              "names: {0: helmet, 1: head}\n")
    data = load_detection(tmp_path / "elsewhere.yaml")
    assert [im.path.stem for im in data.splits["train"]] == ["a", "b", "d"]
    # a data.yaml in a subfolder whose '../train/images' does exist: taken as written
    (root / "configs").mkdir()
    (root / "configs" / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [helmet, head]\n")
    assert [im.path.stem for im in load_detection(root / "configs").splits["val"]] == ["c"]


def test_yolo_segmentation_rows_give_boxes_and_polygons(tmp_path, monkeypatch, capsys):
    from cnnkit.tasks.instance.api import load_instance_data

    root = tmp_path / "seg"
    # a triangle and a quadrilateral (normalised polygons) in a 50x40 image, and one plain box row
    _yolo_split(root, "train", {"a": "0 0.1 0.1 0.5 0.1 0.3 0.6\n1 0.6 0.5 0.9 0.5 0.9 0.9 0.6 0.9\n",
                                "b": "1 0.2 0.2 0.8 0.2 0.5 0.7\n"})
    _yolo_split(root, "valid", {"c": "0 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n"})
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [leaf, stem]\n")
    data = load_detection(root)
    a = data.splits["train"][0]
    np.testing.assert_allclose(a.boxes, [[5, 4, 25, 24], [30, 20, 45, 36]])
    assert a.labels.tolist() == [0, 1]
    np.testing.assert_allclose(a.segmentations[0][0], [5, 4, 25, 4, 15, 24])
    code, _, err = run_cli(["data", "check", root], monkeypatch, capsys)
    assert code == 0, err
    instances = load_instance_data(str(root), 0.2, 0)
    assert all(len(image.segmentations) == len(image.boxes) for images in instances.splits.values() for image in images)
    # YOLO-seg -> COCO keeps the polygons; -> YOLO writes the polygon rows back
    code, _, err = run_cli(["data", "convert", root, "--to", "coco", "--out", tmp_path / "coco"], monkeypatch, capsys)
    assert code == 0, err
    coco = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())
    assert coco["annotations"][0]["segmentation"] == [[5.0, 4.0, 25.0, 4.0, 15.0, 24.0]]
    code, _, err = run_cli(["data", "convert", root, "--to", "yolo", "--out", tmp_path / "yolo"], monkeypatch, capsys)
    assert code == 0, err
    again = load_detection(tmp_path / "yolo")
    np.testing.assert_allclose(again.splits["train"][0].segmentations[1][0], a.segmentations[1][0], atol=1e-3)
    # semantic masks: the polygons painted with class k + 1 (0 = background)
    code, _, err = run_cli(["data", "convert", root, "--to", "masks", "--out", tmp_path / "masks"], monkeypatch, capsys)
    assert code == 0 and "yolo -> masks" in err, err
    mask = np.asarray(Image.open(tmp_path / "masks" / "masks" / "train" / "a.png"))
    assert (mask[10, 15], mask[28, 37], mask[2, 2], mask[20, 5]) == (1, 2, 0, 0)
    assert (tmp_path / "masks" / "classes.txt").read_text().split() == ["background", "leaf", "stem"]
    # a row that is neither a box nor a polygon is still refused, naming the line
    (root / "train" / "labels" / "b.txt").write_text("1 0.2 0.2 0.8 0.2 0.5\n")
    with pytest.raises(CnnkitError, match=r"b\.txt:1: expected 5 fields .* got 6"):
        load_detection(root)


def test_pose_rows_read_as_their_boxes(tmp_path):
    root = tmp_path / "pose"
    _yolo_split(root, "train", {"p": "0 0.5 0.5 0.4 0.5 0.4 0.4 2 0.6 0.4 2\n"})
    (root / "data.yaml").write_text("train: train/images\nkpt_shape: [2, 3]\nnames: [person]\n")
    np.testing.assert_allclose(load_detection(root).splits["train"][0].boxes, [[15, 10, 35, 30]])


# ------------------------------------------------------------------------------------------------ ignored objects

def _voc(root: Path) -> Path:
    """Pascal VOC: one image with an ordinary car and a difficult one (1-based pixel corners)."""
    _jpg(root / "JPEGImages" / "000005.jpg", (60, 40))
    (root / "Annotations").mkdir(parents=True)
    objects = "".join(f"<object><name>car</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                      f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                      for d, (x1, y1, x2, y2) in ((0, (1, 1, 20, 20)), (1, (31, 11, 50, 30))))
    (root / "Annotations" / "000005.xml").write_text(
        f"<annotation><folder>VOC2007</folder><filename>000005.jpg</filename><size><width>60</width><height>40</height>"
        f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000005\n")
    return root


def test_voc_difficult_objects_are_ignored_in_training_and_scoring(tmp_path, monkeypatch, capsys):
    from cnnkit.evaluate.coco import coco_evaluate

    data = load_detection(_voc(tmp_path / "voc"))
    image = data.splits["train"][0]
    np.testing.assert_allclose(image.boxes, [[0, 0, 20, 20]])  # only the ordinary car is trained on
    assert [(obj.box, obj.label, obj.kind) for obj in image.ignored] == [((30.0, 10.0, 50.0, 30.0), 0, "difficult")]

    def score(*boxes):
        predictions = [{"image_id": image.image_id, "category_id": 0, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
                       for (x1, y1, x2, y2), s in boxes]
        return coco_evaluate([image], data.categories, predictions)["map"]

    # missing the difficult car costs nothing, and finding it (even above the easy one) is no false positive
    assert score(((0, 0, 20, 20), 0.9)) == pytest.approx(1.0)
    assert score(((30, 10, 50, 30), 0.95), ((0, 0, 20, 20), 0.9)) == pytest.approx(1.0)
    code, out, err = run_cli(["data", "check", tmp_path / "voc", "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 0, err
    assert report["counts"]["train"] == {"car": 1} and report["detection"]["ignored"] == {"train": {"difficult": 1}}
    code, out, _ = run_cli(["data", "check", tmp_path / "voc"], monkeypatch, capsys)
    assert code == 0 and "ignored objects" in out and "1 difficult" in out
    # VOC -> VOC keeps the flag; -> COCO makes it iscrowd 1; -> YOLO drops it with a count
    code, _, err = run_cli(["data", "convert", tmp_path / "voc", "--to", "voc", "--out", tmp_path / "voc2"], monkeypatch, capsys)
    assert code == 0 and "<difficult>1</difficult>" in (tmp_path / "voc2" / "Annotations" / "000005.xml").read_text()
    assert len(load_detection(tmp_path / "voc2").splits["train"][0].ignored) == 1
    code, _, err = run_cli(["data", "convert", tmp_path / "voc", "--to", "coco", "--out", tmp_path / "coco"], monkeypatch, capsys)
    assert code == 0, err
    anns = json.loads((tmp_path / "coco" / "annotations" / "train.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in anns] == [0, 1] and anns[1]["bbox"] == [30, 10, 20, 20]
    code, _, err = run_cli(["data", "convert", tmp_path / "voc", "--to", "yolo", "--out", tmp_path / "yolo"], monkeypatch, capsys)
    assert code == 0 and "1 difficult objects dropped: YOLO has no crowd or difficult flag" in err


def _coco_with_crowd(root: Path) -> Path:
    _jpg(root / "images" / "train" / "a.jpg", (30, 20))
    counts = [0, 60, 540]  # uncompressed RLE, column-major: the first 3 columns
    coco = _coco([(1, "a.jpg")], [(1, 1, [10, 5, 8, 6], 2)], size=(30, 20))
    coco["annotations"].append({"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 3, 20], "area": 60, "iscrowd": 1,
                                "segmentation": {"size": [20, 30], "counts": counts}})
    _write(root / "annotations" / "train.json", coco)
    return root


def test_convert_keeps_crowd_regions_where_the_format_can(tmp_path, monkeypatch, capsys):
    root = _coco_with_crowd(tmp_path / "coco")
    image = load_detection(root).splits["train"][0]
    assert image.labels.tolist() == [2] and image.crowd == 1 and image.ignored[0].kind == "crowd"
    code, _, err = run_cli(["data", "convert", root, "--to", "coco", "--out", tmp_path / "coco2"], monkeypatch, capsys)
    assert code == 0 and "dropped" not in err
    written = json.loads((tmp_path / "coco2" / "annotations" / "train.json").read_text())["annotations"]
    crowd = [a for a in written if a["iscrowd"]]
    assert crowd == [{"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 3, 20], "area": 60, "iscrowd": 1,
                      "segmentation": {"size": [20, 30], "counts": [0, 60, 540]}}]
    for target, name in (("yolo", "YOLO"), ("voc", "Pascal VOC")):
        code, _, err = run_cli(["data", "convert", root, "--to", target, "--out", tmp_path / target], monkeypatch, capsys)
        assert code == 0 and f"1 crowd regions (iscrowd 1) dropped: {name}" in err, err
