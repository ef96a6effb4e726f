"""Semantic segmentation as the engine sees it: (image, index mask) pairs, the pixel losses, metrics from
an accumulated confusion matrix, whole-image inference (resized, or tiled by sliding windows) and the
drawings of the report.

Batches are (images, masks, dataset indices): images float [3, H, W] normalised, masks int64 [H, W]
(255 = ignore); stacked into tensors when every sample has the same size (training), else lists
(validation keeps each image's own size, so that metrics are measured on the masks as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cnnkit.console import warn
from cnnkit.data.palettes import palette  # noqa: F401 - drawing colours, read here by the task's users
from cnnkit.data.intensity import IntensitySpec, read_pixels
from cnnkit.data.segmentation import SegmentSample, read_mask
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.segmentation import confusion_matrix, per_class_hd95, segmentation_scores

LOSSES = ("ce", "dice", "ce_dice", "focal")
TILE_BATCH = 4  # windows per forward pass in tiled inference


# ==================================================================== reading images
# How pixel values become model inputs (--normalize, --window): the one spec every task records and reads by
Intensity = IntensitySpec


def load_pixels(path: Path, slice_index: int | None, intensity: Intensity) -> np.ndarray:
    """HxWx3: uint8 for 8-bit pictures read as they are (auto or range), else float32 in [0, 1] after
    the intensity normalisation (16-bit, float, DICOM, NIfTI: see data/intensity.py and data/medical.py)."""
    return read_pixels(path, intensity, slice_index)


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """The model's input picture as 8-bit RGB for drawings."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


# ==================================================================== datasets
class SegmentSet(Dataset):
    """(image, mask, index) per sample. Training: ``transform`` (augmentations with the mask in sync)
    after, with ``tile``, a random imgsz x imgsz window at the image's own resolution (padded with
    the ignore index where the image is smaller). Validation: the image at its own size, the mask
    as stored. An unreadable image costs its sample (None, skipped by the collate) with a warning."""

    def __init__(self, samples: Sequence[SegmentSample], transform: Callable, intensity: Intensity,
                 tile: int | None = None, ignore_index: int = 255):
        self.samples = list(samples)
        self.transform, self.intensity, self.tile, self.ignore_index = transform, intensity, tile, ignore_index

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            pixels = load_pixels(sample.image, sample.slice_index, self.intensity)
        except CnnkitError as exc:
            warn(f"{exc.message} (skipped)", once_key=str(sample.image))
            return None
        mask = read_mask(sample).astype(np.int64) if sample.mask is not None else np.zeros(pixels.shape[:2], np.int64)
        if self.tile:
            pixels, mask = random_window(pixels, mask, self.tile, self.ignore_index)
        image, target = self.transform(pixels, {"masks": tv_tensors.Mask(torch.from_numpy(mask))})
        return image.as_subclass(torch.Tensor), target["masks"].as_subclass(torch.Tensor).long(), index


