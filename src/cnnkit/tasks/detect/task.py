"""Object detection as the engine sees it: a dataset of (image, target) pairs, the detector's own
losses, COCO evaluation (pycocotools) of the validation predictions, and the drawings of the report.

Batches are (list of float images [3, H, W] in [0, 1], list of targets {"boxes" xyxy, "labels"},
dataset indices [B]); label k + 1 is the dataset's k-th category (0 is the background).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cnnkit.console import warn
from cnnkit.data.detection import DetectionImage
from cnnkit.data.images import load_image_in_frame
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.coco import coco_evaluate

CONFUSION_IOU = 0.5     # a prediction matches a true box at this IoU (confusion matrix)
CONFUSION_CONF = 0.25   # predictions below this score are left out of the confusion matrix and samples


class DetectionSet(Dataset):
    """(image, target, index) per DetectionImage; None for an image that cannot be decoded (one bad
    file costs one sample). ``label_of`` maps the dataset's category ids to model labels 1..C; None
    leaves the targets empty (inference only). ``intensity``: the model's IntensitySpec for images deeper than
    8 bits and DICOM (None: auto; see data/intensity.py)."""

    def __init__(self, images: Sequence[DetectionImage], label_of: dict[int, int] | None, transform: Callable,
                 intensity: Any = None):
        self.images = list(images)
        self.label_of = label_of
        self.transform = transform
        self.intensity = intensity

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        item = self.images[index]
        try:
            # any mode -> 8-bit RGB, turned into the frame the boxes were drawn in (EXIF orientation; a recorded
            # size that fits neither the stored nor the shown picture is an error, never a per-axis stretch)
            image = load_image_in_frame(item.path, item.width, item.height, self.intensity)
        except CnnkitError as exc:
            warn(f"{exc.message} (skipped)", once_key=str(item.path))
            return None
        boxes = np.asarray(item.boxes, dtype=np.float32).reshape(-1, 4) if self.label_of is not None else np.zeros((0, 4), np.float32)
        labels = [self.label_of[int(c)] for c in item.labels] if self.label_of is not None else []
        if image.size != (item.width, item.height) and len(boxes):
            # the recorded size is the file's times one factor (images resized after labelling): boxes follow
            boxes = boxes * np.array([image.width / item.width, image.height / item.height] * 2, dtype=np.float32)
        target = {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(image.height, image.width)),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        image, target = self.transform(image, target)
        return (image.as_subclass(torch.Tensor),
                {"boxes": target["boxes"].as_subclass(torch.Tensor).float(), "labels": target["labels"]}, index)


class MosaicSet(Dataset):
    """Mosaic (as YOLOv4 introduced it) over an augmented training set: with probability ``probability``
    a sample is four samples (already resized so their longer side is ``imgsz``) tiled around a random
    centre of a 2·imgsz canvas, from which an imgsz x imgsz window holding part of all four is cut.
    Boxes move with their image; a box cut to under a quarter of its area, or under 2 px a side, is
    dropped. One image then shows objects from four scenes at many positions, and the model sees
    partial objects and busier scenes. Mosaic stops for the last ``close_epochs`` epochs, so that
    training ends on whole, undistorted images like those it will be asked about."""

    def __init__(self, base: Dataset, imgsz: int, probability: float, epochs: int, close_epochs: int):
        self.base, self.imgsz, self.probability = base, imgsz, probability
        self.last_mosaic_epoch = epochs - close_epochs - 1
        self.active = probability > 0
        # (k) -> k other sample indices to tile with; a stream of shards (data/shards.py) offers those it holds
        self.choose_partners: Callable[[int], list[int]] = self.random_partners

    def random_partners(self, k: int) -> list[int]:
        return torch.randint(len(self.base), (k,)).tolist()

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.active = self.probability > 0 and epoch <= self.last_mosaic_epoch

    def __getitem__(self, index: int):
        if not self.active or torch.rand(()) >= self.probability:
            return self.base[index]
        samples = [self.base[i] for i in [index] + self.choose_partners(3)]
        if any(sample is None for sample in samples):
            return self.base[index]
        image, target = mosaic([(s[0], s[1]) for s in samples], self.imgsz)
        return image, target, index


def mosaic(samples: list[tuple[torch.Tensor, dict[str, torch.Tensor]]], imgsz: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Four (float image [3, H, W], {"boxes", "labels"}) -> one imgsz x imgsz sample (see MosaicSet)."""
    side = 2 * imgsz
    canvas = torch.full((3, side, side), 114 / 255, dtype=samples[0][0].dtype)
    cx, cy = (int(v) for v in torch.randint(imgsz // 2, side - imgsz // 2 + 1, (2,)))
    boxes, labels = [], []
    for corner, (image, target) in enumerate(samples):
        h, w = image.shape[-2:]
        # corner 0: the image's bottom-right at the centre; 1: bottom-left; 2: top-right; 3: top-left
        x1, x2 = (max(cx - w, 0), cx) if corner in (0, 2) else (cx, min(cx + w, side))
        y1, y2 = (max(cy - h, 0), cy) if corner in (0, 1) else (cy, min(cy + h, side))
        src_x = w - (x2 - x1) if corner in (0, 2) else 0
        src_y = h - (y2 - y1) if corner in (0, 1) else 0
        canvas[:, y1:y2, x1:x2] = image[:, src_y:src_y + (y2 - y1), src_x:src_x + (x2 - x1)]
        boxes.append(target["boxes"].reshape(-1, 4) + torch.tensor([x1 - src_x, y1 - src_y] * 2, dtype=torch.float32))
        labels.append(target["labels"])
    # a window that holds part of every quadrant: its corner within imgsz/4 .. 3·imgsz/4 of the centre
    x0 = int(min(max(cx - imgsz * 3 // 4 + int(torch.randint(imgsz // 2 + 1, ())), 0), side - imgsz))
    y0 = int(min(max(cy - imgsz * 3 // 4 + int(torch.randint(imgsz // 2 + 1, ())), 0), side - imgsz))
    all_boxes = torch.cat(boxes) - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    clipped = all_boxes.clamp(0, imgsz)
    area = (all_boxes[:, 2:] - all_boxes[:, :2]).prod(1)
    kept_area = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0).prod(1)
    size = clipped[:, 2:] - clipped[:, :2]
    keep = (kept_area >= 0.25 * area) & (size >= 2).all(1)
    return canvas[:, y0:y0 + imgsz, x0:x0 + imgsz].contiguous(), {"boxes": clipped[keep], "labels": torch.cat(labels)[keep]}


def collate_detection(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], torch.Tensor] | None:
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    images, targets, indices = zip(*kept)
    return list(images), list(targets), torch.tensor(indices, dtype=torch.int64)


@dataclass
class DetectTask:
    """The engine's view of detection. ``images`` are the validation split's records (ground truth for
    COCOeval), ``categories`` the (id, name) pairs scored; ``label_ids[k]`` is the dataset category
    id of model label k + 1 (None: a class the dataset lacks, whose detections are dropped)."""

    images: list[DetectionImage]
    categories: list[tuple[int, str]]
    label_ids: list[int | None]
    max_det: int = 100
    primary_metric: str = "map"
    keep: set[int] | None = None  # --classes: model labels kept in the outputs (None = all)

    def train_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, targets = batch[0], batch[1]
        losses = model(images, targets)
        out = {"loss": sum(loss.float() for loss in losses.values())}
        out.update({name.replace("loss_", ""): loss.detach().float() for name, loss in losses.items()})
        return out

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        # box decoding in bf16 would round coordinates to a pixel or more at 300 px: infer in fp32
        with torch.autocast(batch[0][0].device.type, enabled=False):
            detections = model(batch[0])
        sizes = torch.tensor([list(image.shape[-2:]) for image in batch[0]], dtype=torch.int64, device=batch[2].device)
        return {**pad_detections(detections, self.max_det, self.keep), "size": sizes, "index": batch[2]}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return coco_evaluate([self.images[i] for i in outputs["index"]], self.categories, self.coco_results(outputs))

    def coco_results(self, outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Padded outputs -> COCO results (dataset image and category ids, [x, y, w, h])."""
        results = []
        # in dataset order whatever order the DDP ranks' outputs were gathered in: COCOeval breaks score
        # ties by input order, so the same detections must give the same numbers
        for row in np.argsort(outputs["index"], kind="stable"):
            item = self.images[int(outputs["index"][row])]
            image_id = item.image_id
            valid = outputs["labels"][row] > 0
            boxes = outputs["boxes"][row][valid]
            if "size" in outputs:  # boxes are in the loaded file's pixels, the ground truth in the recorded frame
                height, width = (int(v) for v in outputs["size"][row])
                boxes = boxes * np.array([item.width / width, item.height / height] * 2, dtype=np.float64)
            for box, score, label in zip(boxes, outputs["scores"][row][valid], outputs["labels"][row][valid]):
                category = self.label_ids[int(label) - 1]
                if category is None:
                    continue
                results.append({"image_id": image_id, "category_id": category,
                                "bbox": [round(float(box[0]), 2), round(float(box[1]), 2), round(float(box[2] - box[0]), 2),
                                         round(float(box[3] - box[1]), 2)], "score": float(score)})
        return results


def pad_detections(detections: list[dict[str, torch.Tensor]], max_det: int, keep: set[int] | None = None) -> dict[str, torch.Tensor]:
    """A detector's list of per-image dicts -> per-image tensors the engine can concatenate: boxes
    [B, max_det, 4], scores [B, max_det], labels [B, max_det] (0 = padding)."""
    batch = len(detections)
    device = detections[0]["boxes"].device if batch else torch.device("cpu")
    boxes = torch.zeros(batch, max_det, 4, device=device)
    scores = torch.zeros(batch, max_det, device=device)
    labels = torch.zeros(batch, max_det, dtype=torch.int64, device=device)
    for i, det in enumerate(detections):
        chosen = torch.ones_like(det["labels"], dtype=torch.bool)
        if keep is not None:
            chosen = torch.isin(det["labels"], torch.tensor(sorted(keep), device=device))
        order = torch.argsort(det["scores"][chosen], descending=True)[:max_det]
        n = len(order)
        boxes[i, :n] = det["boxes"][chosen][order].float()
        scores[i, :n] = det["scores"][chosen][order].float()
        labels[i, :n] = det["labels"][chosen][order]
    return {"boxes": boxes, "scores": scores, "labels": labels}


def confusion_matrix(truth: Sequence[tuple[np.ndarray, np.ndarray]], predicted: Sequence[tuple[np.ndarray, np.ndarray]],
                     num_classes: int, iou: float = CONFUSION_IOU, ignored: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[C + 1, C + 1] counts, rows = true class, columns = predicted class, index C = background:
    per image, predictions and true boxes are paired one-to-one by the Hungarian algorithm on IoU
    (pairs under ``iou`` do not count); an unpaired true box is a miss (column background), an
    unpaired prediction a false alarm (row background) unless it lies on one of the image's
    ``ignored`` boxes [K, 4] (crowd regions, VOC difficult objects): at least ``iou`` of it inside one,
    COCOeval's rule for crowd regions, and it counts nowhere. Labels are 0-based class indices."""
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou

    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    ignored = ignored if ignored is not None else [np.zeros((0, 4))] * len(truth)
    for (true_boxes, true_labels), (pred_boxes, pred_labels), ignore in zip(truth, predicted, ignored):
        paired_true, paired_pred = set(), set()
        if len(true_boxes) and len(pred_boxes):
            overlaps = box_iou(torch.as_tensor(true_boxes, dtype=torch.float64), torch.as_tensor(pred_boxes, dtype=torch.float64)).numpy()
            rows, cols = linear_sum_assignment(-overlaps)
            for r, c in zip(rows, cols):
                if overlaps[r, c] >= iou:
                    matrix[int(true_labels[r]), int(pred_labels[c])] += 1
                    paired_true.add(r)
                    paired_pred.add(c)
        for r in range(len(true_boxes)):
            if r not in paired_true:
                matrix[int(true_labels[r]), num_classes] += 1
        on_ignored = _inside_share(np.asarray(pred_boxes, dtype=np.float64), np.asarray(ignore, dtype=np.float64)) >= iou
        for c in range(len(pred_boxes)):
            if c not in paired_pred and not on_ignored[c]:
                matrix[num_classes, int(pred_labels[c])] += 1
    return matrix


def _inside_share(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """[N] the largest share of each xyxy box [N, 4] that lies inside one of ``regions`` [K, 4] (0 when K = 0)."""
    if not len(boxes) or not len(regions):
        return np.zeros(len(boxes))
    low = np.maximum(boxes[:, None, :2], regions[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    area = np.clip(boxes[:, 2:] - boxes[:, :2], 1e-9, None).prod(axis=1)
    return (inter / area[:, None]).max(axis=1)


def pr_curves(images: list[DetectionImage], categories: list[tuple[int, str]], results: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per class: (recall, precision, AP50) at IoU 0.5 from COCOeval's interpolated precision."""
    from cnnkit.evaluate.coco import coco_precision

    precision, recall_points = coco_precision(images, categories, results)
    curves = {}
    for k, (_, name) in enumerate(categories):
        values = precision[0, :, k] if precision is not None else np.full(len(recall_points), -1.0)
        if (values < 0).all():  # no true box of this class
            continue
        values = np.where(values < 0, 0.0, values)
        curves[name] = (recall_points, values, float(values.mean()))
    return curves


def draw(images: list[DetectionImage], categories: list[tuple[int, str]], results: list[dict[str, Any]], plot_dir: Path,
         prefix: str = "val", samples: int = 16) -> list[Path]:
    """PR curves, the confusion matrix with background, and a grid of images with true (green) and
    predicted (red, score >= 0.25) boxes."""
    names = [name for _, name in categories]
    index_of = {int(cid): k for k, (cid, _) in enumerate(categories)}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for r in results:
        if r["score"] >= CONFUSION_CONF:
            by_image.setdefault(r["image_id"], []).append(r)
    truth, predicted = [], []
    for image in images:
        preds = by_image.get(image.image_id, [])
        truth.append((np.asarray(image.boxes).reshape(-1, 4), np.array([index_of[int(c)] for c in image.labels], dtype=np.int64)))
        predicted.append((np.array([_xyxy(p["bbox"]) for p in preds]).reshape(-1, 4),
                          np.array([index_of[int(p["category_id"])] for p in preds], dtype=np.int64)))
    ignored = [np.array([obj.box for obj in image.ignored], dtype=np.float64).reshape(-1, 4) for image in images]
    matrix = confusion_matrix(truth, predicted, len(names), ignored=ignored)
    paths = [plots.plot_pr_curves(pr_curves(images, categories, results), plot_dir / f"{prefix}_pr_curves.png",
                                  mean_label="at IoU 0.5: map50"),
             plots.plot_confusion_matrix(matrix, names + ["background"], plot_dir / f"{prefix}_confusion_matrix.png",
                                         normalize=False, title=f"confusion at IoU {CONFUSION_IOU}, score >= {CONFUSION_CONF} "
                                         "(rows: true, columns: predicted)")]
    pictures, titles = [], []
    for image, (tb, tl), (pb, pl) in list(zip(images, truth, predicted))[:samples]:
        try:
            pixels = np.asarray(load_image_in_frame(image.path, image.width, image.height))  # the boxes' frame
        except CnnkitError:
            continue
        pictures.append(draw_boxes(pixels, tb, [names[k] for k in tl], colour=(0, 200, 0)))
        pictures[-1] = draw_boxes(pictures[-1], pb, [names[k] for k in pl], colour=(230, 0, 0))
        titles.append(f"{image.path.name}: {len(tb)} true, {len(pb)} found")
    paths.append(plots.plot_image_grid(pictures, titles, plot_dir / f"{prefix}_samples.png", columns=4))
    return paths


def draw_boxes(pixels: np.ndarray, boxes: np.ndarray, captions: Sequence[str], colour=(230, 0, 0), width: int | None = None) -> np.ndarray:
    """HxWx3 uint8 with boxes and their captions drawn (torchvision.utils.draw_bounding_boxes)."""
    from torchvision.utils import draw_bounding_boxes

    if not len(boxes):
        return pixels
    image = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
    width = width or max(1, round(max(pixels.shape[:2]) / 320))
    drawn = draw_bounding_boxes(image, torch.as_tensor(np.asarray(boxes), dtype=torch.float32), labels=list(captions),
                                colors=[colour] * len(boxes), width=width)
    return drawn.permute(1, 2, 0).numpy()


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]
