"""Image classification: cross-entropy loss, scikit-learn metrics, confusion matrix, PR curves, sample grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.evaluate import plots


@dataclass
class ClassifyTask:
    """The engine's view of classification. Batches are (images [B, 3, H, W], labels [B], indices [B])."""

    class_names: list[str]
    label_smoothing: float = 0.0
    primary_metric: str = "top1"
    class_weights: torch.Tensor | None = None  # [C], for --balance weights
    # --balance logit_adjust: log of the training classes' shares [C], added to the logits in the loss only
    # (Menon et al. 2021), so the raw logits the model learns are those of a balanced training set
    log_prior: torch.Tensor | None = None
    focal_gamma: float = 0.0  # > 0: focal loss (--loss focal)
    # MixUp / CutMix over the batch (augment.batch_mixer): labels become class probabilities [B, C]
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    # --balance smote (data/smote.py): the model's own classifier layer. Train batches are then pooled
    # features [B, D] of the frozen backbone and only this layer runs on them; eval_step still runs the
    # whole model on images, so validation and the saved weights are the real classifier
    head: nn.Module | None = None
    tta: str = "none"  # the views each image is evaluated on (--tta): none, flip or d8 (predict_logits)

    def train_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels, _ = self.training_batch(batch)
        logits = model(images) if self.head is None else self.head(images)
        losses = self.hard_loss(logits, labels)
        # how much of its own (augmented) training data the model gets right: far below 1 is underfitting
        truth = labels.argmax(1) if labels.dim() > 1 else labels  # MixUp/CutMix: the larger share
        losses["accuracy"] = (logits.detach().argmax(1) == truth).float().mean()
        return losses

    def training_batch(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, None]:
        """(inputs, labels, None) as the loss sees them, MixUp/CutMix applied; None: every sample is scored."""
        images, labels = batch[0], batch[1]
        if self.mix is not None and self.head is None:  # image mixing: nothing to mix in cached features
            images, labels = self.mix(images, labels)
        return images, labels, None

    def hard_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        if self.log_prior is not None:
            logits = logits + self.log_prior.to(logits.device)
        return {"loss": classification_loss(logits, labels, self.class_weights, self.label_smoothing, self.focal_gamma)}

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels = batch[0], batch[1]
        out = {"logits": predict_logits(model, images, self.tta), "labels": labels}
        if len(batch) > 2:
            out["index"] = batch[2]
        return out

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return classification_metrics(outputs["logits"], outputs["labels"], self.class_names)


TTA_VIEWS = ("none", "flip", "d8")


