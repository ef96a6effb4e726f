"""Semantic segmentation metrics: a confusion matrix accumulated over batches, the scores read from it
(IoU, Dice, precision, recall per class; mIoU, mean Dice, pixel accuracy), and the 95th percentile
Hausdorff distance of boundaries (HD95) as MONAI's compute_hausdorff_distance(percentile=95) defines it.

    matrix = sum(confusion_matrix(logits.argmax(1), masks, num_classes) for logits, masks in batches)
    scores = segmentation_scores(matrix, class_names)       # background=0 left out of miou_fg / dice_fg
    scores["miou"], scores["dice"], scores["pixel_accuracy"], scores["per_class"]["road"]["iou"]
    distances = per_class_hd95(pred_map, true_map, num_classes, spacing=(0.5, 0.5))   # [C], NaN where absent

Scores are plain Python floats (the dict goes straight into metrics.json); a score that is undefined for
the data (a class seen in neither truth nor prediction, an empty matrix) is None rather than NaN.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255) -> torch.Tensor:
    """int64 [C, C] counts, rows = true class, columns = predicted class, on the inputs' device.

    ``pred`` and ``target`` are integer class maps of the same shape (any shape: [H, W], [B, H, W], flat).
    Pixels whose target is ``ignore_index``, or any other value outside 0..C-1 (the data reader refuses
    those earlier), are left out. A prediction outside 0..C-1 on a counted pixel can only come from a bug
    (an argmax over the wrong dimension, a label shifted by one) and raises ValueError.
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer class maps (take the argmax of the logits first)")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    # int64 first: target * C overflows uint8 masks already at C = 16
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long().to(pred.device)
    counted = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        counted &= target != ignore_index  # only matters for an ignore_index inside 0..C-1
    outside = counted & ((pred < 0) | (pred >= num_classes))
    if bool(outside.any()):
        raise ValueError(f"pred holds class {int(pred[outside][0])}, outside 0..{num_classes - 1}")
    # Left-out pixels go to one extra bin that is dropped, instead of compacting the tensors by a boolean mask:
    # one bincount over the whole batch, no copy of the kept pixels.
    cells = torch.where(counted, target * num_classes + pred, torch.full_like(target, num_classes * num_classes))
    counts = torch.bincount(cells, minlength=num_classes * num_classes + 1)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes)


