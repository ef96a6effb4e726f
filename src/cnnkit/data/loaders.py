"""Datasets over (path, label) samples, the collate function that skips unreadable images, and a
class-balanced sampler for metric learning."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

from cnnkit.console import warn
from cnnkit.data.images import load_image
from cnnkit.errors import CnnkitError


class ImageDataset(Dataset):
    """(image tensor, label, index) for each (path, label) sample; None for a file that cannot be
    decoded, so one corrupt image costs one sample, never the epoch. The index lets outputs be
    matched back to files after skipped samples. ``intensity``: how images deeper than 8 bits (and DICOM)
    are scaled, the model's IntensitySpec (None: auto; see data/intensity.py)."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable | None = None, intensity: Any = None):
        self.samples = samples
        self.transform = transform
        self.intensity = intensity

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        path, label = self.samples[index]
        try:
            image = load_image(path, self.intensity)
        except CnnkitError as exc:
            warn(f"{exc.message} (skipped)", once_key=str(path))
            return None
        return (self.transform(image) if self.transform else image), label, index


def collate_skipping_none(batch: list[Any]) -> Any:
    """default_collate over the readable samples; None when none of the batch could be read."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


def labels_tensor(samples: list[tuple[Path, int]]) -> torch.Tensor:
    return torch.tensor([label for _, label in samples])


class PerClassSampler(Sampler[int]):
    """Sample indices in groups of ``per_class`` images of one class, groups in random order, so a
    batch of B holds B / per_class classes with ``per_class`` images each: metric-learning losses
    need positives in every batch, which random batches over many classes rarely give.

    An epoch visits every image once (a class's last group is topped up with its own images).
    The order depends only on (seed, epoch), like DistributedSampler's, and under DDP each rank
    takes every world-th group, all ranks the same number.
    """

    def __init__(self, labels: list[int], per_class: int, seed: int = 0, rank: int = 0, world: int = 1):
        self.labels = np.asarray(labels)
        self.per_class, self.seed, self.rank, self.world = per_class, seed, rank, world
        self.epoch = 0
        counts = np.bincount(self.labels) if len(self.labels) else np.zeros(0, int)
        self.n_groups = int(sum(-(-int(c) // per_class) for c in counts if c)) // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_groups * self.per_class

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = []
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            short = -len(members) % self.per_class
            if short:
                members = np.concatenate([members, rng.choice(members, short, replace=short > len(members))])
            groups += list(members.reshape(-1, self.per_class))
        order = rng.permutation(len(groups))
        mine = [groups[i] for i in order[self.rank::self.world][: self.n_groups]]
        return iter(np.concatenate(mine).tolist() if mine else [])


def class_weights(labels: list[int], n_classes: int, method: str = "inverse", beta: float = 0.999) -> np.ndarray:
    """Per-class loss weights, mean 1 over the classes present (absent classes weigh 0).

    ``inverse``: 1 / count. ``effective``: the inverse of the effective number of samples,
    (1 - beta) / (1 - beta^count) (Cui et al., CVPR 2019), which flattens the inverse for large classes.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    if method == "inverse":
        weights[present] = 1.0 / counts[present]
    elif method == "effective":
        weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    else:
        raise CnnkitError(f"unknown class-weight method '{method}'", "choose inverse or effective")
    return weights * present.sum() / weights.sum()


class BalancedSampler(Sampler[int]):
    """A per-epoch class mix with every class equally often: ``oversample`` draws each class up to the
    largest one's count (its own images first, the rest with replacement), ``undersample`` down to
    the smallest one's (without replacement; a different subset every epoch). Exact counts rather than
    a WeightedRandomSampler's expected ones; the order depends only on (seed, epoch); under DDP each
    rank takes every world-th index, all ranks the same number."""

    def __init__(self, labels: list[int], mode: str, seed: int = 0, rank: int = 0, world: int = 1):
        if mode not in ("oversample", "undersample"):
            raise CnnkitError(f"unknown balancing mode '{mode}'", "choose oversample or undersample")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.mode, self.seed, self.rank, self.world, self.epoch = mode, seed, rank, world, 0
        counts = np.bincount(self.labels)
        counts = counts[counts > 0]
        self.per_class = int(counts.max() if mode == "oversample" else counts.min()) if len(counts) else 0
        self.total = self.per_class * len(counts) // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        chosen = []
        for label in np.unique(self.labels):
            members = np.flatnonzero(self.labels == label)
            if self.mode == "undersample":
                chosen.append(rng.choice(members, self.per_class, replace=False))
            else:
                extra = rng.choice(members, self.per_class - len(members), replace=True)
                chosen.append(np.concatenate([members, extra]))
        order = rng.permutation(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
        return iter(order[self.rank::self.world][: self.total].tolist())
