"""Text detection's geometry: DBNet's targets (shrunk kernels, threshold maps), its post-processing (regions of
the probability map to quadrilaterals, grown back by unclipping), the ICDAR matching at IoU 0.5, reading order
and the perspective crop of a line for recognition. Polygon offsets and overlaps use the Clipper library
(pyclipper), as DBNet's and PaddleOCR's code do.

    quads, scores = boxes_from_prob(prob)                 # prob [H, W] in 0..1 -> [N, 4, 2] clockwise from top-left
    tp = match_count(quads, truth_quads)                  # one-to-one matches at IoU >= 0.5
    order = reading_order(quads)                          # top to bottom, left to right within a row
    crop = rectify(image, quad)                           # the line, upright, for the recogniser
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper

# DBNet's r (its paper: 0.4) sets the margin D = A (1 - r^2) / L; at 0.4 a text line's kernel is 0.16 of its
# height, 2-3 pixels for small print, which a stride-4 network learns slowly; 0.6 keeps 0.36 of it
SHRINK_RATIO = 0.6
THRESH_MIN, THRESH_MAX = 0.3, 0.7
CLIPPER_SCALE = 16.0  # Clipper works on integers: coordinates in 1/16 pixel


def polygon_area(points: np.ndarray) -> float:
    return float(abs(cv2.contourArea(np.asarray(points, np.float32))))


def polygon_perimeter(points: np.ndarray) -> float:
    return float(cv2.arcLength(np.asarray(points, np.float32), True))


def offset_polygon(points: np.ndarray, distance: float) -> np.ndarray | None:
    """The polygon moved outwards (distance > 0) or inwards (< 0) by ``distance`` pixels, mitred corners; None
    when shrinking leaves nothing."""
    clipper = pyclipper.PyclipperOffset()
    clipper.AddPath([tuple(p) for p in np.round(np.asarray(points) * CLIPPER_SCALE).astype(np.int64).tolist()],
                    pyclipper.JT_MITER if distance < 0 else pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = clipper.Execute(distance * CLIPPER_SCALE)
    if not paths:
        return None
    largest = max(paths, key=lambda p: abs(pyclipper.Area(p)))
    return np.asarray(largest, np.float32) / CLIPPER_SCALE


def shrink_distance(points: np.ndarray, ratio: float = SHRINK_RATIO) -> float:
    """DBNet's D = A (1 - r^2) / L."""
    return polygon_area(points) * (1 - ratio ** 2) / max(polygon_perimeter(points), 1e-6)


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of the points (xs, ys) to the segment a-b."""
    ab = b - a
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def db_targets(polygons: list[np.ndarray], ignore: list[bool], height: int, width: int, min_side: float = 3.0) -> dict[str, np.ndarray]:
    """DBNet's training maps for one image, each [height, width] float32: ``gt`` (1 inside each shrunk
    polygon), ``mask`` (0 over ignored or too-small text, whose pixels teach nothing either way), ``thresh``
    (0.3 away from text rising to 0.7 on each polygon's border, over the polygon grown by D) and
    ``thresh_mask`` (1 where ``thresh`` is supervised)."""
    gt = np.zeros((height, width), np.float32)
    mask = np.ones((height, width), np.float32)
    canvas = np.zeros((height, width), np.float32)
    thresh_mask = np.zeros((height, width), np.float32)
    for points, skip in zip(polygons, ignore):
        points = np.asarray(points, np.float32)
        rect_w, rect_h = cv2.minAreaRect(points)[1]
        kernel = None
        if not skip and min(rect_w, rect_h) >= min_side:
            distance = shrink_distance(points)
            kernel = offset_polygon(points, -distance)
        if kernel is None or len(kernel) < 3:
            cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 0.0)
            continue
        cv2.fillPoly(gt, [np.round(kernel).astype(np.int32)], 1.0)
        grown = offset_polygon(points, distance)
        if grown is None:
            continue
        cv2.fillPoly(thresh_mask, [np.round(grown).astype(np.int32)], 1.0)
        x0, y0 = np.floor(grown.min(axis=0)).astype(int)
        x1, y1 = np.ceil(grown.max(axis=0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
        if x1 < x0 or y1 < y0:
            continue
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
        nearest = np.min([_segment_distance(xs, ys, points[i], points[(i + 1) % len(points)]) for i in range(len(points))], axis=0)
        closeness = 1.0 - np.clip(nearest / max(distance, 1e-6), 0, 1)
        canvas[y0:y1 + 1, x0:x1 + 1] = np.maximum(canvas[y0:y1 + 1, x0:x1 + 1], closeness)
    return {"gt": gt, "mask": mask, "thresh": canvas * (THRESH_MAX - THRESH_MIN) + THRESH_MIN, "thresh_mask": thresh_mask}


def order_points(points: np.ndarray) -> np.ndarray:
    """4 points clockwise from the top-left (the smallest x + y), as [4, 2] float32."""
    points = np.asarray(points, np.float32)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    points = points[np.argsort(angles)]  # clockwise in image coordinates (y down)
    start = int(np.argmin(points.sum(axis=1)))
    return np.roll(points, -start, axis=0)


def unclip_distance(width: float, height: float, ratio: float = SHRINK_RATIO) -> float:
    """The margin D that grows a kernel of ``width`` x ``height`` back to the rectangle whose DBNet shrink it is:
    the root of 2D (w + h + 4D) = (1 - r^2)(w + 2D)(h + 2D). DBNet's own rule, D = 1.5 A / L, is this only for
    boxes about three times as wide as high: it returns a line-level box (ten times as wide) at two thirds
    of its height."""
    k = 1 - ratio ** 2
    a, b, c = 8 - 4 * k, (2 - 2 * k) * (width + height), -k * width * height
    return float((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a))


def boxes_from_prob(prob: np.ndarray, bin_thresh: float = 0.3, box_thresh: float = 0.6, unclip_ratio: float = 1.0,
                    join_gap: float = 0.0, min_side: float = 3.0, max_candidates: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Quadrilaterals [N, 4, 2] (clockwise from the top-left, in the map's pixels) and their scores [N] from a
    text probability map: each connected region above ``bin_thresh`` whose mean probability reaches
    ``box_thresh``, its minimum-area rectangle grown by ``unclip_ratio`` x unclip_distance (1 undoes the
    shrink the targets applied); then, with ``join_gap``, the pieces of one line joined (join_row_pieces)."""
    binary = (prob > bin_thresh).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads, scores = [], []
    for contour in contours[:max_candidates]:
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if min(w, h) < min_side / 2:
            continue
        x, y, bw, bh = cv2.boundingRect(contour)
        region = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(region, [contour.reshape(-1, 2) - [x, y]], 1)
        score = float(prob[y:y + bh, x:x + bw][region > 0].mean())
        if score < box_thresh:
            continue
        grow = 2 * unclip_ratio * unclip_distance(w, h)
        if min(w, h) + grow < min_side:
            continue
        quad = order_points(cv2.boxPoints(((cx, cy), (w + grow, h + grow), angle)))
        quad[:, 0] = np.clip(quad[:, 0], 0, prob.shape[1] - 1)
        quad[:, 1] = np.clip(quad[:, 1], 0, prob.shape[0] - 1)
        quads.append(quad)
        scores.append(score)
    if not quads:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    return join_row_pieces(np.stack(quads).astype(np.float32), np.asarray(scores, np.float32), join_gap)


def join_row_pieces(quads: np.ndarray, scores: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes that are pieces of one line, joined into one: the probability map can break a line at a wide space
    (after a full stop, in a monospaced face). Two boxes join when they run the same way (within 5 degrees), their
    heights are within 1.5 times, their centre lines are less than a quarter of the lower one apart and their
    ends less than ``gap`` times it (EasyOCR's group_text_box joins words by the same kind of rule). Each group
    becomes the minimum-area rectangle around its corners, scored by its pieces' mean weighted by length."""
    n = len(quads)
    if n < 2 or gap <= 0:
        return quads, scores
    quads = np.asarray(quads, np.float32)
    along = quads[:, 1] - quads[:, 0]
    lengths = np.maximum(np.linalg.norm(along, axis=1), 1e-6)
    directions = along / lengths[:, None]
    heights = np.maximum(np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1), 1e-6)
    centres = quads.mean(axis=1)
    same_way = directions @ directions.T >= np.cos(np.radians(5.0))
    low = np.minimum(heights[:, None], heights[None, :])
    like_height = np.maximum(heights[:, None], heights[None, :]) <= 1.5 * low
    offsets = centres[None, :] - centres[:, None]  # [i, j]: from box i's centre to box j's, measured along box i
    across = np.abs(directions[:, None, 0] * offsets[..., 1] - directions[:, None, 1] * offsets[..., 0])
    ends_apart = np.abs(np.einsum("ik,ijk->ij", directions, offsets)) - (lengths[:, None] + lengths[None, :]) / 2
    pieces = np.triu(same_way & like_height & (across < 0.25 * low) & (ends_apart < gap * low), k=1)
    from scipy.sparse.csgraph import connected_components

    count, labels = connected_components(pieces, directed=False)
    if count == n:
        return quads, scores
    joined, joined_scores = [], []
    for members in (np.flatnonzero(labels == label) for label in range(count)):
        if len(members) == 1:
            joined.append(quads[members[0]])
            joined_scores.append(scores[members[0]])
            continue
        rect = cv2.minAreaRect(quads[members].reshape(-1, 2))
        joined.append(order_points(cv2.boxPoints(rect)))
        joined_scores.append(float(np.average(scores[members], weights=lengths[members])))
    return np.stack(joined).astype(np.float32), np.asarray(joined_scores, np.float32)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two simple polygons (Clipper's boolean operations)."""
    pa = np.round(np.asarray(a) * CLIPPER_SCALE).astype(np.int64).tolist()
    pb = np.round(np.asarray(b) * CLIPPER_SCALE).astype(np.int64).tolist()
    clipper = pyclipper.Pyclipper()
    clipper.AddPath(pa, pyclipper.PT_SUBJECT, True)
    clipper.AddPath(pb, pyclipper.PT_CLIP, True)
    inter = sum(abs(pyclipper.Area(p)) for p in clipper.Execute(pyclipper.CT_INTERSECTION, pyclipper.PFT_NONZERO, pyclipper.PFT_NONZERO))
    union = abs(pyclipper.Area(pa)) + abs(pyclipper.Area(pb)) - inter
    return float(inter / union) if union > 0 else 0.0


def match_pairs(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one (prediction, truth) pairs with IoU >= ``iou``, the highest overlaps first (ICDAR 2015's rule)."""
    if not len(pred) or not len(truth):
        return []
    box_a = np.stack([np.asarray(pred).min(axis=1), np.asarray(pred).max(axis=1)], axis=1)  # [N, 2, 2]
    box_b = np.stack([np.asarray(truth).min(axis=1), np.asarray(truth).max(axis=1)], axis=1)
    candidates = []
    for i, (lo_a, hi_a) in enumerate(box_a):
        for j, (lo_b, hi_b) in enumerate(box_b):
            if np.all(lo_a <= hi_b) and np.all(lo_b <= hi_a):  # their boxes touch: only then can they overlap
                value = polygon_iou(pred[i], truth[j])
                if value >= iou:
                    candidates.append((value, i, j))
    pairs, used_p, used_t = [], set(), set()
    for _, i, j in sorted(candidates, reverse=True):
        if i not in used_p and j not in used_t:
            pairs.append((i, j))
            used_p.add(i)
            used_t.add(j)
    return pairs


def detection_scores(tp: int, predicted: int, truths: int) -> dict[str, float]:
    """ICDAR's precision, recall and hmean from counts summed over images."""
    precision = tp / predicted if predicted else (1.0 if not truths else 0.0)
    recall = tp / truths if truths else 1.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean}


def reading_order(quads: np.ndarray) -> list[int]:
    """Indices of ``quads`` in reading order: rows top to bottom (a line joins a row when its centre lies within
    half the row's height of the row's centre), left to right within a row."""
    if not len(quads):
        return []
    quads = np.asarray(quads, np.float32)
    centres = quads.mean(axis=1)
    heights = np.maximum(np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1), 1.0)
    rows: list[list[int]] = []
    for k in np.argsort(centres[:, 1], kind="stable"):
        row = rows[-1] if rows else None
        if row is not None:
            row_y = float(np.mean(centres[row, 1]))
            row_h = float(np.mean(heights[row]))
            if abs(centres[k, 1] - row_y) <= 0.5 * min(row_h, heights[k]):
                row.append(int(k))
                continue
        rows.append([int(k)])
    return [k for row in rows for k in sorted(row, key=lambda i: centres[i, 0])]


def expand_quad(quad: np.ndarray, margin: float) -> np.ndarray:
    """The quadrilateral (clockwise from the top-left) grown on every side by ``margin`` times its height, along
    its own axes."""
    quad = np.asarray(quad, np.float32)
    u, v = quad[1] - quad[0], quad[3] - quad[0]
    height = float(np.linalg.norm(v))
    u, v = u / max(float(np.linalg.norm(u)), 1e-6), v / max(height, 1e-6)
    step = margin * height
    return quad + np.stack([-u - v, u - v, u + v, v - u]) * step


def rectify(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The quadrilateral's content warped to an upright rectangle (width along its top edge); a region taller
    than 1.5 times its width is turned a quarter so that its text runs left to right."""
    quad = np.asarray(quad, np.float32)
    width = max(2, int(round(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3])))))
    height = max(2, int(round(max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])))))
    target = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    crop = cv2.warpPerspective(image, cv2.getPerspectiveTransform(quad, target), (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    if height > 1.5 * width:
        crop = np.ascontiguousarray(np.rot90(crop))
    return crop
