"""`cnnkit data check` on detection layouts: the counts, size classes and findings it reports."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def _coco(root, annotations, images=2):
    from PIL import Image

    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(images):
        Image.new("RGB", (200, 100)).save(root / "images" / "train" / f"{i}.png")
    coco = {"images": [{"id": 10 + i, "file_name": f"train/{i}.png", "width": 200, "height": 100} for i in range(images)],
            "annotations": [{"id": k, "iscrowd": 0, **a} for k, a in enumerate(annotations, 1)],
            "categories": [{"id": 1, "name": "cat"}, {"id": 4, "name": "dog"}]}
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    return root


def test_counts_sizes_and_findings(tmp_path, monkeypatch, capsys):
    root = _coco(tmp_path / "coco", [
        {"image_id": 10, "category_id": 1, "bbox": [10, 10, 20, 20]},     # small
        {"image_id": 10, "category_id": 1, "bbox": [10.2, 10, 20, 20]},   # its duplicate
        {"image_id": 10, "category_id": 4, "bbox": [50, 0, 100, 90]},     # medium: 9000 px², under 96²
        {"image_id": 10, "category_id": 4, "bbox": [0, 0, 1.5, 40]},      # tiny
    ], images=3)
    code, out, err = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["layout"] == "coco" and report["classes"] == ["cat", "dog"]
    assert report["counts"]["train"] == {"cat": 2, "dog": 2}
    assert report["detection"]["boxes_by_size"]["cat"] == {"small": 2}
    assert report["detection"]["objects_per_image"]["train"] == {"min": 0, "median": 0, "max": 4}
    messages = " | ".join(f["message"] for f in report["findings"])
    assert "boxes 0 and 1 overlap at IoU" in messages
    assert "under 2 px" in messages
    assert "2 of 3 images have no objects" in messages
    code, out, _ = run_cli(["data", "check", root], monkeypatch, capsys)
    assert code == 0 and "boxes by COCO area" in out and "OK with warnings" in out


def test_a_broken_annotation_file_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    root = _coco(tmp_path / "coco", [{"image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    code, out, _ = run_cli(["data", "check", root, "--json"], monkeypatch, capsys)
    report = json.loads(out)
    assert code == 2 and report["errors"] == 1
    assert "train.json" in report["findings"][0]["message"] and "99" in report["findings"][0]["message"]