def random_window(pixels: np.ndarray, mask: np.ndarray, size: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A random size x size window; sides shorter than ``size`` are padded (image 0, mask ignored)."""
    height, width = mask.shape
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)))
        mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=ignore_index)
        height, width = mask.shape
    top = int(torch.randint(0, height - size + 1, ()))
    left = int(torch.randint(0, width - size + 1, ()))
    return (np.ascontiguousarray(pixels[top:top + size, left:left + size]),
            np.ascontiguousarray(mask[top:top + size, left:left + size]))


def collate_segmentation(batch: list[Any]):
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    images, masks, indices = zip(*kept)
    indices = torch.tensor(indices, dtype=torch.int64)
    if all(image.shape == images[0].shape for image in images):
        return torch.stack(images), torch.stack(masks), indices
    return list(images), list(masks), indices


# ==================================================================== losses
def segmentation_loss(kind: str, num_classes: int, ignore_index: int, focal_gamma: float = 2.0) -> Callable:
    """(logits [B, C, H, W], masks [B, H, W]) -> loss. Dice and focal are segmentation_models_pytorch's
    (multiclass mode, ignored pixels left out); ce_dice is their sum, the usual choice when a class
    covers few pixels (Dice does not care how many background pixels there are)."""
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

    if kind not in LOSSES:
        raise CnnkitError(f"--loss {kind!r} is not one of {', '.join(LOSSES)}")
    dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index)
    focal = FocalLoss("multiclass", gamma=focal_gamma, ignore_index=ignore_index)

    def loss(logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        parts: dict[str, torch.Tensor] = {}
        if kind in ("ce", "ce_dice"):
            parts["ce"] = F.cross_entropy(logits, masks, ignore_index=ignore_index)
        if kind in ("dice", "ce_dice"):
            parts["dice"] = dice(logits, masks)
        if kind == "focal":
            parts["focal"] = focal(logits, masks)
        return {"loss": sum(parts.values()), **{k: v.detach() for k, v in parts.items()}}

    return loss


# ==================================================================== inference
@dataclass(frozen=True)
class Inference:
    """How a whole image is segmented: resized to imgsz x imgsz (the way the model was trained on
    whole images), or with ``tile`` by overlapping imgsz x imgsz windows at its own resolution."""

    imgsz: int
    tile: bool = False
    overlap: float = 0.25


def segment_probabilities(model: nn.Module, images: torch.Tensor | list[torch.Tensor], how: Inference) -> list[torch.Tensor]:
    """Class probabilities [C, H, W] (softmax, float32) of each image at its own size."""
    if how.tile:
        return [sliding_window(model, image, how.imgsz, how.overlap) for image in images]
    if isinstance(images, torch.Tensor) and tuple(images.shape[-2:]) == (how.imgsz, how.imgsz):
        return list(torch.softmax(model(images).float(), dim=1))
    sizes = [tuple(image.shape[-2:]) for image in images]
    resized = torch.stack([_resize(image, (how.imgsz, how.imgsz)) for image in images])
    logits = model(resized).float()
    return [torch.softmax(F.interpolate(logit[None], size=size, mode="bilinear", align_corners=False)[0], dim=0)
            for logit, size in zip(logits, sizes)]


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    # antialiased when shrinking, as the training resize (OpenCV's area averaging) is
    return F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0].to(image.dtype)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window positions along one side: every ``stride``, the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def blend_weights(window: int, device: torch.device) -> torch.Tensor:
    """[window, window] Gaussian weights (sigma = window / 8, as nnU-Net): a window's centre, where the
    model saw the most context, counts most; the floor keeps the borders of the image weighted."""
    centre = (window - 1) / 2
    axis = torch.exp(-0.5 * ((torch.arange(window, device=device, dtype=torch.float32) - centre) / (window / 8)) ** 2)
    weights = axis[:, None] * axis[None, :]
    return (weights / weights.max()).clamp_(min=1e-3)


@torch.no_grad()
def sliding_window(model: nn.Module, image: torch.Tensor, window: int, overlap: float = 0.25,
                   batch: int = TILE_BATCH) -> torch.Tensor:
    """Probabilities [C, H, W] of one image of any size from overlapping window x window tiles, each
    weighted by ``blend_weights``, so seams between tiles do not show. Memory: ``batch`` windows of
    activations at a time, plus the [C, H, W] sum (a 4096 x 4096 image with 2 classes: 128 MiB)."""
    channels, height, width = image.shape
    pad_h, pad_w = max(0, window - height), max(0, window - width)
    if pad_h or pad_w:  # smaller than a window: zeros (the normalised mean) on the bottom and right
        image = F.pad(image, (0, pad_w, 0, pad_h))
    full_h, full_w = image.shape[-2:]
    stride = max(1, int(window * (1 - overlap)))
    positions = [(top, left) for top in window_starts(full_h, window, stride) for left in window_starts(full_w, window, stride)]
    weights = blend_weights(window, image.device)
    total = None
    weight_sum = torch.zeros(full_h, full_w, device=image.device)
    for start in range(0, len(positions), batch):
        chunk = positions[start:start + batch]
        tiles = torch.stack([image[:, t:t + window, l:l + window] for t, l in chunk])
        probs = torch.softmax(model(tiles).float(), dim=1)
        if total is None:
            total = torch.zeros(probs.shape[1], full_h, full_w, device=image.device)
        for (t, l), p in zip(chunk, probs):
            total[:, t:t + window, l:l + window] += p * weights
            weight_sum[t:t + window, l:l + window] += weights
    return (total / weight_sum)[:, :height, :width]


# ==================================================================== the engine's task
@dataclass
class SegmentTask:
    """The engine's view of semantic segmentation. Validation outputs per image: its confusion matrix
    (flattened [C * C]) and the HD95 of every class ([C], NaN where a class is in neither mask),
    which the metrics sum and average."""

    class_names: list[str]
    loss: Callable
    inference: Inference
    ignore_index: int = 255
    primary_metric: str = "miou"
    with_hd95: bool = True
    background: int | None = 0

    def train_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, masks, _ = self.training_batch(batch)
        return self.hard_loss(model(images), masks)

    def training_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, masks, the pixels that are scored: not --ignore-index)."""
        images, masks = batch[0], batch[1]
        if isinstance(images, list):
            images, masks = torch.stack(images), torch.stack(masks)
        return images, masks, masks != self.ignore_index

    def hard_loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.loss(logits, masks)

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, masks = batch[0], batch[1]
        num_classes = len(self.class_names)
        probabilities = segment_probabilities(model, images, self.inference)
        matrices, distances = [], []
        for probs, mask in zip(probabilities, masks):
            predicted = probs.argmax(0)
            matrices.append(confusion_matrix(predicted, mask, num_classes, self.ignore_index).reshape(-1))
            if self.with_hd95:
                distances.append(torch.from_numpy(per_class_hd95(predicted.cpu().numpy(), mask.cpu().numpy(), num_classes,
                                                                 self.ignore_index)).float())
        out = {"confusion": torch.stack(matrices), "index": batch[2]}
        if self.with_hd95:
            out["hd95"] = torch.stack(distances)
        return out

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        num_classes = len(self.class_names)
        matrix = outputs["confusion"].sum(0).reshape(num_classes, num_classes).astype(np.int64)
        scores = segmentation_scores(matrix, self.class_names, self.background)
        if self.with_hd95 and "hd95" in outputs:
            distances = outputs["hd95"]
            per_class = [_nanmean(distances[:, k]) for k in range(num_classes)]
            for name, value in zip(self.class_names, per_class):
                scores["per_class"][name]["hd95"] = value
            foreground = [v for k, v in enumerate(per_class) if k != self.background and v is not None]
            scores["hd95"] = float(np.mean(foreground)) if foreground else None
        scores["confusion_matrix"] = matrix.tolist()
        return scores


def _nanmean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


# ==================================================================== drawings



def overlay(pixels: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """HxWx3 uint8: the class colours blended over the picture (background and ignored pixels left as
    they are), with class outlines drawn solid so that touching regions stay apart."""
    out = pixels.astype(np.float32).copy()
    painted = (mask > 0) & (mask != ignore_index) & (mask < len(colours))
    colour = colours[np.where(painted, mask, 0)].astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * colour[painted]
    edges = np.zeros_like(painted)
    edges[:-1] |= mask[:-1] != mask[1:]
    edges[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edges &= painted
    out[edges] = colour[edges]
    return np.clip(out, 0, 255).astype(np.uint8)


def draw(samples: Sequence[SegmentSample], predictions: Sequence[np.ndarray], class_names: list[str], matrix: np.ndarray,
         plot_dir: Path, intensity: Intensity, prefix: str = "val", ignore_index: int = 255, count: int = 8) -> list[Path]:
    """The pixel confusion matrix (rows normalised: recall) and a grid of image | truth | prediction."""
    colours = palette(len(class_names))
    paths = [plots.plot_confusion_matrix(np.asarray(matrix), class_names, plot_dir / f"{prefix}_confusion_matrix.png",
                                         normalize=True, title="pixels (rows: true class, normalised)")]
    pictures, titles = [], []
    for sample, predicted in list(zip(samples, predictions))[:count]:
        try:
            pixels = display_pixels(load_pixels(sample.image, sample.slice_index, intensity))
            truth = read_mask(sample) if sample.mask is not None else None
        except CnnkitError:
            continue
        pictures += [pixels, overlay(pixels, truth, colours, ignore_index=ignore_index) if truth is not None else pixels,
                     overlay(pixels, predicted, colours, ignore_index=ignore_index)]
        titles += [sample.name, "truth", "prediction"]
    if pictures:
        paths.append(plots.plot_image_grid(pictures, titles, plot_dir / f"{prefix}_samples.png", columns=3))
    return paths
