"""Self-supervised pretraining: the views, the engine's task (loss, eval step, metrics) and the frozen-feature
measures (kNN and linear top-1, the collapse check) that `ssl train` monitors and `ssl val` reports.

A training item is (views [V, 3, H, W], index); a validation item is (views, the plain image, label, role), role
1 for a query and 0 for the bank of the kNN monitor (an --eval-data image of its val and train split), -1 for a
held-out unlabelled image (its loss only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from cnnkit.augment.presets import AugmentSpec, augment_spec, check_spec
from cnnkit.config import TrainOptions
from cnnkit.console import warn
from cnnkit.data.images import load_image
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError

# SimCLR's augmentations scaled to small images (the CIFAR-10 setting of Chen et al. 2020: no blur at 32 px;
# a little here at 64 px), and SparK's crops and flips for the reconstruction methods
CONTRASTIVE_VIEWS = AugmentSpec(fliplr=0.5, crop_scale=0.2, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                                grayscale=0.2, blur=0.2)
RECONSTRUCTION_VIEWS = AugmentSpec(fliplr=0.5, crop_scale=0.5)
# the collapse check: the mean per-dimension std of the L2-normalised features, times sqrt(D) (1 when the
# features spread evenly over every direction, 0 when every image maps to one vector); below this, warn
COLLAPSE_BELOW = 0.05
ROLE_QUERY, ROLE_BANK, ROLE_HELD_OUT = 1, 0, -1


def view_spec(cfg: TrainOptions, method: str) -> AugmentSpec:
    """--augment views (the method's own) or a preset, with every per-operation option given overriding it."""
    from cnnkit.augment.presets import OPERATIONS
    from cnnkit.models.ssl import CONTRASTIVE

    overrides = {name: getattr(cfg, name, None) for name in OPERATIONS}
    if cfg.augment != "views":
        return augment_spec(cfg.augment, "embed", **overrides)
    base = CONTRASTIVE_VIEWS if method in CONTRASTIVE else RECONSTRUCTION_VIEWS
    spec = dataclasses.replace(base, **{k: float(v) for k, v in overrides.items() if v is not None})
    check_spec(spec, "embed")
    return spec


class ViewsDataset(Dataset):
    """``views`` augmented views of each image (and, for validation, the plain image, its label and role). An
    unreadable image is None (skipped by the collate function, warned once). ``fixed``: each image's views are
    drawn from a generator seeded by its index, so the validation loss compares like with like across epochs."""

    def __init__(self, samples: list[tuple[Path, int, int]], transform: Callable, views: int, plain: Callable | None = None,
                 intensity: Any = None, fixed: bool = False):
        self.samples, self.transform, self.views, self.plain = samples, transform, views, plain
        self.intensity, self.fixed = intensity, fixed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label, role = self.samples[index]
        try:
            image = load_image(path, self.intensity)
        except CnnkitError as exc:
            warn(f"{exc.message} (skipped)", once_key=str(path))
            return None
        if self.fixed:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(index)
                views = torch.stack([self.transform(image) for _ in range(self.views)])
        else:
            views = torch.stack([self.transform(image) for _ in range(self.views)])
        if self.plain is None:
            return views, index
        return views, self.plain(image), label, role


@dataclass
class SSLTask:
    """The engine's view of pretraining: the network computes its method's loss; validation reports the loss on
    held-out images, the collapse check and, with labelled --eval-data, kNN top-1."""

    method: str
    knn_k: int = 20
    labelled: bool = False  # --eval-data given: knn_top1 is the primary metric

    @property
    def primary_metric(self) -> str:
        return "knn_top1" if self.labelled else "val_score"

    @property
    def training_only(self) -> tuple[str, ...]:
        return ("teacher",) if self.method == "byol" else ()  # BYOL's momentum teacher: in checkpoints, not weights

    def train_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return model(batch[0])

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        views, plain, labels, roles = batch
        # the batch-level losses need two images at least (VICReg's variance, SimCLR's negatives)
        loss = model(views)["loss"].float() if len(views) > 1 else torch.tensor(float("nan"), device=views.device)
        return {"loss": loss.expand(len(views)), "features": model.embed(plain).float(), "labels": labels, "roles": roles}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if not outputs:
            return {"val_loss": float("nan"), "val_score": float("-inf"), "feature_std": 0.0,
                    **({"knn_top1": 0.0} if self.labelled else {})}
        loss = float(np.nanmean(outputs["loss"])) if np.isfinite(outputs["loss"]).any() else float("nan")
        features, roles = outputs["features"], outputs["roles"]
        spread = feature_spread(features)
        metrics = {"val_loss": loss, "val_score": -loss if np.isfinite(loss) else float("-inf"), "feature_std": spread}
        if self.labelled:
            bank, query = roles == ROLE_BANK, roles == ROLE_QUERY
            metrics["knn_top1"] = knn_top1(features[bank], outputs["labels"][bank], features[query], outputs["labels"][query],
                                           self.knn_k)
        if spread < COLLAPSE_BELOW and dist_utils.is_main():
            warn(f"the representation is collapsing: feature spread {spread:.3f} (1 = features spread over every "
                 "direction, 0 = every image maps to one vector); lower --lr, or raise --batch (simclr) or --teacher-momentum (byol)",
                 once_key="ssl-collapse")
        return metrics


def feature_spread(features: np.ndarray) -> float:
    """The collapse check of SimSiam (Chen and He, 2021): the std of each dimension of the L2-normalised
    features over the images, averaged over dimensions, times sqrt(D). About 1 for features spread over
    every direction, 0 when all images map to one vector."""
    if len(features) < 2:
        return 0.0
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return float(unit.std(axis=0).mean() * np.sqrt(features.shape[1]))


def knn_top1(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray, k: int = 20) -> float:
    """Top-1 of a k-nearest-neighbour vote (cosine similarity, one vote each) of ``queries`` among the ``bank``'s
    labelled features: scikit-learn's KNeighborsClassifier, the monitor self-supervised methods are compared by."""
    from sklearn.neighbors import KNeighborsClassifier

    if len(queries) == 0 or len(bank) == 0:
        return 0.0
    knn = KNeighborsClassifier(n_neighbors=min(k, len(bank)), metric="cosine", algorithm="brute")
    knn.fit(bank, bank_labels)
    return float((knn.predict(queries) == query_labels).mean())


def linear_top1(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, seed: int = 0) -> float:
    """Top-1 of a linear probe: multinomial logistic regression (scikit-learn, L-BFGS) on standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(test) == 0 or len(np.unique(train_labels)) < 2:
        return 0.0
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train, train_labels)
    return float((probe.predict(test) == test_labels).mean())
