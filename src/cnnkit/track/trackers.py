"""SORT, ByteTrack and DeepSORT: one tracking loop (``Tracker.update``) and three association policies.

    tracker = make_tracker("bytetrack", TrackerOptions(max_age=30))
    for frame in frames:
        rows = tracker.update(Detections(boxes, scores, classes), warp=camera_motion(frame))
        # rows [M, 7]: x1, y1, x2, y2, track_id, score, class of the tracks reported this frame

Each frame:
  1) camera motion: every track's Kalman state is moved by ``warp`` (previous -> current pixels)
  2) every track is predicted one frame ahead; a lost track's height velocity is zeroed first (ByteTrack), so an
     unseen box keeps its size instead of growing or collapsing
  3) the algorithm's policy matches tracks to detections and names the detections that start tracks
  4) matched tracks are Kalman-updated; a track is confirmed after ``min_hits`` matches (births in the first
     ``min_hits`` frames are confirmed at once, as SORT reports from frame 1); unmatched tracks count a miss and
     are deleted after ``max_age`` misses, or at their first miss while unconfirmed (as Deep SORT and ByteTrack
     do: a false detection rarely repeats, so its track dies before it is reported)
  5) new tracks get the next ids (from 1, never reused until ``reset``); confirmed tracks matched this frame are
     reported with their detection's box and score, as SORT and ByteTrack report

The policies:
- SORT (Bewley et al. 2016, arXiv:1602.00763): detections with score >= det_threshold, 1 - IoU against every
  track's prediction, one Hungarian assignment (IoU >= iou_threshold); every unmatched detection starts a track.
- ByteTrack (Zhang et al. 2022, arXiv:2110.06864; MIT reference github.com/ifzhang/ByteTrack): 1) high-score
  detections (>= det_threshold) against all confirmed tracks, tracked and lost, by IoU; 2) low-score detections
  (low_threshold .. det_threshold) against the confirmed tracks still unmatched that were tracked last frame, by
  IoU >= 0.5 as ByteTrack; 3) the remaining high-score detections against unconfirmed tracks; the high-score
  detections left over start tracks when their score >= new_track_threshold (det_threshold + 0.1, as ByteTrack).
  Step 2 is what carries an occluded object through frames where its detection score drops.
- DeepSORT (Wojke et al. 2017, arXiv:1703.07402), appearance from a re-ID embedder (the smallest cosine distance
  of a detection's features to the track's last ``gallery_size`` features): 1) every confirmed track, tracked or
  lost, against the detections by IoU, as SORT, a track missed for more than REID_AFTER_MISSES frames only when
  the detection looks like it; 2) the confirmed tracks still unmatched against the detections left, in Deep
  SORT's matching cascade (one assignment per number of frames since the track was last seen, the most recent
  first), a pair admissible when it looks alike (within max_cosine_distance) and the detection's centre lies inside
  the Kalman filter's chi-square 95 % gate on position (2 dof), or the boxes overlap (IoU >= iou_threshold), cost
  the smaller of the appearance and the IoU distance (BoT-SORT's fusion, Aharon et al. 2022); this is the
  re-identification that keeps an id through an occlusion of up to max_age frames; 3) unconfirmed tracks by
  IoU; the rest start tracks. What was measured against it on the synthetic benchmark's tuning sequences, with
  a re-ID model that never saw their objects (docs/tracking.md): the cascade as the first round (tracks seen
  last frame matched before any other) hands a detection to a neighbour when its own track missed one frame,
  while in the re-identification round it changes nothing measurable and is kept; appearance as a veto
  on the IoU round breaks tracks wherever a half-hidden object's crop looks unlike its gallery; a gate on all
  four box coordinates rejects an object coming out from behind an occluder, whose last box was its visible
  part. Each made more ID switches than this order (18-26 against 13 over 12 sequences; SORT 37) and a lower
  HOTA, with public detections and with a trained detector's alike.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.track import kalman
from cnnkit.track.association import gallery_distance, iou_matrix, linear_assignment, mask_classes
from cnnkit.track.state import Detections, TrackerOptions, TrackSet, checked_detections, new_tracks

BYTETRACK_LOW_SCORE_IOU = 0.5  # ByteTrack's second association: IoU >= 0.5 for low-score detections
# DeepSORT: a track missed for more frames than this continues by IoU only with a detection that looks like it.
# A gap of a frame or two is a missed detection and the track is where it was predicted; after a longer one the
# prediction is a guess, and two objects that swapped places behind an occluder would swap ids by IoU. On the
# tuning sequences' public detections 2 made as few ID switches as any (0: 17, 1: 15, 2 and 5: 13); with a
# trained detector's boxes the four were within 7 of each other's 118-125.
REID_AFTER_MISSES = 2
NO_MATCHES = np.empty((0, 2), dtype=np.int64)

# A policy: (tracks after prediction, detections, options) -> (matches [P, 2] as (track row, detection index),
# indices of the detections that start tracks)
Policy = Callable[[TrackSet, Detections, TrackerOptions], tuple[np.ndarray, np.ndarray]]


def _iou_stage(tracks: TrackSet, boxes: np.ndarray, rows: np.ndarray, dets: Detections, cols: np.ndarray,
               min_iou: float, class_aware: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match track rows ``rows`` (predicted ``boxes``) to detections ``cols`` by IoU >= min_iou -> (matches [P, 2],
    unmatched rows, unmatched cols), all as indices into the full track set and detections."""
    cost = 1.0 - iou_matrix(boxes[rows], dets.boxes[cols])
    if class_aware:
        cost = mask_classes(cost, tracks.classes[rows], dets.classes[cols])
    m, free_rows, free_cols = linear_assignment(cost, 1.0 - min_iou)
    return np.stack([rows[m[:, 0]], cols[m[:, 1]]], axis=1), rows[free_rows], cols[free_cols]


