"""Datasets over (path, label) samples and the collate function that skips unreadable images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, default_collate

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
