"""cnnkit's COCO metrics against pycocotools used directly on files, with the dataset's own
(non-contiguous) ids and string image ids."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from cnnkit.data.detection import DetectionImage
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.coco import coco_evaluate

CATEGORIES = [(3, "circle"), (7, "square"), (12, "star")]


def _dataset(seed: int = 0):
    rng = np.random.default_rng(seed)
    images, predictions = [], []
    for i in range(12):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(4, 90, (n, 2))  # small, medium and large objects
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.choice([3, 7, 12], n)
        images.append(DetectionImage(path=None, image_id=f"img{i:02d}" if seed else 1000 + 7 * i, width=256, height=256,
                                     boxes=boxes, labels=labels))
        for box, label in zip(boxes, labels):  # found, with jitter; sometimes wrong class; plus false positives
            if rng.random() < 0.8:
                jitter = rng.normal(0, 3, 4)
                x0, y0, x1, y1 = box + jitter
                category = int(label) if rng.random() < 0.85 else int(rng.choice([3, 7, 12]))
                predictions.append({"image_id": images[-1].image_id, "category_id": category,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(rng.uniform(0.3, 1))})
        for _ in range(int(rng.integers(0, 3))):
            x0, y0 = rng.uniform(0, 200, 2)
            predictions.append({"image_id": images[-1].image_id, "category_id": int(rng.choice([3, 7, 12])),
                                "bbox": [x0, y0, 30.0, 30.0], "score": float(rng.uniform(0, 0.6))})
    return images, predictions


def _pycocotools_on_files(tmp_path, images, predictions, category=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {image.image_id: n for n, image in enumerate(images, 1)}  # pycocotools wants integer ids
    truth = {"images": [{"id": ids[im.image_id], "width": im.width, "height": im.height} for im in images],
             "annotations": [{"id": k, "image_id": ids[im.image_id], "category_id": int(c), "iscrowd": 0,
                              "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                              "area": float((b[2] - b[0]) * (b[3] - b[1]))}
                             for k, (im, b, c) in enumerate(((im, b, c) for im in images for b, c in zip(im.boxes, im.labels)), 1)],
             "categories": [{"id": c, "name": n} for c, n in CATEGORIES]}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    (tmp_path / "dt.json").write_text(json.dumps([{**p, "image_id": ids[p["image_id"]]} for p in predictions]))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        evaluation = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        if category is not None:
            evaluation.params.catIds = [category]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


@pytest.mark.parametrize("seed", [0, 1])  # integer COCO ids, then string ids (YOLO / VOC stems)
def test_metrics_equal_pycocotools_on_files(tmp_path, seed):
    images, predictions = _dataset(seed)
    metrics = coco_evaluate(images, CATEGORIES, predictions)
    stats = _pycocotools_on_files(tmp_path, images, predictions)
    got = [metrics[k] for k in ("map", "map50", "map75", "map_small", "map_medium", "map_large")]
    assert got == pytest.approx([max(0.0, s) for s in stats[:6]], abs=1e-12)
    assert 0.2 < metrics["map50"] < 1.0 and metrics["map"] < metrics["map50"]
    for cid, name in CATEGORIES:  # per-class AP = COCOeval restricted to that class
        alone = _pycocotools_on_files(tmp_path, images, predictions, category=cid)
        assert metrics["per_class"][name]["ap"] == pytest.approx(max(0.0, alone[0]), abs=1e-12)
        assert metrics["per_class"][name]["ap50"] == pytest.approx(max(0.0, alone[1]), abs=1e-12)


def test_perfect_and_empty_predictions():
    images, _ = _dataset(0)
    perfect = [{"image_id": im.image_id, "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": 1.0}
               for im in images for b, c in zip(im.boxes, im.labels)]
    assert coco_evaluate(images, CATEGORIES, perfect)["map"] == pytest.approx(1.0)
    assert coco_evaluate(images, CATEGORIES, [])["map"] == 0.0


def test_predictions_with_unknown_ids_are_one_line_errors():
    images, predictions = _dataset(0)
    with pytest.raises(CnnkitError, match="image_id 'nope' is not in the dataset"):
        coco_evaluate(images, CATEGORIES, [{**predictions[0], "image_id": "nope"}])
    with pytest.raises(CnnkitError, match="category_id 99 is not a category"):
        coco_evaluate(images, CATEGORIES, [{**predictions[0], "category_id": 99}])
