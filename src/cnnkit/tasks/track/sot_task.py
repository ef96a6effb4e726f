"""Single-object tracking's plain functions: where training pairs come from (``load_pair_data``: ``Track``s, one
object's boxes over frames, from MOTChallenge sequences or a detection dataset; ``SotSequence``s, the objects to
track after training), the pairs themselves (``PairSet``: exemplar crop, search crop, SiamFC's label map), the
logistic loss and the engine's task (``SotTask``).

    data = load_pair_data(cfg, Path("data/mot"))           # data.splits["train"]: [Track], data.sequences["test"]
    pairs = PairSet(data.splits["train"], net.spec, response=9, count=4000, seed=0)
    exemplar, search, label, weight, offset = pairs[0]     # [3, 63, 63], [3, 127, 127], [1, 9, 9] x2, [2]
    loss = siamfc_loss(net(exemplar[None], search[None]), label[None], weight[None])

The label map (SiamFC): response cells within ``radius`` search-crop pixels of the target's centre are
positives, the rest negatives, each class weighted to half of the loss (balanced), summed over the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.data import mot
from cnnkit.errors import CnnkitError
from cnnkit.track.sot import context_side, crop_square, to_tensor


@dataclass
class Track:
    """One object over consecutive frames: ``boxes`` [N, 4] xywh pixels per frame, NaN where the box is not
    usable (absent, too hidden, too small). A detection image is a track of one frame (``still``). ``group``: the
    sequence (or image) it comes from; pairs are drawn sequence by sequence."""

    name: str
    frames: list[Path]
    boxes: np.ndarray
    still: bool = False
    group: str = ""

    @property
    def usable(self) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.boxes).all(axis=1))


@dataclass
class PairOptions:
    """How pairs are drawn and augmented (SotConfig's fields of the same names)."""

    max_gap: int = 100
    context: float = 0.5
    radius: float = 16.0
    shift: float = 24.0
    scale_jitter: float = 0.05
    color: float = 0.2
    augment: bool = True
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


# ---------------------------------------------------------------------------------------- pair sources

@dataclass
class SotSequence:
    """One object to track: its frames and ground-truth boxes [N, 4] xywh (NaN where it has none); the first
    row is the initial box."""

    name: str
    frames: list[Path]
    boxes: np.ndarray
    fps: float = mot.DEFAULT_FPS


@dataclass
class PairData:
    """What a training run reads: pair sources per split (``splits``: train, val) and the objects to track after
    training (``sequences``: val, test; none for detection data)."""

    root: Path
    splits: dict[str, list[Track]]
    sequences: dict[str, list[SotSequence]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=lambda: ["target"])


def _gt_objects(seq: mot.MotSequence) -> dict[int, np.ndarray]:
    """{id: [K, 10] gt rows} of a sequence, rows with conf 0 (not to be considered) left out."""
    rows = mot.read_mot_file(seq.gt, "gt", length=seq.length)
    rows = rows[rows[:, 6] != 0]
    return {int(i): rows[rows[:, 1] == i] for i in np.unique(rows[:, 1])}


def _span(seq: mot.MotSequence, rows: np.ndarray, keep: np.ndarray | None = None) -> tuple[list[Path], np.ndarray]:
    """The frames from an object's first to its last row and its boxes on them (NaN where no row, or not kept)."""
    first, last = int(rows[:, 0].min()), int(rows[:, 0].max())
    boxes = np.full((last - first + 1, 4), np.nan)
    kept = rows if keep is None else rows[keep]
    boxes[kept[:, 0].astype(int) - first] = kept[:, 2:6]
    return seq.frames[first - 1:last], boxes


def sequence_tracks(seq: mot.MotSequence, min_visibility: float = 0.5, min_size: float = 8.0) -> list[Track]:
    """A pair source per id of a sequence with gt: its boxes at least ``min_size`` pixels wide and high and at
    least ``min_visibility`` seen (MOTChallenge's visibility column; -1, unknown, counts as seen)."""
    tracks = []
    for track_id, rows in _gt_objects(seq).items():
        visibility = np.where(rows[:, 8] < 0, 1.0, rows[:, 8])
        keep = (rows[:, 4] >= min_size) & (rows[:, 5] >= min_size) & (visibility >= min_visibility)
        if keep.any():
            frames, boxes = _span(seq, rows, keep)
            tracks.append(Track(f"{seq.name}:{track_id}", frames, boxes, group=seq.name))
    return tracks


def sot_sequences(seq: mot.MotSequence, min_frames: int = 2) -> list[SotSequence]:
    """The objects of a sequence with gt to track: the sequence itself when its gt has one id, else each id
    from its first to its last frame (``SEQ-idN``), when that spans at least ``min_frames`` frames."""
    objects = _gt_objects(seq)
    found = []
    for track_id, rows in objects.items():
        frames, boxes = _span(seq, rows)
        if len(frames) >= min_frames:
            name = seq.name if len(objects) == 1 else f"{seq.name}-id{track_id}"
            found.append(SotSequence(name, frames, boxes, seq.fps))
    return found


def require_gt(sequences: list[mot.MotSequence], root: Path) -> list[mot.MotSequence]:
    """``sequences``, or one line naming the first without gt/gt.txt."""
    missing = [s.name for s in sequences if s.gt is None]
    if missing:
        raise CnnkitError(f"{root}: sequence {missing[0]} has no gt/gt.txt", "single-object tracking trains and scores "
                          "on ground truth: SEQ/gt/gt.txt (one id for a single-object sequence)")
    return sequences


def load_pair_data(cfg, root: Path) -> PairData:
    """Pair sources from ``root``: a detection dataset (COCO, YOLO, VOC: its train images; val from its val split,
    else ``val_split`` of the images) or MOTChallenge sequences (ROOT/train, ROOT/val, ROOT/test, or a folder of
    sequences; without val/, ``val_split`` of the training sequences, at least one, is held out)."""
    from cnnkit.data.detection import detect_layout, load_detection

    rng = np.random.default_rng(cfg.seed)
    if detect_layout(root) is not None:
        data = load_detection(root)
        train_images, val_images = data.splits.get("train", []), data.splits.get("val", [])
        if not val_images and len(train_images) >= 2:  # held out image by image: no image in both
            order = rng.permutation(len(train_images))
            n_val = min(max(1, int(len(train_images) * cfg.val_split)), len(train_images) - 1)
            val_images, train_images = [train_images[k] for k in order[:n_val]], [train_images[k] for k in order[n_val:]]

        def boxes(images) -> list[Track]:
            return [Track(f"{image.path.name}:{k}", [image.path], np.array([[x1, y1, x2 - x1, y2 - y1]]), still=True,
                          group=str(image.path))
                    for image in images for k, (x1, y1, x2, y2) in enumerate(image.boxes)
                    if x2 - x1 >= cfg.min_size and y2 - y1 >= cfg.min_size]

        train, val = boxes(train_images), boxes(val_images)
        if not train or not val:
            raise CnnkitError(f"{root}: too few boxes of at least {cfg.min_size:g} px for training and validation pairs")
        return PairData(root, {"train": train, "val": val})
    splits = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if "train" in splits:
        train = require_gt(mot.find_sequences(root, split="train"), root)
        val = require_gt(mot.find_sequences(root, split="val"), root) if "val" in splits else []
        test = require_gt(mot.find_sequences(root, split="test"), root) if "test" in splits else []
    else:
        train, val, test = require_gt(mot.find_sequences(root), root), [], []
    if not val:
        if len(train) < 2:
            raise CnnkitError(f"{root}: one training sequence, and no val/ split to validate on",
                              "add ROOT/val/SEQ, or give two or more training sequences")
        order = rng.permutation(len(train))
        n_val = min(max(1, round(len(train) * cfg.val_split)), len(train) - 1)
        val, train = [train[k] for k in sorted(order[:n_val])], [train[k] for k in sorted(order[n_val:])]

    def tracks(sequences: list[mot.MotSequence]) -> list[Track]:
        return [t for s in sequences for t in sequence_tracks(s, cfg.min_visibility, cfg.min_size)]

    splits_tracks = {"train": tracks(train), "val": tracks(val)}
    for split, found in splits_tracks.items():
        if not found:
            raise CnnkitError(f"{root}: no {split} object has a box of at least {cfg.min_size:g} px that is "
                              f"{cfg.min_visibility:g} visible", "lower --min-size or --min-visibility")
    sequences = {"val": [o for s in val for o in sot_sequences(s)], "test": [o for s in test for o in sot_sequences(s)]}
    return PairData(root, splits_tracks, sequences)


# --------------------------------------------------------------------------------------------- pairs

def label_map(response: int, stride: int, offset: tuple[float, float], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels, weights), both [response, response] float32: 1 where the cell's position in the search crop
    (stride pixels a cell, 0 at the centre cell) lies within ``radius`` of ``offset`` (the target's centre,
    x and y pixels off the crop's centre), else 0; positives and negatives each weigh 1/2 in total."""
    cells = (np.arange(response) - (response - 1) / 2) * stride
    distance = np.hypot(cells[None, :] - offset[0], cells[:, None] - offset[1])
    inside = distance <= radius
    labels = inside.astype(np.float32)
    positives = inside.sum()
    negatives = labels.size - positives
    weights = np.where(inside, 0.5 / max(positives, 1), 0.5 / max(negatives, 1)).astype(np.float32)
    return labels, weights


def siamfc_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B] SiamFC's logistic loss of each pair: binary cross-entropy of the response logits [B, 1, R, R] with the
    label map, weighted (labels and weights as label_map) and summed over the map."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels, weight=weights, reduction="none")
    return loss.flatten(1).sum(dim=1)


def _read_rgb(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _jitter_colour(rng: np.random.Generator, crop: np.ndarray, amount: float) -> np.ndarray:
    """Brightness, contrast and saturation of an RGB uint8 crop, each by a factor in 1 +- ``amount``."""
    image = crop.astype(np.float32) * (1 + rng.uniform(-amount, amount))
    image = (image - image.mean()) * (1 + rng.uniform(-amount, amount)) + image.mean()
    grey = image.mean(axis=2, keepdims=True)
    image = grey + (image - grey) * (1 + rng.uniform(-amount, amount))
    return np.clip(image, 0, 255).astype(np.uint8)


class PairSet(Dataset):
    """Training (or validation) pairs from ``tracks``: ``count`` of them, each drawn from (seed, epoch, index) so
    every epoch sees new ones and a run resumes exactly (validation: from (seed, index) alone, the same every
    epoch). A pair: a sequence (``Track.group``) drawn uniformly, as SiamFC draws videos, so that a sequence of
    many objects does not crowd out those of one; an object of it, a usable frame of that object, a second frame
    of it at most ``max_gap`` away; which of the two is the exemplar at random. The exemplar is the
    context square of its box resized to ``spec.exemplar``; the search is ``spec.search / spec.exemplar`` times
    the second box's context square, the target moved ``shift`` pixels off its centre at most. Items:
    (exemplar [3, Z, Z], search [3, X, X] normalised, labels [1, R, R], weights [1, R, R], offset [2] pixels)."""

    def __init__(self, tracks: list[Track], spec: Any, response: int, count: int, seed: int = 0, train: bool = True,
                 options: PairOptions | None = None):
        self.tracks, self.spec, self.response, self.count, self.seed, self.train = tracks, spec, response, count, seed, train
        self.options = options or PairOptions()
        groups: dict[str, list[int]] = {}
        for t, track in enumerate(tracks):
            if len(track.usable):
                groups.setdefault(track.group or track.name, []).append(t)
        assert groups, "no usable boxes to draw pairs from"
        self.groups = list(groups.values())
        # the target must stay where the response map sees it, with its positives inside the map
        self.max_shift = min(self.options.shift, max(0.0, (response // 2) * spec.stride - self.options.radius))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch if self.train else 10**6, index])
        group = self.groups[int(rng.integers(len(self.groups)))]
        track = self.tracks[group[int(rng.integers(len(group)))]]
        i = int(track.usable[int(rng.integers(len(track.usable)))])
        near = track.usable[np.abs(track.usable - i) <= self.options.max_gap]
        j = int(near[int(rng.integers(len(near)))])
        if rng.random() < 0.5:
            i, j = j, i
        first = _read_rgb(track.frames[i])
        second = first if j == i else _read_rgb(track.frames[j])
        if first is None or second is None:
            return None  # collate_skipping_none drops it
        return self._pair(rng, first, track.boxes[i], second, track.boxes[j], track.still)

    def _pair(self, rng: np.random.Generator, first: np.ndarray, box_z: np.ndarray, second: np.ndarray, box_x: np.ndarray,
              still: bool):
        opt, spec = self.options, self.spec
        augment = self.train and opt.augment
        jitter = opt.scale_jitter * (2.5 if still else 1.0) if augment else 0.0
        # 1) exemplar: its context square, jittered in scale
        x, y, w, h = box_z
        z_jitter, x_jitter = rng.uniform(-jitter, jitter, 2)
        z_side = context_side(w, h, opt.context) * math.exp(z_jitter)
        exemplar = crop_square(first, (x + w / 2, y + h / 2), z_side, spec.exemplar, cv2.mean(first)[:3])
        # 2) search: the second box's context square scaled to the search side, the target moved off centre
        x, y, w, h = box_x
        x_side = context_side(w, h, opt.context) * spec.search / spec.exemplar * math.exp(x_jitter)
        offset = rng.uniform(-self.max_shift, self.max_shift, 2) if (self.max_shift > 0 and (augment or not self.train)) else np.zeros(2)
        per_pixel = x_side / spec.search
        search = crop_square(second, (x + w / 2 - offset[0] * per_pixel, y + h / 2 - offset[1] * per_pixel), x_side,
                             spec.search, cv2.mean(second)[:3])
        if augment and opt.color > 0:
            exemplar, search = _jitter_colour(rng, exemplar, opt.color), _jitter_colour(rng, search, opt.color)
        labels, weights = label_map(self.response, spec.stride, (float(offset[0]), float(offset[1])), opt.radius)
        return (to_tensor(exemplar[None], opt.mean, opt.std)[0], to_tensor(search[None], opt.mean, opt.std)[0],
                torch.from_numpy(labels)[None], torch.from_numpy(weights)[None], torch.tensor(offset, dtype=torch.float32))


def peak_offsets(logits: torch.Tensor, stride: int, up: int = 4) -> torch.Tensor:
    """[B, 2] the response peaks (x, y) in search-crop pixels off the crop's centre, read from the logits
    [B, 1, R, R] upsampled ``up`` times (bicubic)."""
    r = logits.shape[-1]
    side = r * up
    fine = F.interpolate(logits.float(), size=(side, side), mode="bicubic", align_corners=False).flatten(1)
    peak = fine.argmax(dim=1)
    rows, cols = peak // side, peak % side
    return torch.stack([cols, rows], dim=1).float().sub((side - 1) / 2).mul(stride / up)


@dataclass
class SotTask:
    """The engine's view of SiamFC training. Batches: (exemplars, searches, labels, weights, offsets) as PairSet's
    items, stacked. Validation: the loss and how far the response's peak lands from the target's centre:
    ``peak_accuracy``, the share of pairs whose peak is within one stride of it, and ``peak_auc``, which picks the
    best epoch: the mean of that share over thresholds of 1, 2, …, 2 strides pixels (OTB's precision curve for
    pairs: it keeps rewarding a sharper peak where the accuracy at one stride saturates)."""

    stride: int = 8
    primary_metric: str = "peak_auc"
    training_only: tuple = field(default=())

    def train_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        exemplars, searches, labels, weights = batch[:4]
        return {"loss": siamfc_loss(model(exemplars, searches), labels, weights).mean()}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        exemplars, searches, labels, weights, offsets = batch
        logits = model(exemplars, searches)
        error = (peak_offsets(logits, self.stride) - offsets.float()).norm(dim=1)
        return {"loss": siamfc_loss(logits, labels, weights), "peak_error": error}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if not outputs:
            return {"peak_auc": 0.0, "peak_accuracy": 0.0, "peak_error_px": 0.0, "val_loss": 0.0}
        error = outputs["peak_error"]
        thresholds = np.arange(1, 2 * self.stride + 1)
        return {"peak_auc": round(float((error[:, None] <= thresholds[None, :]).mean()), 4),
                "peak_accuracy": round(float((error <= self.stride).mean()), 4),
                "peak_error_px": round(float(error.mean()), 3), "val_loss": round(float(outputs["loss"].mean()), 4)}