def segmentation_scores(matrix: Any, class_names: Sequence[str], background: int | None = 0) -> dict[str, Any]:
    """Scores from an accumulated confusion matrix (rows = true class, columns = predicted class).

    Returns {"miou", "dice", "pixel_accuracy", "miou_fg", "dice_fg", "per_class": {name: {"iou", "dice",
    "precision", "recall", "share"}}}. Per class c: IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN),
    precision = TP/(TP+FP), recall = TP/(TP+FN), share = the class's fraction of the counted true pixels.
    A class in neither truth nor prediction has no IoU or Dice (None): counting it as 0 or 1 would move the
    mean by a class the data never tested, so the means run over the classes that have one. miou_fg and
    dice_fg leave out the ``background`` class as well (background=None: the same as miou and dice).
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"the confusion matrix must be square [C, C], got shape {counts.shape}")
    names = [str(name) for name in class_names]
    if len(names) != counts.shape[0]:
        raise ValueError(f"{len(names)} class names for a {counts.shape[0]}-class confusion matrix")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    if background is not None and not 0 <= background < len(names):
        raise ValueError(f"background class {background} is outside 0..{len(names) - 1}")

    true_positives = np.diag(counts)
    true_pixels = counts.sum(axis=1)  # TP + FN
    predicted_pixels = counts.sum(axis=0)  # TP + FP
    union = true_pixels + predicted_pixels - true_positives  # TP + FP + FN
    total = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is exactly the "undefined" we want as NaN
        iou = true_positives / union
        dice = 2 * true_positives / (true_pixels + predicted_pixels)
        precision = true_positives / predicted_pixels
        recall = true_positives / true_pixels
        share = true_pixels / total

    foreground = np.ones(len(names), dtype=bool)
    if background is not None:
        foreground[background] = False
    return {
        "miou": _mean_defined(iou),
        "dice": _mean_defined(dice),
        "pixel_accuracy": _number(true_positives.sum() / total) if total > 0 else None,
        "miou_fg": _mean_defined(iou[foreground]),
        "dice_fg": _mean_defined(dice[foreground]),
        "per_class": {name: {"iou": _number(iou[c]), "dice": _number(dice[c]), "precision": _number(precision[c]),
                             "recall": _number(recall[c]), "share": _number(share[c])} for c, name in enumerate(names)},
    }


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] | None = None, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance between the boundaries of two boolean masks (any number of
    dimensions), in the units of ``spacing`` (the size of a pixel along each axis; None = 1 per axis).

    As MONAI's compute_hausdorff_distance(percentile=...) computes it: the boundary of a mask is the mask
    minus its binary erosion (scipy's cross-shaped element; pixels on the image edge count as boundary);
    every boundary pixel of one mask gets its Euclidean distance to the nearest boundary pixel of the
    other; the result is the larger of the two directed percentiles (pred -> truth, truth -> pred), with
    numpy's linear interpolation. percentile=100 gives the classic Hausdorff distance.

    Both masks empty: NaN (nothing to measure; averages should skip it). Exactly one empty: the diagonal
    of the image in physical units, sqrt(sum((shape * spacing) ** 2)), the worst distance the image allows.
    MONAI returns inf there, which breaks every mean; the largest finite distance (the penalty the BraTS
    challenge uses for a missed or hallucinated region) keeps the failure in the average at full weight.
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    if pred.ndim == 0:
        raise ValueError("hd95 needs masks with at least one dimension")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be within 0..100, got {percentile}")
    pixel_size = _pixel_size(spacing, pred.ndim)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return float("nan")
    if has_pred != has_truth:
        return math.sqrt(sum((n * size) ** 2 for n, size in zip(pred.shape, pixel_size)))

    pred_edges, truth_edges = _boundary(pred), _boundary(truth)
    # distance_transform_edt measures, for every non-zero pixel, the distance to the nearest zero pixel,
    # so run it on the complement of the other mask's boundary
    pred_to_truth = ndimage.distance_transform_edt(~truth_edges, sampling=pixel_size)[pred_edges]
    truth_to_pred = ndimage.distance_transform_edt(~pred_edges, sampling=pixel_size)[truth_edges]
    return float(max(np.percentile(pred_to_truth, percentile), np.percentile(truth_to_pred, percentile)))


def per_class_hd95(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int | None = 255,
                   spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """hd95(pred == c, truth == c) for every class c of two integer label maps ([H, W], or any shape):
    float64 [C], NaN where the class is in neither map.

    Pixels whose truth is ``ignore_index`` (or any other value outside 0..C-1, as in confusion_matrix) are
    removed from both masks: nothing is known there, so neither a prediction nor a boundary may count.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth must have the same shape, got {pred.shape} and {truth.shape}")
    known = (truth >= 0) & (truth < num_classes)
    if ignore_index is not None:
        known &= truth != ignore_index
    outside = known & ((pred < 0) | (pred >= num_classes))
    if outside.any():
        raise ValueError(f"pred holds class {int(pred[outside][0])}, outside 0..{num_classes - 1}")
    return np.array([hd95((pred == c) & known, (truth == c) & known, spacing=spacing) for c in range(num_classes)],
                    dtype=np.float64)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch the outside (border_value=0: the image edge is outside)."""
    return mask & ~ndimage.binary_erosion(mask)


def _pixel_size(spacing: tuple[float, ...] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.ndim(spacing) == 0:  # one number: the same size along every axis
        spacing = (spacing,) * ndim
    pixel_size = tuple(float(size) for size in spacing)
    if len(pixel_size) != ndim:
        raise ValueError(f"spacing has {len(pixel_size)} values for {ndim}-D masks")
    if not all(size > 0 for size in pixel_size):
        raise ValueError(f"spacing must be positive, got {pixel_size}")
    return pixel_size


def _number(value: float) -> float | None:
    """A plain float for JSON, None where the score is undefined (NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else None
