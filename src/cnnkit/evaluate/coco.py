"""COCO detection and instance-segmentation metrics, computed by pycocotools' COCOeval (the reference implementation).

    metrics = coco_evaluate(images, categories, predictions)
    # images: DetectionImage list (cnnkit.data.detection); categories: [(id, name)]
    # predictions: COCO results format with the dataset's own ids:
    #   [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]
    metrics["map"], metrics["map50"], metrics["map75"], metrics["map_small"], metrics["per_class"]["cat"]["ap"]
    masks = coco_evaluate(images, categories, predictions, iou_type="segm")
    # predictions: [{"image_id", "category_id", "segmentation": RLE {"size": [h, w], "counts"}, "score"}];
    # ground truth: the images' ``segmentations`` (polygons or RLE, as the dataset has them)

Image ids of any kind (COCO's integers, or the file stems YOLO and VOC images are known by) are
mapped to 1..N for pycocotools and back, so predictions.json keeps the dataset's own ids.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from cnnkit.errors import CnnkitError

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


def coco_ground_truth(images: Sequence[Any], categories: Sequence[tuple[int, str]], iou_type: str = "bbox") -> dict[str, Any]:
    """A COCO ground-truth dict (ids 1..N for the images, the dataset's ids for categories); for "segm"
    each object carries its segmentation and its area is the mask's (COCO's small/medium/large)."""
    annotations = []
    for number, image in enumerate(images, 1):
        boxes = np.asarray(image.boxes, dtype=np.float64).reshape(-1, 4)
        segmentations = getattr(image, "segmentations", None) if iou_type == "segm" else None
        if iou_type == "segm" and len(boxes) and (segmentations is None or len(segmentations) != len(boxes) or
                                                  any(s is None for s in segmentations)):
            raise CnnkitError(f"{image.path}: objects without a segmentation cannot be scored as masks",
                              "every object needs COCO polygons or RLE")
        for k, (box, label) in enumerate(zip(boxes, np.asarray(image.labels))):
            width, height = float(box[2] - box[0]), float(box[3] - box[1])
            annotation = {"id": len(annotations) + 1, "image_id": number, "category_id": int(label),
                          "bbox": [float(box[0]), float(box[1]), width, height], "area": width * height, "iscrowd": 0}
            if segmentations is not None:
                annotation["segmentation"] = segmentations[k]
                annotation["area"] = _mask_area(segmentations[k], int(image.height), int(image.width))
            annotations.append(annotation)
        # crowd regions and VOC difficult objects: iscrowd 1 is COCOeval's ignore flag (a detection matched
        # to one is neither true nor false; COCOeval overwrites any other 'ignore' key with iscrowd)
        for obj in getattr(image, "ignored", None) or []:
            x1, y1, x2, y2 = (float(v) for v in obj.box)
            annotation = {"id": len(annotations) + 1, "image_id": number, "category_id": int(obj.label),
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 1}
            if iou_type == "segm":  # a region without a segmentation is ignored over its box
                annotation["segmentation"] = obj.segmentation or [[x1, y1, x2, y1, x2, y2, x1, y2]]
                annotation["area"] = _mask_area(annotation["segmentation"], int(image.height), int(image.width))
            annotations.append(annotation)
    return {"images": [{"id": number, "width": int(image.width), "height": int(image.height)} for number, image in enumerate(images, 1)],
            "annotations": annotations, "categories": [{"id": int(cid), "name": str(name)} for cid, name in categories]}


def coco_evaluate(images: Sequence[Any], categories: Sequence[tuple[int, str]], predictions: Sequence[dict[str, Any]],
                  iou_type: str = "bbox") -> dict[str, Any]:
    """map (AP@[.5:.95]), map50, map75, map_small/medium/large and per_class AP, all from COCOeval;
    ``iou_type`` "bbox" scores the predictions' boxes, "segm" their masks (RLE ``segmentation``)."""
    numbers = {image.image_id: number for number, image in enumerate(images, 1)}
    known = {int(cid) for cid, _ in categories}
    results = []
    for i, prediction in enumerate(predictions):
        if prediction["image_id"] not in numbers:
            raise CnnkitError(f"prediction {i}: image_id {prediction['image_id']!r} is not in the dataset")
        if int(prediction["category_id"]) not in known:
            raise CnnkitError(f"prediction {i}: category_id {prediction['category_id']} is not a category of the dataset")
        results.append(_scored_as(iou_type, {**prediction, "image_id": numbers[prediction["image_id"]]}))
    empty = {name: 0.0 for name in STAT_NAMES}
    names = dict(categories)
    evaluation = _cocoeval(images, categories, results, iou_type)
    if evaluation is None:
        return {**empty, "per_class": {names[c]: {"ap": 0.0, "ap50": 0.0} for c in sorted(known)}}
    metrics: dict[str, Any] = {name: max(0.0, float(value)) for name, value in zip(STAT_NAMES, evaluation.stats[:6])}
    # precision [iou thresholds, recall points, categories, area ranges, max detections]; area "all", 100 detections
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cid in enumerate(evaluation.params.catIds):
        at_all = precision[:, :, k]
        at_50 = precision[0, :, k]
        per_class[names[cid]] = {"ap": _mean_valid(at_all), "ap50": _mean_valid(at_50)}
    metrics["per_class"] = per_class
    return metrics


