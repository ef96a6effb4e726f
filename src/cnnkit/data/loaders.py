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
    matched back to files after skipped samples."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable | None = None):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        path, label = self.samples[index]
        try:
            image = load_image(path)
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
