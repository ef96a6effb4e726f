"""Text-line images as a recogniser reads them: scaled to a fixed height with their aspect ratio kept,
normalised, and batched by padding on the right to the widest line. The OCR task (tasks/ocr) trains and reads
with these; export, quantize and bench (compress) make their example and calibration batches with them too.

    batch, widths = line_batch([line_a, line_b], height=32, max_width=800, mean=MEAN, std=STD)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

WIDTH_MULTIPLE = 4  # the CRNN's width stride: a batch's width is padded to a multiple of it


def fit_height(image: np.ndarray, height: int, max_width: int) -> np.ndarray:
    """[height, w, 3] uint8 RGB: the image scaled to ``height``, aspect kept, at most ``max_width`` wide."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    width = min(max_width, max(1, round(w * height / max(h, 1))))
    return np.ascontiguousarray(cv2.resize(image[..., :3], (width, height),
                                           interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR))


def to_tensor(image: np.ndarray, mean, std) -> torch.Tensor:
    """[3, H, W] float32, normalised with ``mean`` and ``std`` (0..1 scale)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def pad_lines(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, 3, H, W] padded with zeros on the right to the widest line, a multiple of 4; widths [B])."""
    widths = torch.tensor([t.shape[-1] for t in tensors])
    width = int(math.ceil(int(widths.max()) / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)
    padded = tensors[0].new_zeros((len(tensors), 3, tensors[0].shape[1], width))
    for k, t in enumerate(tensors):
        padded[k, :, :, : t.shape[-1]] = t
    return padded, widths


def line_batch(images: list[np.ndarray], height: int, max_width: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB uint8 line images of any size as one padded batch and their widths."""
    return pad_lines([to_tensor(fit_height(im, height, max_width), mean, std) for im in images])
