"""Single-object tracking scores by the OTB protocol (Wu, Lim and Yang, "Online Object Tracking: A Benchmark",
CVPR 2013), one-pass evaluation (OPE: initialised from the first ground-truth box, never re-initialised).

    from cnnkit.evaluate.otb import otb_scores
    scores = otb_scores({"SEQ-01": (predicted_xywh, gt_xywh), …})
    scores["success_auc"], scores["precision_20px"]               # means over the sequences

- success: a frame succeeds at threshold t when the overlap IoU(predicted, ground truth) is larger than t
  (strictly, as the OTB toolkit and pysot compare); the success curve is the share of successful frames at
  t = 0, 0.05, …, 1 (21 thresholds) and its AUC the mean of those 21 rates. The strict comparison means a
  perfect track scores 20/21 = 0.952: no frame overlaps by more than 1. Published OTB figures use the same rule.
- precision: the centre location error is the distance between the two boxes' centres in pixels; the precision
  curve is the share of frames whose error is at most d = 0, 1, …, 50 px, and OTB's headline is d = 20.

Each sequence gets its curves; the scores of a set are the means of its sequences' curves (every sequence
counts once, whatever its length). Frames whose ground truth is not a box (width or height 0, or not a number:
the target is out of view in some benchmarks) are left out. Boxes are (x, y, w, h): top-left corner, width and
height in pixels, continuous (no +1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
PRECISION_AT = 20


def _boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes


def overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[N] IoU of [N, 4] predicted and [N, 4] ground-truth xywh boxes, frame by frame (0 where either is empty)."""
    pred, gt = _boxes(pred), _boxes(gt)
    left, top = np.maximum(pred[:, 0], gt[:, 0]), np.maximum(pred[:, 1], gt[:, 1])
    right = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
    bottom = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = np.clip(pred[:, 2], 0, None) * np.clip(pred[:, 3], 0, None) + gt[:, 2] * gt[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def centre_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """[N] distance in pixels between the centres of [N, 4] predicted and ground-truth xywh boxes."""
    pred, gt = _boxes(pred), _boxes(gt)
    return np.hypot(pred[:, 0] + pred[:, 2] / 2 - gt[:, 0] - gt[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2 - gt[:, 1] - gt[:, 3] / 2)


def valid_frames(gt: np.ndarray) -> np.ndarray:
    """[N] bool: ground-truth rows that are boxes (finite, width and height above 0)."""
    gt = _boxes(gt)
    return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def sequence_curves(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(success [21], precision [51]) of one sequence: the share of its frames (those with a ground-truth box)
    whose IoU is above each of SUCCESS_THRESHOLDS, and whose centre error is at most each of PRECISION_THRESHOLDS.
    A predicted box that is not a number counts as a miss."""
    pred, gt = _boxes(pred), _boxes(gt)
    assert len(pred) == len(gt), f"{len(pred)} predicted boxes for {len(gt)} ground-truth frames"
    keep = valid_frames(gt)
    if not keep.any():
        return np.zeros(len(SUCCESS_THRESHOLDS)), np.zeros(len(PRECISION_THRESHOLDS))
    pred, gt = pred[keep], gt[keep]
    lost = ~np.isfinite(pred).all(axis=1)
    iou = np.where(lost, -1.0, overlaps(np.nan_to_num(pred), gt))
    error = np.where(lost, np.inf, centre_errors(np.nan_to_num(pred), gt))
    success = (iou[:, None] > SUCCESS_THRESHOLDS[None, :]).mean(axis=0)
    precision = (error[:, None] <= PRECISION_THRESHOLDS[None, :]).mean(axis=0)
    return success, precision


def otb_scores(sequences: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """OTB's OPE scores of a set of sequences, ``{name: (predicted [N, 4], ground truth [N, 4])}`` (xywh):
    ``{"success_auc", "precision_20px", "mean_iou", "success_curve" [21], "precision_curve" [51],
    "per_sequence": {name: {"success_auc", "precision_20px", "mean_iou", "frames"}}}``, the first three and the
    curves averaged over the sequences."""
    per_sequence, successes, precisions, ious = {}, [], [], []
    for name, (pred, gt) in sequences.items():
        success, precision = sequence_curves(pred, gt)
        keep = valid_frames(gt)
        pred_kept = np.nan_to_num(_boxes(pred)[keep])
        mean_iou = float(overlaps(pred_kept, _boxes(gt)[keep]).mean()) if keep.any() else 0.0
        per_sequence[name] = {"success_auc": round(float(success.mean()), 4), "precision_20px": round(float(precision[PRECISION_AT]), 4),
                              "mean_iou": round(mean_iou, 4), "frames": int(keep.sum())}
        successes.append(success)
        precisions.append(precision)
        ious.append(mean_iou)
    if not successes:
        return {"success_auc": 0.0, "precision_20px": 0.0, "mean_iou": 0.0, "success_curve": [], "precision_curve": [],
                "per_sequence": {}}
    success, precision = np.mean(successes, axis=0), np.mean(precisions, axis=0)
    return {"success_auc": round(float(success.mean()), 4), "precision_20px": round(float(precision[PRECISION_AT]), 4),
            "mean_iou": round(float(np.mean(ious)), 4), "success_curve": [round(float(v), 4) for v in success],
            "precision_curve": [round(float(v), 4) for v in precision], "per_sequence": per_sequence}


def plot_curves(curves: Mapping[str, dict], path: str | Path) -> Path:
    """OTB's two plots side by side: success (rate against the IoU threshold, AUC in the legend) and precision
    (rate against the centre-error threshold, the 20 px value in the legend), one line per ``curves`` entry
    (a name -> otb_scores result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.engine.rundir import atomic_path

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, scores in curves.items():
        left.plot(SUCCESS_THRESHOLDS, scores["success_curve"], label=f"{name} [{scores['success_auc']:.3f}]")
        right.plot(PRECISION_THRESHOLDS, scores["precision_curve"], label=f"{name} [{scores['precision_20px']:.3f}]")
    left.set(title="Success plot of OPE", xlabel="overlap threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02))
    right.set(title="Precision plot of OPE", xlabel="location error threshold (px)", ylabel="precision", xlim=(0, 50),
              ylim=(0, 1.02))
    right.axvline(PRECISION_AT, color="grey", lw=0.5)
    for ax in (left, right):
        ax.legend(fontsize=8, loc="lower left" if ax is left else "lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