def associate_sort(tracks: TrackSet, dets: Detections, o: TrackerOptions) -> tuple[np.ndarray, np.ndarray]:
    keep = np.flatnonzero(dets.scores >= o.det_threshold)
    boxes = tracks.predicted_boxes()
    matches, _, free = _iou_stage(tracks, boxes, np.arange(len(tracks)), dets, keep, o.iou_threshold, o.class_aware)
    return matches, free


def associate_bytetrack(tracks: TrackSet, dets: Detections, o: TrackerOptions) -> tuple[np.ndarray, np.ndarray]:
    high = np.flatnonzero(dets.scores >= o.det_threshold)
    low = np.flatnonzero((dets.scores >= o.low_threshold) & (dets.scores < o.det_threshold))
    boxes = tracks.predicted_boxes()
    # 1) high-score detections <-> confirmed tracks, tracked and lost
    m1, left, high_left = _iou_stage(tracks, boxes, np.flatnonzero(tracks.confirmed), dets, high,
                                     o.iou_threshold, o.class_aware)
    # 2) low-score detections <-> the confirmed tracks still unmatched that were tracked last frame
    m2, _, _ = _iou_stage(tracks, boxes, left[tracks.misses[left] == 0], dets, low,
                          BYTETRACK_LOW_SCORE_IOU, o.class_aware)
    # 3) high-score detections left <-> unconfirmed tracks (which are deleted when missed)
    m3, _, high_left = _iou_stage(tracks, boxes, np.flatnonzero(~tracks.confirmed), dets, high_left,
                                  o.iou_threshold, o.class_aware)
    # 4) the confident leftovers start tracks
    return np.concatenate([m1, m2, m3]), high_left[dets.scores[high_left] >= o.new_track_threshold]


