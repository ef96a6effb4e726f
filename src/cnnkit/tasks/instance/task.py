"""Instance segmentation as the engine sees it: Mask R-CNN's samples (image, boxes, labels and one
mask per object), its own losses, COCO mask and box metrics (pycocotools) of the validation
predictions, and the drawings of the report and of predict.

Batches are (list of float images [3, H, W] in [0, 1], list of targets {"boxes" xyxy, "labels",
"masks" [N, H, W] uint8}, dataset indices [B]); label k + 1 is the dataset's k-th category.

Validation outputs must be tensors of a fixed shape per image (the engine concatenates them over
batches and DDP ranks), so each detection keeps its mask as the mask head gives it, before it is
pasted into the image: [max_det, 28, 28] uint8 (probability x 255) beside its box in the image's
pixels. ``metrics`` pastes them at each image's size exactly as torchvision's postprocess does.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torchvision import tv_tensors

from cnnkit.console import warn
from cnnkit.data.detection import DetectionImage
from cnnkit.data.images import load_image_in_frame
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.coco import coco_evaluate, coco_precision, coco_rle, decode_rle as decode, encode_rle as encode  # noqa: F401
from cnnkit.tasks.detect.task import CONFUSION_CONF, DetectionSet, DetectTask

MASK_THRESHOLD = 0.5  # a pasted mask probability above this is the object (torchvision's and Detectron2's choice)


# ==================================================================== masks
def rasterise(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations (polygon lists, compressed or uncompressed RLE) -> [N, height, width] uint8 0/1."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for k, segmentation in enumerate(segmentations):
        masks[k] = mask_utils.decode(coco_rle(segmentation, height, width))
    return masks


def paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, chunk: int = 16) -> torch.Tensor:
    """Mask-head masks [N, M, M] (probabilities, or uint8 x 255) in their boxes (xyxy pixels) -> [N, H, W]
    bool, pasted as torchvision's postprocess pastes them, then thresholded. ``chunk`` masks at a time:
    torchvision pastes all of them as float images at once (100 detections on a 12-MP photo: 4.8 GB)."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    out = torch.zeros(len(masks), height, width, dtype=torch.bool)
    probabilities = masks.float() / 255.0 if masks.dtype == torch.uint8 else masks.float()
    for start in range(0, len(masks), chunk):
        part = slice(start, start + chunk)
        pasted = paste_masks_in_image(probabilities[part, None], boxes[part].float(), (height, width))[:, 0]
        out[part] = pasted.cpu() > MASK_THRESHOLD
    return out


# ==================================================================== dataset
class InstanceSet(DetectionSet):
    """(image, target, index) per DetectionImage with ``segmentations``: target {"boxes", "labels",
    "masks" [N, H, W] uint8}. The masks are rasterised at the annotation's recorded size (the frame
    of its polygons) and go through the same geometry as the image (tv_tensors.Mask; uncovered
    border = 0), so flips, rotations and crops keep them aligned. After the geometry each box is cut
    to its mask's extent: a rotation makes the box of a rotated box loose (up to 16% wider at 10
    degrees) while the mask stays exact, and a loose box target teaches loose boxes."""

    def __getitem__(self, index: int):
        item = self.images[index]
        try:
            image = load_image_in_frame(item.path, item.width, item.height)  # the polygons' frame (see DetectionSet)
        except CnnkitError as exc:
            warn(f"{exc.message} (skipped)", once_key=str(item.path))
            return None
        labelled = self.label_of is not None
        boxes = np.asarray(item.boxes, dtype=np.float32).reshape(-1, 4) if labelled else np.zeros((0, 4), np.float32)
        labels = [self.label_of[int(c)] for c in item.labels] if labelled else []
        masks = rasterise(item.segmentations, item.height, item.width) if labelled and len(boxes) else \
            np.zeros((0, image.height, image.width), np.uint8)
        if image.size != (item.width, item.height) and len(boxes):
            # the recorded size is the file's times one factor (images resized after labelling): boxes and polygons follow
            import cv2

            boxes = boxes * np.array([image.width / item.width, image.height / item.height] * 2, dtype=np.float32)
            masks = np.stack([cv2.resize(m, image.size, interpolation=cv2.INTER_NEAREST_EXACT) for m in masks])
        canvas = (image.height, image.width)
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=canvas),
                  "labels": torch.tensor(labels, dtype=torch.int64), "masks": tv_tensors.Mask(torch.from_numpy(masks))}
        image, target = self.transform(image, target)
        masks = target["masks"].as_subclass(torch.Tensor)
        boxes = tighten_to_masks(target["boxes"].as_subclass(torch.Tensor).float(), masks)
        return image.as_subclass(torch.Tensor), {"boxes": boxes, "labels": target["labels"], "masks": masks}, index


