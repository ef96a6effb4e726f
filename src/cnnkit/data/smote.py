"""--balance smote: SMOTE (Chawla et al. 2002, through imbalanced-learn) on the pooled features of a
frozen backbone, for training the classifier head alone.

Why features and not pixels: SMOTE puts each new sample on the segment between a sample and one of
its k nearest same-class neighbours. Between two photographs that segment is a ghosted double
exposure, not an image of the class; in the feature space of a trained backbone a class is compact
and close to convex, so points between two of its members are plausible members too. Re-training
only the classifier on class-balanced data over a frozen representation is the decoupled recipe of
Kang et al. (ICLR 2020, "classifier re-training"). The features are extracted once, without
augmentation, so --augment, MixUp and CutMix have nothing to act on.

    train_set = smote_features(model, samples, class_names, eval_transform, batch=64, workers=2, device=dev, seed=0)
    train_set[i]  # (feature [D] float32, label, i): the real images first, then the synthetic points
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from cnnkit.console import console, warn
from cnnkit.data.loaders import ImageDataset
from cnnkit.engine.transfer import classifier
from cnnkit.errors import CnnkitError

MAX_NEIGHBOURS = 5  # SMOTE's usual k (and imbalanced-learn's default)


@dataclass
class Balanced:
    features: np.ndarray  # [M, D] float32: the real rows first, in their order, then the new ones
    labels: np.ndarray    # [M] int64
    k: int                # neighbours SMOTE picked among; 0 when no class was interpolated
    repeated: list[int]   # classes with a single sample, topped up by repeating it


def smote_balance(features: np.ndarray, labels: np.ndarray, seed: int = 0, max_k: int = MAX_NEIGHBOURS) -> Balanced:
    """Every class present topped up to the largest one's count. Classes of two or more samples get
    SMOTE points with k = min(max_k, their smallest count - 1); a class of one sample has no neighbour
    to interpolate towards, so that sample is repeated (RandomOverSampler) and the caller warns."""
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    counts = np.bincount(labels)
    target = int(counts.max()) if len(counts) else 0
    short = [int(c) for c in np.flatnonzero(counts) if counts[c] < target]
    interpolated = [c for c in short if counts[c] >= 2]
    repeated = [c for c in short if counts[c] == 1]
    k = 0
    if interpolated:
        k = int(min(max_k, counts[interpolated].min() - 1))
        smote = SMOTE(sampling_strategy={c: target for c in interpolated}, k_neighbors=k, random_state=seed)
        features, labels = smote.fit_resample(features, labels)
    if repeated:
        features, labels = RandomOverSampler(sampling_strategy={c: target for c in repeated}, random_state=seed).fit_resample(features, labels)
    return Balanced(np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.int64), k, repeated)


class FeatureDataset(Dataset):
    """(feature [D] float32, label, index) items: shaped like ImageDataset's, so the loader, the collate
    function and the engine treat them alike."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.features[index], int(self.labels[index]), index


def smote_features(model: nn.Module, samples: list[tuple[Path, int]], class_names: list[str], transform: Callable,
                   batch: int, workers: int, device: torch.device, seed: int, intensity: Any = None) -> FeatureDataset:
    """The training split as SMOTE-balanced pooled features of ``model``'s backbone (``transform``:
    the evaluation one; the features are computed once). Unreadable images are skipped with a warning."""
    from cnnkit.tasks.classify.features import extract_features

    arrays = extract_features(model, [path for path, _ in samples], [label for _, label in samples], transform,
                              batch, workers, device, intensity=intensity)
    _check_head_reads_features(model, arrays, transform, device, intensity)
    balanced = smote_balance(arrays["features"], arrays["labels"], seed)
    per_class = int(np.bincount(balanced.labels).max())
    for c in balanced.repeated:
        warn(f"--balance smote: class '{class_names[c]}' has 1 training image, nothing to interpolate with; "
             f"it is repeated {per_class} times instead")
    console.print(f"smote: {len(arrays['labels'])} -> {len(balanced.labels)} training features "
                  f"(class counts {per_class} each), k={balanced.k}")
    return FeatureDataset(balanced.features, balanced.labels)


@torch.no_grad()
def _check_head_reads_features(model: nn.Module, arrays: dict[str, np.ndarray], transform: Callable, device: torch.device,
                               intensity: Any = None) -> None:
    """The head on the extracted features of the first image must give the model's own logits for it;
    otherwise training the head on features would train something the model never runs (a head with
    layers of its own, say)."""
    image = ImageDataset([(Path(arrays["files"][0]), -1)], transform, intensity)[0][0]
    logits = model.to(device).eval()(image[None].to(device)).float()
    from_features = classifier(model)(torch.from_numpy(arrays["features"][:1]).to(device)).float()
    if logits.shape != from_features.shape or not torch.allclose(logits, from_features, rtol=1e-3, atol=1e-4):
        raise CnnkitError(f"--balance smote: the classifier of {type(model).__name__} is not one layer on its pooled features",
                          "use --balance oversample or weights with this model")
