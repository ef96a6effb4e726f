"""Box geometry shared by cnnkit's YOLO detector (models/yolo.py) and its loss (models/yolo_loss.py): anchor
points of every level, and boxes to and from per-side distances in strides (DFL bins decoded by expectation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRIDES = (8, 16, 32)  # the three levels' strides, in input pixels


def anchor_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(cell centres [N, 2] in input pixels, their strides [N, 1]) over the levels' (H, W), row-major."""
    points, strides = [], []
    for (h, w), stride in zip(shapes, STRIDES):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1))
        strides.append(torch.full((h * w, 1), float(stride), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strides)


def distances_from_logits(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """[..., 4 * reg_max] -> [..., 4] distances in strides: the expectation over the DFL bins, or a
    softplus of the single value when reg_max is 1 (DFL off)."""
    if reg_max == 1:
        return F.softplus(box_logits)
    probs = box_logits.unflatten(-1, (4, reg_max)).softmax(-1)
    return probs @ torch.arange(reg_max, device=box_logits.device, dtype=probs.dtype)


def decode_boxes(points: torch.Tensor, distances: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Cell centres and (left, top, right, bottom) distances in strides -> xyxy boxes in pixels."""
    left_top, right_bottom = (distances * strides).chunk(2, dim=-1)
    return torch.cat([points - left_top, points + right_bottom], dim=-1)


def encode_boxes(points: torch.Tensor, boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """The inverse of ``decode_boxes``: xyxy boxes -> (left, top, right, bottom) distances in strides."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1) / strides
