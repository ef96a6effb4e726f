"""Costs between tracks and detections, and the optimal assignment under a cost threshold.

    cost = 1 - iou_matrix(track_boxes, det_boxes)                # [N, M]
    cost = mask_classes(cost, track_classes, det_classes)        # other-class pairs -> inf
    matches, rows, cols = linear_assignment(cost, 1 - 0.3)       # pairs with IoU >= 0.3 only

The assignment is the Hungarian method of SORT (Bewley et al. 2016), solved by scipy's
``linear_sum_assignment``; like ByteTrack's use of ``lap.lapjv(cost_limit=...)`` it maximises the total
margin ``threshold - cost`` over admissible pairs, so it never trades a good pair for an inadmissible one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` [N, 4] with every box in ``b`` [M, 4], xyxy pixels -> [N, M]
    (0 where the union is empty)."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The minimum-cost matching of rows to columns of ``cost`` [N, M] among pairs with cost <= ``threshold``
    (inf and nan never match) -> (matches [P, 2] as (row, col), unmatched rows [N - P], unmatched cols [M - P]).

    Among matchings of admissible pairs it maximises the summed margin ``threshold - cost``: every admissible
    pair is worth taking, and of two matchings of equal size the cheaper one wins."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(n), np.arange(m)
    # An inadmissible pair costs a hair above the threshold: the solver may still pick it to complete a
    # rectangular assignment (then it is dropped below), but never in place of admissible pairs, since
    # any matching extends to a complete one with such pairs and they add (almost) nothing to the margin.
    admissible = cost <= threshold  # False for nan
    penalty = threshold + max(1e-6, 1e-9 * abs(threshold))
    rows, cols = linear_sum_assignment(np.where(admissible, cost, penalty))
    keep = admissible[rows, cols]
    matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n), matches[:, 0], assume_unique=True)
    unmatched_cols = np.setdiff1d(np.arange(m), matches[:, 1], assume_unique=True)
    return matches, unmatched_rows, unmatched_cols


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]


def cosine_distance(gallery_feats: np.ndarray, det_feats: np.ndarray, normalised: bool = False) -> np.ndarray:
    """1 - cosine similarity of every feature in ``gallery_feats`` [N, D] with every one in ``det_feats`` [M, D]
    -> [N, M] in [0, 2]. The inputs are L2-normalised here unless ``normalised`` says they already are."""
    a, b = np.atleast_2d(gallery_feats), np.atleast_2d(det_feats)
    if not normalised:
        a, b = _normalise(a), _normalise(b)
    return 1.0 - a @ b.T


def gallery_distance(galleries: Sequence[np.ndarray], det_feats: np.ndarray, normalised: bool = False) -> np.ndarray:
    """Deep SORT's nearest-neighbour appearance distance: for each of N tracks, the smallest cosine distance
    between any feature of its gallery (``galleries[i]`` [G_i, D], G_i >= 1) and each detection feature
    ``det_feats`` [M, D] -> [N, M]. ``normalised``: the features are already L2-normalised (skips that step)."""
    det_feats = np.atleast_2d(det_feats)
    if len(galleries) == 0 or len(det_feats) == 0:
        return np.empty((len(galleries), len(det_feats)))
    sizes = np.array([len(g) for g in galleries])
    assert sizes.min() >= 1, "every track's gallery holds at least its first detection's feature"
    dist = cosine_distance(np.concatenate(galleries), det_feats, normalised)         # [sum G_i, M]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.minimum.reduceat(dist, starts, axis=0).astype(np.float64)


def mask_classes(cost: np.ndarray, track_classes: np.ndarray, det_classes: np.ndarray) -> np.ndarray:
    """A copy of ``cost`` [N, M] with inf where track i and detection j have different classes; class -1
    (unknown) matches any class."""
    tc = np.asarray(track_classes).reshape(-1, 1)
    dc = np.asarray(det_classes).reshape(1, -1)
    other = (tc != dc) & (tc != -1) & (dc != -1)
    return np.where(other, np.inf, cost)
