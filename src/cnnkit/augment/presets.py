"""Classification transforms: resize to --imgsz, the chosen augmentation preset, normalise.

Built on torchvision.transforms.v2 so that the same ops can carry boxes and masks for the
detection and segmentation tasks.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classify_transforms(imgsz: int, train: bool, preset: str = "light", fliplr: float = 0.5,
                        mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> v2.Compose:
    """PIL RGB image -> float tensor [3, imgsz, imgsz], normalised."""
    ops: list = [v2.ToImage(), v2.Resize((imgsz, imgsz), antialias=True)]
    if train and preset != "none":
        ops += [
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        ]
        if fliplr > 0:
            ops.append(v2.RandomHorizontalFlip(fliplr))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)