def tighten_to_masks(boxes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each xyxy box cut to the extent of its mask (pixel edges); boxes whose mask is empty, or that
    the cut would leave under a pixel wide, stay as they are."""
    if not len(boxes):
        return boxes
    inside = masks.bool()
    rows, cols = inside.any(2), inside.any(1)  # [N, H], [N, W]
    present = rows.any(1)
    height, width = masks.shape[-2:]
    first_row = torch.where(rows, torch.arange(height), height).amin(1)
    last_row = torch.where(rows, torch.arange(height), -1).amax(1) + 1
    first_col = torch.where(cols, torch.arange(width), width).amin(1)
    last_col = torch.where(cols, torch.arange(width), -1).amax(1) + 1
    extent = torch.stack([first_col, first_row, last_col, last_row], 1).float()
    cut = torch.cat([torch.maximum(boxes[:, :2], extent[:, :2]), torch.minimum(boxes[:, 2:], extent[:, 2:])], 1)
    usable = present & ((cut[:, 2:] - cut[:, :2]) >= 1).all(1)
    return torch.where(usable[:, None], cut, boxes)


# ==================================================================== inference
def detect_unpasted(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` of a torchvision Mask R-CNN in eval mode, with every mask left as the mask head
    gives it ([N, 1, M, M] probabilities of the detection's class) instead of pasted into a full-size
    image: the steps of GeneralizedRCNN.forward, and the transform's postprocess for the boxes alone
    (back in each input's pixels). Pasting is what makes masks as large as the image. A deployed Mask
    R-CNN (compress.detect_graph.DeployedDetector) already answers so."""
    if not hasattr(model, "transform"):
        return model(images)
    original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    batch, _ = model.transform(images)
    features = model.backbone(batch.tensors)
    if isinstance(features, torch.Tensor):
        features = {"0": features}
    proposals, _ = model.rpn(batch, features)
    detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
    masks = [detection.pop("masks") for detection in detections]
    detections = model.transform.postprocess(detections, batch.image_sizes, original_sizes)
    for detection, mask in zip(detections, masks):
        detection["masks"] = mask
    return detections


def pad_instances(detections: list[dict[str, torch.Tensor]], max_det: int,
                  keep: set[int] | None = None) -> dict[str, torch.Tensor]:
    """Per-image detections with un-pasted masks -> tensors the engine can concatenate: boxes [B, max_det, 4],
    scores [B, max_det], labels [B, max_det] (0 = padding), masks [B, max_det, M, M] uint8 (probability x 255)."""
    batch = len(detections)
    device = detections[0]["boxes"].device if batch else torch.device("cpu")
    side = int(detections[0]["masks"].shape[-1]) if batch else 28
    boxes = torch.zeros(batch, max_det, 4, device=device)
    scores = torch.zeros(batch, max_det, device=device)
    labels = torch.zeros(batch, max_det, dtype=torch.int64, device=device)
    masks = torch.zeros(batch, max_det, side, side, dtype=torch.uint8, device=device)
    for i, det in enumerate(detections):
        chosen = torch.ones_like(det["labels"], dtype=torch.bool)
        if keep is not None:
            chosen = torch.isin(det["labels"], torch.tensor(sorted(keep), device=device))
        order = torch.argsort(det["scores"][chosen], descending=True, stable=True)[:max_det]
        n = len(order)
        boxes[i, :n] = det["boxes"][chosen][order].float()
        scores[i, :n] = det["scores"][chosen][order].float()
        labels[i, :n] = det["labels"][chosen][order]
        masks[i, :n] = (det["masks"][chosen][order][:, 0].float() * 255).round().to(torch.uint8)
    return {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks}


# ==================================================================== the task
@dataclass
class InstanceTask(DetectTask):
    """The engine's view of instance segmentation: DetectTask's losses (Mask R-CNN adds loss_mask) and
    ids; eval outputs add the un-pasted masks and each input's size; metrics are COCO's for masks
    (mask_map, the primary one) and boxes."""

    primary_metric: str = "mask_map"

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        # box decoding in bf16 would round coordinates to a pixel or more at 300 px: infer in fp32
        with torch.autocast(batch[0][0].device.type, enabled=False):
            detections = detect_unpasted(model, batch[0])
        sizes = torch.tensor([list(image.shape[-2:]) for image in batch[0]], dtype=torch.int64, device=batch[2].device)
        return {**pad_instances(detections, self.max_det, self.keep), "size": sizes, "index": batch[2]}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return instance_metrics([self.images[i] for i in outputs["index"]], self.categories, self.coco_results(outputs))

    def coco_results(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Padded outputs -> COCO results with both "bbox" [x, y, w, h] and "segmentation" (compressed RLE
        at the image's recorded size), the dataset's image and category ids, in dataset order."""
        results = []
        for row in np.argsort(outputs["index"], kind="stable"):
            item = self.images[int(outputs["index"][row])]
            valid = outputs["labels"][row] > 0
            if not valid.any():
                continue
            boxes = torch.from_numpy(outputs["boxes"][row][valid]).float()
            height, width = (int(v) for v in outputs["size"][row])
            # boxes are in the loaded file's pixels; the ground truth is in the annotation's recorded frame
            boxes = boxes * torch.tensor([item.width / width, item.height / height] * 2)
            masks = paste(torch.from_numpy(outputs["masks"][row][valid]), boxes, item.height, item.width).numpy()
            scores, labels = outputs["scores"][row][valid], outputs["labels"][row][valid]
            for (x1, y1, x2, y2), mask, score, label in zip(boxes.tolist(), masks, scores, labels):
                category = self.label_ids[int(label) - 1]
                if category is None:
                    continue
                results.append({"image_id": item.image_id, "category_id": category,
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "score": float(score), "segmentation": encode(mask)})
        return results


def instance_metrics(images: list[DetectionImage], categories: list[tuple[int, str]],
                     results: list[dict[str, Any]]) -> dict[str, Any]:
    """COCOeval of the masks (mask_map, mask_map50, mask_map75, by size) and of the boxes (box_map, …),
    per class mask_ap, mask_ap50, box_ap, box_ap50."""
    masks = coco_evaluate(images, categories, results, iou_type="segm")
    boxes = coco_evaluate(images, categories, results, iou_type="bbox")
    metrics: dict[str, Any] = {f"mask_{k}": v for k, v in masks.items() if k != "per_class"}
    metrics.update({f"box_{k}": v for k, v in boxes.items() if k != "per_class"})
    metrics["per_class"] = {name: {"mask_ap": masks["per_class"][name]["ap"], "mask_ap50": masks["per_class"][name]["ap50"],
                                   "box_ap": boxes["per_class"][name]["ap"], "box_ap50": boxes["per_class"][name]["ap50"]}
                            for name in masks["per_class"]}
    return metrics


# ==================================================================== drawings
def instance_colours(count: int) -> list[tuple[int, int, int]]:
    """Bright colours, each far in hue from the ones before it (golden-ratio steps round the colour wheel)."""
    colours = []
    for k in range(count):
        r, g, b = colorsys.hsv_to_rgb((0.1 + k * 0.618034) % 1.0, 0.85, 1.0)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def draw_instances(pixels: np.ndarray, masks: np.ndarray, boxes: np.ndarray, captions: Sequence[str],
                   alpha: float = 0.45) -> np.ndarray:
    """HxWx3 uint8 with each instance's mask blended in its own colour, its box and its caption."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if not len(masks):
        return pixels
    colours = instance_colours(len(masks))
    image = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
    image = draw_segmentation_masks(image, torch.from_numpy(np.asarray(masks, dtype=bool)), alpha=alpha, colors=colours)
    width = max(1, round(max(pixels.shape[:2]) / 320))
    image = draw_bounding_boxes(image, torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4), labels=list(captions),
                                colors=colours, width=width)
    return image.permute(1, 2, 0).numpy()


def semantic_mask(masks: np.ndarray, labels: Sequence[int], scores: Sequence[float], height: int, width: int) -> np.ndarray:
    """Instances -> [H, W] uint8 class index (model label, 0 = background), the highest score on top."""
    out = np.zeros((height, width), dtype=np.uint8)
    for k in np.argsort(np.asarray(scores, dtype=np.float64), kind="stable"):  # lowest first: the best painted last
        out[np.asarray(masks[k], dtype=bool)] = int(labels[k])
    return out


def draw(images: list[DetectionImage], categories: list[tuple[int, str]], results: list[dict[str, Any]], plot_dir: Path,
         prefix: str = "val", samples: int = 8) -> list[Path]:
    """PR curves of the masks (COCOeval at IoU 0.5) and a grid of image pairs: the true instances, then
    the predicted ones scoring at least 0.25, each in its own colour with box and caption."""
    names = dict(categories)
    precision, recall_points = coco_precision(images, categories, results, iou_type="segm")
    curves = {}
    for k, (_, name) in enumerate(categories):
        values = precision[0, :, k] if precision is not None else np.full(len(recall_points), -1.0)
        if (values < 0).all():  # no true object of this class
            continue
        values = np.where(values < 0, 0.0, values)
        curves[name] = (recall_points, values, float(values.mean()))
    paths = [plots.plot_pr_curves(curves, plot_dir / f"{prefix}_mask_pr_curves.png", mean_label="masks at IoU 0.5: mask_map50")]
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for r in results:
        if r["score"] >= CONFUSION_CONF:
            by_image.setdefault(r["image_id"], []).append(r)
    pictures, titles = [], []
    for image in images[:samples]:
        try:
            pixels = np.asarray(load_image_in_frame(image.path, image.width, image.height))
        except CnnkitError:
            continue
        height, width = pixels.shape[:2]
        truth = rasterise(image.segmentations or [], image.height, image.width)
        if truth.shape[1:] != (height, width):  # recorded size differs from the file: the picture at the recorded size
            from PIL import Image

            pixels = np.asarray(Image.fromarray(pixels).resize((image.width, image.height)))
        found = by_image.get(image.image_id, [])
        predicted = np.stack([decode(r["segmentation"]) for r in found]) if found else np.zeros((0, image.height, image.width))
        pictures.append(draw_instances(pixels, truth, image.boxes, [names[int(c)] for c in image.labels]))
        titles.append(f"{image.path.name}: {len(truth)} true")
        pictures.append(draw_instances(pixels, predicted, np.array([_xyxy(r["bbox"]) for r in found]).reshape(-1, 4),
                                       [f"{names[r['category_id']]} {r['score']:.2f}" for r in found]))
        titles.append(f"{len(found)} found (score >= {CONFUSION_CONF})")
    paths.append(plots.plot_image_grid(pictures, titles, plot_dir / f"{prefix}_samples.png", columns=4))
    return paths


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]

