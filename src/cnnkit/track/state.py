"""What every tracker shares: the per-frame input (``Detections``), the options, and the tracks themselves
as a struct of arrays (``TrackSet``: one row per track, Kalman means and covariances stacked) so that
prediction, gating and updates run on all tracks at once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.track import kalman


@dataclass
class Detections:
    """One frame's detections."""

    boxes: np.ndarray                     # [K, 4] float xyxy pixels
    scores: np.ndarray                    # [K] confidence
    classes: np.ndarray                   # [K] int class index (-1 when unknown)
    embeddings: np.ndarray | None = None  # [K, D] float, L2-normalised appearance features (DeepSORT; normalised
                                          # again on input, so raw features work too)

    @classmethod
    def empty(cls) -> "Detections":
        """A frame with no detections."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class TrackerOptions:
    """The trackers' settings; field names are the CLI option names."""

    max_age: int = 30                 # frames a lost track is kept (and can be re-identified) before it is deleted
    min_hits: int = 2                 # matched detections (the first included) before a track is reported; every
                                      # track born in the first min_hits frames is reported at once, as in SORT.
                                      # 2 is ByteTrack's rule (a new track is activated by its second match); on
                                      # the train/ sequences of the synthetic benchmark it beat SORT's 3 for
                                      # both SORT and ByteTrack (docs/tracking.md)
    iou_threshold: float = 0.3        # minimum IoU for an IoU match
    det_threshold: float = 0.4        # SORT/DeepSORT: detections below are ignored; ByteTrack: the high/low split.
                                      # With unconfirmed tracks deleted at their first miss, 0.3 was best on the
                                      # synthetic benchmark's noisy public detections (false positives that come
                                      # and go) and 0.5 on a trained yolo_n's (false positives that persist); 0.4 is
                                      # within 0.008 HOTA of the best on both, for all three trackers (docs/tracking.md)
    low_threshold: float = 0.1        # ByteTrack: detections below are dropped entirely
    new_track_threshold: float = 0.5  # ByteTrack: minimum score of an unmatched detection to start a track
                                      # (det_threshold + 0.1, ByteTrack's rule)
    max_cosine_distance: float = 0.3  # DeepSORT: appearance gate (cosine distance to the nearest gallery feature)
    gallery_size: int = 50            # DeepSORT: appearance features kept per track (the most recent)
    class_aware: bool = True          # never match a detection to a track of another class (-1 matches any)

    def check(self) -> "TrackerOptions":
        """Self, or a CnnkitError naming the first option out of range."""
        ints = {"max_age": 0, "min_hits": 1, "gallery_size": 1}
        for name, low in ints.items():
            if int(getattr(self, name)) < low:
                raise CnnkitError(f"tracker option {name}={getattr(self, name)} is below {low}", f"use {name} >= {low}")
        unit = ("iou_threshold", "det_threshold", "low_threshold", "new_track_threshold")
        for name in unit:
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise CnnkitError(f"tracker option {name}={getattr(self, name)} is outside [0, 1]", "use a value in [0, 1]")
        if not 0.0 <= self.max_cosine_distance <= 2.0:
            raise CnnkitError(f"tracker option max_cosine_distance={self.max_cosine_distance} is outside [0, 2]",
                              "cosine distances lie in [0, 2]")
        return self


def checked_detections(dets: Detections, needs_appearance: bool) -> Detections:
    """``dets`` as float64/int64 arrays of consistent length, or a CnnkitError naming the mismatch."""
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    k = len(boxes)
    scores = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    classes = np.asarray(dets.classes).reshape(-1).astype(np.int64)
    if len(scores) != k or len(classes) != k:
        raise CnnkitError(f"detections: {k} boxes but {len(scores)} scores and {len(classes)} classes",
                          "give one score and one class per box")
    if not np.isfinite(boxes).all():
        bad = int(np.flatnonzero(~np.isfinite(boxes).all(axis=1))[0])
        raise CnnkitError(f"detections: box {bad} has a nan or infinite coordinate", "drop or clip it before tracking")
    emb = dets.embeddings if needs_appearance else None  # the others never look at features
    if emb is not None:
        emb = np.asarray(emb, dtype=np.float64)
        if k == 0:
            emb = np.zeros((0, emb.shape[-1] if emb.ndim == 2 else 0))
        elif emb.ndim != 2 or len(emb) != k:
            raise CnnkitError(f"detections: {k} boxes but embeddings of shape {emb.shape}", "give one [D] feature per box")
        # float32 halves the gallery memory and its matrix product; cosine distances need no more precision
        emb = (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    elif needs_appearance and k:
        raise CnnkitError("deepsort needs appearance features: Detections.embeddings is None",
                          "fill it with an embedding model's features of each box, or use sort or bytetrack")
    return Detections(boxes, scores, classes, emb)


@dataclass
class TrackSet:
    """All live tracks, one row each. ``misses`` counts frames since the last match (0: matched last frame,
    i.e. "tracked"; > 0: "lost"); ``boxes``/``scores`` are those of the last matched detection."""

    mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 8, 8)))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    misses: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    confirmed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    n_feats: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # features ever added
    galleries: list = field(default_factory=list)  # per track: a [gallery_size, D] ring buffer, or None

    def __len__(self) -> int:
        return len(self.ids)

    def _arrays(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "galleries"]

    def keep(self, mask: np.ndarray) -> None:
        """Drop the rows where ``mask`` is False."""
        for name in self._arrays():
            setattr(self, name, getattr(self, name)[mask])
        self.galleries = [g for g, k in zip(self.galleries, mask) if k]

    def extend(self, other: "TrackSet") -> None:
        """Append ``other``'s rows."""
        for name in self._arrays():
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        self.galleries += other.galleries

    def predicted_boxes(self) -> np.ndarray:
        """[N, 4] xyxy of the current Kalman means."""
        return kalman.xyah_to_xyxy(self.mean)

    def gallery(self, i: int) -> np.ndarray:
        """Track i's stored features [min(n_feats, gallery_size), D] (ring order does not matter for a min)."""
        return self.galleries[i][: self.n_feats[i]]

    def add_features(self, rows: np.ndarray, feats: np.ndarray) -> None:
        """Store one feature per row (the oldest is overwritten once a gallery is full)."""
        for i, f in zip(rows, feats):
            buf = self.galleries[i]
            buf[self.n_feats[i] % len(buf)] = f
            self.n_feats[i] += 1


def new_tracks(dets: Detections, idx: np.ndarray, first_id: int, confirmed: bool, gallery_size: int) -> TrackSet:
    """Tracks started from detections ``idx``, with ids first_id, first_id + 1, ..."""
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(dets.boxes[idx]))
    n = len(idx)
    tracks = TrackSet(mean=mean, cov=cov, ids=np.arange(first_id, first_id + n, dtype=np.int64),
                      hits=np.ones(n, dtype=np.int64), misses=np.zeros(n, dtype=np.int64),
                      confirmed=np.full(n, confirmed), classes=dets.classes[idx].copy(),
                      scores=dets.scores[idx].copy(), boxes=dets.boxes[idx].copy(),
                      n_feats=np.zeros(n, dtype=np.int64))
    if dets.embeddings is None:
        tracks.galleries = [None] * n
    else:
        tracks.galleries = [np.empty((gallery_size, dets.embeddings.shape[1]), np.float32) for _ in range(n)]
        tracks.add_features(np.arange(n), dets.embeddings[idx])
    return tracks