def predict_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The model's logits [B, C] (float32), averaged over test-time views: ``flip``, each image and its mirror
    image (the test-time augmentation of fast CIFAR training, airbench, for a model trained with flips);
    ``d8``, the eight symmetries of the square (four quarter turns, each also mirrored), for images with no
    upright direction (textures, cells, aerial and microscope images); ``none``, one view."""
    if tta == "none":
        return model(images).float()
    if tta == "flip":
        return (model(images).float() + model(images.flip(-1)).float()) / 2
    if tta != "d8":
        raise ValueError(f"unknown test-time augmentation {tta!r}: one of {TTA_VIEWS}")
    views = [images.rot90(turns, dims=(-2, -1)) for turns in range(4)]
    return torch.stack([model(v).float() + model(v.flip(-1)).float() for v in views]).sum(0) / 8


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                        label_smoothing: float = 0.0, focal_gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy, optionally class-weighted (a weighted mean, as ``F.cross_entropy(weight=)``) and
    focal: each sample's term scaled by (1 - p_true)^gamma (Lin et al., 2017), so that the many easy
    examples of a large class stop drowning out the rare ones."""
    soft = labels.is_floating_point()  # class probabilities [B, C] from MixUp / CutMix
    per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    if focal_gamma > 0:
        probs = torch.softmax(logits, dim=1)
        p_true = (probs * labels).sum(1) if soft else probs.gather(1, labels[:, None]).squeeze(1)
        per_sample = (1.0 - p_true).clamp(min=0).pow(focal_gamma) * per_sample
    if weight is None:
        return per_sample.mean()
    weight = weight.to(logits.device, logits.dtype)
    sample_weight = labels.to(logits.dtype) @ weight if soft else weight[labels]
    return (sample_weight * per_sample).sum() / sample_weight.sum().clamp(min=1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """top1, top5, macro_f1, balanced_accuracy, pr_auc (macro one-vs-rest average precision),
    val_loss, per_class precision/recall/f1/support/ap and the row-normalised confusion_matrix — all
    computed by scikit-learn."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    n_classes = len(class_names)
    labels = labels.astype(np.int64)
    if len(labels) == 0:
        return {"top1": 0.0, "top5": 0.0, "macro_f1": 0.0, "balanced_accuracy": 0.0, "pr_auc": 0.0, "val_loss": 0.0, "per_class": {},
                "confusion_matrix": np.zeros((n_classes, n_classes)).tolist()}
    probs = softmax(logits.astype(np.float64))
    preds = probs.argmax(axis=1)
    all_labels = list(range(n_classes))
    k = min(5, n_classes)
    # top-k with k >= number of classes is trivially 1 (and sklearn rejects 2-column scores)
    top5 = 1.0 if k >= n_classes else float(top_k_accuracy_score(labels, probs, k=k, labels=all_labels))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=all_labels, zero_division=0)
    per_class: dict[str, dict[str, float]] = {}
    aps = []
    for c, name in enumerate(class_names):
        positives = labels == c
        ap = float(average_precision_score(positives, probs[:, c])) if positives.any() else float("nan")
        if positives.any():
            aps.append(ap)
        per_class[name] = {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                           "support": int(support[c]), "ap": ap}
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    return {
        "top1": float(accuracy_score(labels, preds)),
        "top5": top5,
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "balanced_accuracy": _balanced_accuracy(labels, preds),
        "pr_auc": float(np.mean(aps)) if aps else 0.0,
        "val_loss": float(nll.mean()),
        "per_class": per_class,
        # rows: true class, columns: predicted, each row divided by its count (recall on the diagonal)
        "confusion_matrix": confusion(labels, preds, n_classes, normalize="true").round(4).tolist(),
    }


def _balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected on small val sets
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(labels, preds))


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int, normalize: str | None = None) -> np.ndarray:
    """scikit-learn's confusion matrix; ``normalize="true"`` divides each row by its count (a class with
    no images gets a row of zeros)."""
    import warnings

    from sklearn.metrics import confusion_matrix

    with warnings.catch_warnings():  # an empty row is reported as zeros, which is what we show
        warnings.simplefilter("ignore")
        return np.nan_to_num(confusion_matrix(labels, preds, labels=list(range(n_classes)), normalize=normalize))


def draw(outputs: dict[str, np.ndarray], class_names: list[str], sample_files: list[Path], plot_dir: Path,
         prefix: str = "val", max_images: int = 32) -> list[Path]:
    """Confusion matrix, one-vs-rest PR curves and a grid of images (wrong ones first, marked).
    ``outputs["index"]`` maps each output row to ``sample_files``."""
    from sklearn.metrics import precision_recall_curve

    from cnnkit.data.images import load_image

    logits, labels = outputs["logits"], outputs["labels"].astype(np.int64)
    files = [sample_files[i] for i in outputs["index"]] if "index" in outputs else sample_files
    probs = softmax(logits.astype(np.float64))
    preds = probs.argmax(axis=1)
    written = [plots.plot_confusion_matrix(confusion(labels, preds, len(class_names)), class_names,
                                           plot_dir / f"{prefix}_confusion_matrix.png")]
    curves = {}
    for c, name in enumerate(class_names):
        positives = labels == c
        if positives.any():
            precision, recall, _ = precision_recall_curve(positives, probs[:, c])
            curves[name] = (recall, precision, _ap(positives, probs[:, c]))
    written.append(plots.plot_pr_curves(curves, plot_dir / f"{prefix}_pr_curves.png"))
    wrong = np.flatnonzero(preds != labels)
    right = np.flatnonzero(preds == labels)
    n_right = min(len(right), max_images - min(len(wrong), max_images // 2))
    # evenly spaced through the (class-sorted) set, so correct examples of every class appear
    spread = right[np.unique(np.linspace(0, len(right) - 1, n_right).astype(int))] if n_right else right[:0]
    chosen = list(wrong[: max_images // 2]) + list(spread)
    images, titles, marks = [], [], []
    for i in chosen:
        images.append(np.asarray(load_image(files[i])))
        titles.append(f"pred {class_names[preds[i]]} ({probs[i, preds[i]]:.2f})\ntrue {class_names[labels[i]]}")
        marks.append(bool(preds[i] != labels[i]))
    written.append(plots.plot_image_grid(images, titles, plot_dir / f"{prefix}_predictions.png", wrong=marks))
    return written


def _ap(positives: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positives, scores))


def draw_label(pixels: np.ndarray, caption: str) -> np.ndarray:
    """HxWx3 uint8 with ``caption`` (the predicted label and score) on a dark band across the top."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, min(canvas.size) // 12))
    left, top, right, bottom = draw.textbbox((4, 2), caption, font=font)
    draw.rectangle((0, 0, max(right + 4, 1), bottom + 4), fill=(20, 20, 20))
    draw.text((4, 2), caption, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)