def _deepsort_iou_stage(tracks: TrackSet, boxes: np.ndarray, rows: np.ndarray, dets: Detections, cols: np.ndarray,
                        o: TrackerOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeepSORT's first round: IoU as SORT, except that a track missed for more than REID_AFTER_MISSES frames
    needs the detection to look like it (within max_cosine_distance) as well."""
    if len(rows) == 0 or len(cols) == 0:
        return NO_MATCHES, rows, cols
    cost = 1.0 - iou_matrix(boxes[rows], dets.boxes[cols])
    long_lost = np.flatnonzero(tracks.misses[rows] > REID_AFTER_MISSES)
    if len(long_lost):
        appearance = gallery_distance([tracks.gallery(i) for i in rows[long_lost]], dets.embeddings[cols], normalised=True)
        cost[long_lost] = np.where(appearance > o.max_cosine_distance, np.inf, cost[long_lost])
    if o.class_aware:
        cost = mask_classes(cost, tracks.classes[rows], dets.classes[cols])
    m, free_rows, free_cols = linear_assignment(cost, 1.0 - o.iou_threshold)
    return np.stack([rows[m[:, 0]], cols[m[:, 1]]], axis=1), rows[free_rows], cols[free_cols]


def _lost_stage(tracks: TrackSet, boxes: np.ndarray, rows: np.ndarray, dets: Detections, cols: np.ndarray,
                o: TrackerOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeepSORT's re-identification, for the confirmed tracks the IoU round left unmatched: a detection continues
    such a track when it looks like it (cosine distance to the track's gallery within the appearance gate) and is
    where the track could be (its centre inside the Kalman filter's 95 % Mahalanobis gate on position, or its box
    overlapping the predicted one by IoU >= iou_threshold); the cost is the smaller of the appearance and the IoU
    distance (BoT-SORT's fusion). The gate looks at the centre only (Deep SORT's ``only_position``): the box an
    occluded object had when it was last seen is its visible part, not the whole object that comes back."""
    if len(rows) == 0 or len(cols) == 0:
        return NO_MATCHES, rows, cols
    appearance = gallery_distance([tracks.gallery(i) for i in rows], dets.embeddings[cols], normalised=True)
    motion = kalman.gating_distance(tracks.mean[rows], tracks.cov[rows], kalman.xyxy_to_xyah(dets.boxes[cols]),
                                    only_position=True)
    overlap = 1.0 - iou_matrix(boxes[rows], dets.boxes[cols])
    overlaps = overlap <= 1.0 - o.iou_threshold
    cost = np.where(motion <= kalman.chi2_gate(2), appearance, np.inf)
    cost = np.minimum(cost, np.where(overlaps, overlap, np.inf))
    cost[appearance > o.max_cosine_distance] = np.inf  # what looks like another object never continues the track
    if o.class_aware:
        cost = mask_classes(cost, tracks.classes[rows], dets.classes[cols])
    m, free_rows, free_cols = linear_assignment(cost, 1.0)
    return np.stack([rows[m[:, 0]], cols[m[:, 1]]], axis=1), rows[free_rows], cols[free_cols]


def associate_deepsort(tracks: TrackSet, dets: Detections, o: TrackerOptions) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.flatnonzero(dets.scores >= o.det_threshold)
    boxes = tracks.predicted_boxes()
    confirmed = tracks.confirmed
    # 1) confirmed tracks, tracked and lost, by IoU as SORT (long-lost ones only with a look-alike)
    m1, left_rows, left = _deepsort_iou_stage(tracks, boxes, np.flatnonzero(confirmed), dets, candidates, o)
    # 2) the confirmed tracks left: re-identified by appearance within the motion gate, in Deep SORT's matching
    #    cascade (the most recently seen first, so a track lost long ago, whose gate has grown wide, cannot take
    #    the detection of one lost a moment ago)
    m2 = [NO_MATCHES]
    for misses in np.unique(tracks.misses[left_rows]):
        m, _, left = _lost_stage(tracks, boxes, left_rows[tracks.misses[left_rows] == misses], dets, left, o)
        m2.append(m)
    # 3) unconfirmed tracks: IoU; what is left starts tracks
    m3, _, births = _iou_stage(tracks, boxes, np.flatnonzero(~confirmed), dets, left, o.iou_threshold, o.class_aware)
    return np.concatenate([m1, *m2, m3]), births


@dataclass(frozen=True)
class Algorithm:
    associate: Policy
    needs_appearance: bool       # Detections.embeddings must be filled
    drop_missed_tentative: bool  # an unconfirmed track missed once is deleted


ALGORITHMS = {
    "sort": Algorithm(associate_sort, needs_appearance=False, drop_missed_tentative=True),
    "deepsort": Algorithm(associate_deepsort, needs_appearance=True, drop_missed_tentative=True),
    "bytetrack": Algorithm(associate_bytetrack, needs_appearance=False, drop_missed_tentative=True),
}


class Tracker:
    """A multi-object tracker; build it with ``make_tracker``. ``needs_appearance`` says whether ``update``
    needs ``Detections.embeddings``."""

    def __init__(self, name: str, algorithm: Algorithm, options: TrackerOptions):
        self.name = name
        self.algorithm = algorithm
        self.options = options
        self.needs_appearance = algorithm.needs_appearance
        self.reset()

    def __repr__(self) -> str:
        return f"Tracker({self.name!r}, {self.options})"

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new sequence)."""
        self.tracks = TrackSet()
        self.frame = 0
        self.next_id = 1

    def update(self, dets: Detections, warp: np.ndarray | None = None) -> np.ndarray:
        """Track one frame -> [M, 7] float rows (x1, y1, x2, y2, track_id, score, class), xyxy pixels, of the
        confirmed tracks matched this frame, in id order. ``warp``: 2x3 affine from the previous frame's
        pixels to this one's (``cmc.estimate_camera_motion``), or None for a static camera."""
        o, t = self.options, self.tracks
        dets = checked_detections(dets, self.needs_appearance)
        self.frame += 1
        if len(t):
            if warp is not None:  # 1)
                t.mean, t.cov = kalman.apply_affine(t.mean, t.cov, _checked_warp(warp))
            t.mean[t.misses > 0, 7] = 0.0  # 2)
            t.mean, t.cov = kalman.predict(t.mean, t.cov)
        matches, births = self.algorithm.associate(t, dets, o)  # 3)
        self._apply_matches(matches, dets)  # 4)
        matched = np.zeros(len(t), dtype=bool)
        matched[matches[:, 0]] = True
        t.misses[~matched] += 1
        dead = t.misses > o.max_age
        if self.algorithm.drop_missed_tentative:
            dead |= ~matched & ~t.confirmed
        if dead.any():
            t.keep(~dead)
        if len(births):  # 5)
            confirmed = self.frame <= o.min_hits or o.min_hits <= 1
            t.extend(new_tracks(dets, births, self.next_id, confirmed, o.gallery_size))
            self.next_id += len(births)
        shown = (t.misses == 0) & t.confirmed
        return np.column_stack([t.boxes[shown], t.ids[shown], t.scores[shown], t.classes[shown]]).astype(np.float64)

    def _apply_matches(self, matches: np.ndarray, dets: Detections) -> None:
        t, (rows, cols) = self.tracks, matches.T
        if len(rows) == 0:
            return
        t.mean[rows], t.cov[rows] = kalman.update(t.mean[rows], t.cov[rows], kalman.xyxy_to_xyah(dets.boxes[cols]))
        t.hits[rows] += 1
        t.misses[rows] = 0
        t.confirmed[rows] |= t.hits[rows] >= self.options.min_hits
        t.boxes[rows], t.scores[rows], t.classes[rows] = dets.boxes[cols], dets.scores[cols], dets.classes[cols]
        if dets.embeddings is not None:
            t.add_features(rows, dets.embeddings[cols])


def _checked_warp(warp: np.ndarray) -> np.ndarray:
    warp = np.asarray(warp, dtype=np.float64)
    if warp.shape != (2, 3) or not np.isfinite(warp).all():
        raise CnnkitError(f"camera-motion warp of shape {warp.shape} is not a finite 2x3 affine matrix",
                          "pass cmc.estimate_camera_motion's result, or None for a static camera")
    return warp


def make_tracker(name: str, options: TrackerOptions | None = None) -> Tracker:
    """A tracker by name: "sort", "deepsort" or "bytetrack" (a CnnkitError lists them for any other name)."""
    key = str(name).lower()
    if key not in ALGORITHMS:
        close = difflib.get_close_matches(key, ALGORITHMS, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + "valid trackers: " + ", ".join(ALGORITHMS)
        raise CnnkitError(f"unknown tracker '{name}'", hint)
    options = dataclasses.replace(options) if options is not None else TrackerOptions()
    return Tracker(key, ALGORITHMS[key], options.check())
