"""Image embeddings: metric-learning losses (pytorch-metric-learning), retrieval metrics, drawing.

The model maps images to L2-normalised vectors; images of one class (an identity) should lie close.
Validation during training is leave-one-out retrieval within the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError
from cnnkit.retrieval.metrics import retrieval_metrics

LOSSES = ("supcon", "triplet", "multisimilarity", "contrastive")


def build_loss(name: str, margin: float, temperature: float):
    """The loss and, where it mines pairs inside the batch, its miner."""
    from pytorch_metric_learning import distances, losses, miners

    if name == "supcon":
        return losses.SupConLoss(temperature=temperature), None
    if name == "triplet":
        # cosine similarity on normalised vectors; semi-hard negatives (FaceNet) keep the loss informative
        return (losses.TripletMarginLoss(margin=margin, distance=distances.CosineSimilarity()),
                miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=distances.CosineSimilarity()))
    if name == "multisimilarity":
        return losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    if name == "contrastive":
        return (losses.ContrastiveLoss(pos_margin=1.0, neg_margin=margin, distance=distances.CosineSimilarity()),
                miners.PairMarginMiner(pos_margin=1.0, neg_margin=margin, distance=distances.CosineSimilarity()))
    raise CnnkitError(f"unknown loss '{name}'", f"choose one of {', '.join(LOSSES)}")


@dataclass
class EmbedTask:
    """The engine's view of metric learning. Batches are (images [B, 3, H, W], labels [B], indices [B])."""

    loss: str = "supcon"
    margin: float = 0.2
    temperature: float = 0.1
    primary_metric: str = "recall@1"
    _fns: tuple = field(default=(), init=False, repr=False)

    def train_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        if not self._fns:
            self._fns = build_loss(self.loss, self.margin, self.temperature)
        loss_fn, miner = self._fns
        images, labels = batch[0], batch[1]
        embeddings = model(images).float()
        pairs = miner(embeddings, labels) if miner is not None else None
        return {"loss": loss_fn(embeddings, labels, pairs)}

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        out = {"embeddings": model(batch[0]).float(), "labels": batch[1]}
        if len(batch) > 2:
            out["index"] = batch[2]
        return out

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if not outputs:
            return {"recall@1": 0.0, "recall@5": 0.0, "map": 0.0}
        emb, labels = outputs["embeddings"], outputs["labels"]
        return retrieval_metrics(emb, labels, emb, labels, same_set=True)


def draw(outputs: dict[str, np.ndarray], class_names: list[str], sample_files: list[Path], plot_dir: Path,
         prefix: str = "val", n_queries: int = 8, k: int = 5) -> list[Path]:
    """A 2-D PCA map of the embeddings coloured by class, and a retrieval sheet (queries spread over
    the classes, each beside its k nearest other images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from cnnkit.engine.rundir import atomic_path

    emb, labels = outputs["embeddings"], outputs["labels"].astype(np.int64)
    files = [sample_files[i] for i in outputs["index"]] if "index" in outputs else list(sample_files)
    written = []
    if len(emb) >= 3:
        points = PCA(n_components=2).fit_transform(emb)
        fig, ax = plt.subplots(figsize=(6, 5))
        for c in np.unique(labels):
            chosen = labels == c
            ax.scatter(points[chosen, 0], points[chosen, 1], s=8, label=class_names[c] if c < len(class_names) else str(c))
        if len(np.unique(labels)) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="best")
        ax.set_title(f"{prefix} embeddings (PCA)")
        fig.tight_layout()
        path = plot_dir / f"{prefix}_embeddings_pca.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(path)
    if len(emb) >= 2:
        split = {"vectors": emb, "labels": labels, "files": [str(f) for f in files]}
        written.append(retrieval_sheet(split, split, class_names, plot_dir / f"{prefix}_retrieval.png", same_set=True,
                                       n_queries=n_queries, k=k))
    return written


def retrieval_sheet(queries: dict, gallery: dict, class_names: list[str], path: Path, same_set: bool,
                    n_queries: int = 8, k: int = 5) -> Path:
    """Queries spread over the split (``{"vectors", "labels", "files"}``), each beside its k nearest
    gallery images, framed green when they share the query's class; ``same_set``: leave-one-out."""
    from cnnkit.retrieval.sheets import contact_sheet

    k = min(k, len(gallery["files"]) - (1 if same_set else 0))
    chosen = np.unique(np.linspace(0, len(queries["files"]) - 1, min(n_queries, len(queries["files"]))).astype(int))
    sims = queries["vectors"][chosen] @ gallery["vectors"].T
    if same_set:
        sims[np.arange(len(chosen)), chosen] = -np.inf
    rows = []
    for i, row in zip(chosen, sims):
        nearest = np.argsort(-row)[:max(k, 0)]
        rows.append([(str(queries["files"][i]), f"query: {class_names[queries['labels'][i]]}", None)] +
                    [(str(gallery["files"][j]), f"{class_names[gallery['labels'][j]]} {row[j]:.2f}",
                      bool(gallery["labels"][j] == queries["labels"][i])) for j in nearest])
    return contact_sheet(rows, path)
