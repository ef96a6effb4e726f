"""`cnnkit augment preview`: the same images before and after an augmentation, in one PNG grid, with
boxes and masks drawn when the samples carry them. Seeded: the same seed draws the same images and
the same augmentations."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from cnnkit.augment.presets import MASK_IGNORE, AugmentSpec, batch_mixer, classify_transforms, dense_transforms
from cnnkit.evaluate.plots import plot_image_grid

_PALETTE = ["red", "lime", "dodgerblue", "orange", "magenta", "cyan", "yellow", "purple"]
# a sample is an image and, for detection/segmentation, a target dict (boxes, labels, masks)
Sample = tuple[Image.Image, dict[str, Any] | None]


def draw_sample(image: torch.Tensor, target: dict[str, Any] | None = None) -> np.ndarray:
    """uint8 [3, H, W] (or float 0..1) plus optional boxes / masks -> HxWx3 uint8 picture."""
    if image.is_floating_point():
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    image = image.as_subclass(torch.Tensor)
    if target:
        masks = target.get("masks")
        if masks is not None and masks.numel():
            masks = masks.as_subclass(torch.Tensor)
            if masks.ndim == 2:  # semantic: one boolean mask per class present (255 = ignore, not drawn)
                classes = [c for c in masks.unique().tolist() if c not in (0, 255)]
                masks = torch.stack([masks == c for c in classes]) if classes else None
            else:
                classes = list(range(1, len(masks) + 1))
            if masks is not None:
                colours = [_PALETTE[c % len(_PALETTE)] for c in classes]
                image = draw_segmentation_masks(image, masks.bool(), alpha=0.45, colors=colours)
        boxes = target.get("boxes")
        if boxes is not None and len(boxes):
            labels = [str(int(x)) for x in target["labels"]] if "labels" in target else None
            image = draw_bounding_boxes(image, boxes.as_subclass(torch.Tensor).float(), labels=labels, colors="yellow", width=1)
    return image.permute(1, 2, 0).numpy()


def preview_grid(samples: Sequence[Sample], spec: AugmentSpec, path: str | Path, imgsz: int = 128, seed: int = 0,
                 num_classes: int | None = None, labels: Sequence[int] | None = None, captions: Sequence[str] | None = None) -> Path:
    """Each sample twice, side by side: resized only, then augmented with ``spec``. MixUp/CutMix (batch
    level) are applied across the shown images when on and ``labels`` are given."""
    torch.manual_seed(seed)
    dense = any(target for _, target in samples)
    if dense:
        semantic = any(target and target.get("masks") is not None and np.ndim(target["masks"]) == 2 for _, target in samples)
        fill = MASK_IGNORE if semantic else 0
        plain = dense_transforms(imgsz, False, mean=None, mask_fill=fill)
        augmented = dense_transforms(imgsz, True, spec, mean=None, mask_fill=fill)
    else:
        plain, augmented = classify_transforms(imgsz, False, mean=None), classify_transforms(imgsz, True, spec, mean=None)
    before, after = [], []
    for image, target in samples:
        if dense:
            before.append(plain(image, _tv_target(target, image)))
            after.append(augmented(image, _tv_target(target, image)))
        else:
            before.append((plain(image), None))
            after.append((augmented(image), None))
    mixer = batch_mixer(spec, num_classes) if (labels is not None and num_classes and not dense) else None
    if mixer is not None and len(after) > 1:
        mixed, _ = mixer(torch.stack([a for a, _ in after]), torch.as_tensor(list(labels)))
        after = [(m, None) for m in mixed]
    pictures, titles = [], []
    for i, ((b, bt), (a, at)) in enumerate(zip(before, after)):
        caption = captions[i] if captions else str(i)
        pictures += [draw_sample(b, bt), draw_sample(a, at)]
        titles += [caption, f"{caption} augmented"]
    return plot_image_grid(pictures, titles, Path(path), columns=8)


def _tv_target(target: dict[str, Any] | None, image: Image.Image) -> dict[str, Any]:
    """Plain arrays -> tv_tensors, so v2 moves them with the image."""
    if not target:
        return {}
    out = dict(target)
    if "boxes" in out and not isinstance(out["boxes"], tv_tensors.BoundingBoxes):
        out["boxes"] = tv_tensors.BoundingBoxes(torch.as_tensor(np.asarray(out["boxes"], dtype=np.float32)).reshape(-1, 4),
                                                format="XYXY", canvas_size=(image.height, image.width))
    if "masks" in out and not isinstance(out["masks"], tv_tensors.Mask):
        out["masks"] = tv_tensors.Mask(torch.as_tensor(np.asarray(out["masks"])))
    if "labels" in out:
        out["labels"] = torch.as_tensor(out["labels"])
    return out


def preview_dataset(data: str, spec: AugmentSpec, out: str | Path, n: int = 16, seed: int = 0, imgsz: int = 128,
                    split: str = "train") -> Path:
    """``n`` images drawn (seeded) from a dataset split, before and after; returns the PNG's path.
    Classification folders, and the layouts of DESIGN.md that carry geometry: segmentation
    (images/SPLIT + masks/SPLIT), COCO (annotations/SPLIT.json) and YOLO (images/SPLIT + labels/SPLIT),
    whose masks and boxes are drawn and moved with the pixels."""
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.images import load_image, load_image_in_frame
    from cnnkit.data.imagefolder import load_imagefolder
    from cnnkit.errors import CnnkitError

    if n < 1:
        raise CnnkitError(f"-n must be at least 1, got {n}")
    root = resolve_data(data)
    dense = dense_samples(Path(root), split)
    if dense is not None:
        if not dense:
            raise CnnkitError(f"{root}: no annotated images in the {split!r} split")
        spec = dataclasses.replace(spec, mixup=0.0, cutmix=0.0)  # boxes and masks are not blended
        chosen = random.Random(seed).sample(dense, min(n, len(dense)))
        samples = []
        for path, read_target in chosen:
            target = read_target()
            frame = target.pop("frame", None)  # detection: the recorded size, whose picture the boxes were drawn on
            samples.append((load_image_in_frame(path, *frame) if frame else load_image(path), target))
        return preview_grid(samples, spec, out, imgsz, seed, captions=[path.name for path, _ in chosen])
    dataset = load_imagefolder(root, seed=seed)
    if split not in dataset.splits:
        raise CnnkitError(f"{dataset.root}: no {split!r} split", f"splits: {', '.join(dataset.splits)}")
    pool = dataset.splits[split]
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    samples = [(load_image(path), None) for path, _ in chosen]
    captions = [f"{dataset.classes[label]}" for _, label in chosen]
    return preview_grid(samples, spec, out, imgsz, seed, len(dataset.classes), [label for _, label in chosen], captions)


def dense_samples(root: Path, split: str) -> list[tuple[Path, Callable[[], dict[str, Any]]]] | None:
    """(image path, a function reading its target) for a segmentation dataset (images/SPLIT with
    masks/SPLIT) or a detection one (COCO, YOLO or VOC, read by cnnkit.data.detection); None when
    ROOT is neither."""
    from cnnkit.data.detection import detect_layout, load_detection
    from cnnkit.data.images import is_image_file
    from cnnkit.errors import CnnkitError

    images = root / "images" / split
    if (root / "masks" / split).is_dir() and images.is_dir():
        pairs = [(path, root / "masks" / split / f"{path.stem}.png") for path in sorted(images.iterdir()) if is_image_file(path)]
        return [(path, lambda mask=mask: {"masks": np.array(Image.open(mask))}) for path, mask in pairs if mask.is_file()]
    if detect_layout(root) is None:
        return None
    data = load_detection(root)
    if split not in data.splits:
        raise CnnkitError(f"{root}: no {split!r} split", f"splits: {', '.join(data.splits)}")
    return [(image.path, lambda image=image: {"boxes": image.boxes.astype(np.float32), "labels": image.labels,
                                              "frame": (image.width, image.height)})
            for image in data.splits[split]]