def coco_precision(images: Sequence[Any], categories: Sequence[tuple[int, str]],
                   predictions: Sequence[dict[str, Any]], iou_type: str = "bbox") -> tuple[np.ndarray | None, np.ndarray]:
    """COCOeval's interpolated precision [IoU thresholds, 101 recall points, categories in
    ``categories`` order] (area all, 100 detections; -1 where a class has no true box), and the
    recall points; precision is None when there is no prediction."""
    numbers = {image.image_id: number for number, image in enumerate(images, 1)}
    results = [_scored_as(iou_type, {**p, "image_id": numbers[p["image_id"]]}) for p in predictions if p["image_id"] in numbers]
    evaluation = _cocoeval(images, categories, results, iou_type)
    recall_points = np.linspace(0.0, 1.0, 101)
    if evaluation is None:
        return None, recall_points
    order = [evaluation.params.catIds.index(int(cid)) for cid, _ in categories]
    return evaluation.eval["precision"][:, :, order, 0, -1], np.asarray(evaluation.params.recThrs)


def _scored_as(iou_type: str, result: dict[str, Any]) -> dict[str, Any]:
    """A result as COCO.loadRes reads it for ``iou_type``: it takes a result with a "bbox" as a box (area =
    the box's, its polygon = the box), so a mask result goes without its box (area and box then come
    from the mask), and a box result without its mask."""
    drop = "bbox" if iou_type == "segm" else "segmentation"
    return {k: v for k, v in result.items() if k != drop}


def coco_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """Any COCO segmentation (polygons of one object, compressed or uncompressed RLE) as compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons of one object: the union of their areas
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """[H, W] 0/1 -> COCO compressed RLE {"size": [H, W], "counts": str} (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))  # pycocotools reads column-major uint8
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE -> [H, W] uint8 0/1."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode(coco_rle(rle, *rle["size"]))


def _mask_area(segmentation: Any, height: int, width: int) -> float:
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(coco_rle(segmentation, height, width)))


def _cocoeval(images: Sequence[Any], categories: Sequence[tuple[int, str]], results: list[dict[str, Any]],
              iou_type: str = "bbox"):
    """COCOeval run on ``results`` (image ids already numbered 1..N), or None without results."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        truth = COCO()
        truth.dataset = coco_ground_truth(images, categories, iou_type)
        truth.createIndex()
        detections = truth.loadRes(results)
        evaluation = COCOeval(truth, detections, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval marks "no ground truth of this class" with -1: such a class scores 0, not -1."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0
