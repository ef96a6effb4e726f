"""All the geometry of an augmentation in one step: random resized crop, flips, rotation, shift and zoom,
applied to the image and to every tv_tensors box, mask and keypoint set that travels with it.

Why not torchvision's ops one after the other: each resamples the whole image again, and the affine
one goes through float grid_sample; measured on one core at 224 px (benchmarks/augment.py), the
chain ran at a seventh of albumentations' speed. Here the crop and resize is one OpenCV resize
(area averaging when shrinking, so no aliasing) and rotation, shift, zoom and flips one OpenCV warp,
both on uint8. Boxes and keypoints are mapped by the same matrix in continuous coordinates (pixel i
covers [i, i + 1)); masks are resampled with nearest-exact, which samples the same points as the
image's bilinear, so they cannot drift (tests/augment/test_augment.py measures that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class RandomGeometry:
    """(image, targets...) -> the same, resized to ``size`` (None: keep the size) after a random crop of
    at least ``crop_scale`` of the area, flips with probabilities ``fliplr``/``flipud``, rotation up to
    ±``degrees``, shift up to ``translate`` of the side and zoom by 1 ± ``scale``. The image may be a
    PIL image, an HxWxC uint8 array or a CxHxW tensor; it comes out as a uint8 tv_tensors.Image.
    Where the warp uncovers the border, images get 0 and masks ``mask_fill``."""

    size: int | None = None
    crop_scale: float = 1.0
    fliplr: float = 0.0
    flipud: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    mask_fill: int = 0
    keep_aspect: bool = False  # resize the crop's longer side to ``size`` instead of to size x size


    def __call__(self, *inputs: Any) -> Any:
        leaves, structure = tree_flatten(inputs if len(inputs) > 1 else inputs[0])
        image_at = next((i for i, leaf in enumerate(leaves) if _is_image(leaf)), None)
        if image_at is None:
            raise TypeError("RandomGeometry: no image in the sample")
        pixels = _to_hwc(leaves[image_at])
        height, width = pixels.shape[:2]
        crop = self._crop(height, width)
        top, left, crop_h, crop_w = crop
        out_h, out_w = self._out_size(height, width, crop_h, crop_w)
        warp = self._warp(out_h, out_w)
        # continuous coordinates: crop-and-resize, then the warp
        resize = np.array([[out_w / crop_w, 0, -left * out_w / crop_w], [0, out_h / crop_h, -top * out_h / crop_h], [0, 0, 1]])
        full = warp @ resize if warp is not None else resize
        for i, leaf in enumerate(leaves):
            if i == image_at:
                leaves[i] = tv_tensors.Image(_from_hwc(_resample(pixels, crop, (out_h, out_w), warp, linear=True, fill=0)))
            elif isinstance(leaf, tv_tensors.Mask):
                leaves[i] = tv_tensors.wrap(_resample_mask(leaf, crop, (out_h, out_w), warp, self.mask_fill), like=leaf)
            elif isinstance(leaf, tv_tensors.BoundingBoxes):
                leaves[i] = _map_boxes(leaf, full, (out_h, out_w), crop)
            elif hasattr(tv_tensors, "KeyPoints") and isinstance(leaf, tv_tensors.KeyPoints):
                points = _apply(full, leaf.as_subclass(torch.Tensor).reshape(-1, 2).double().numpy())
                leaves[i] = tv_tensors.wrap(torch.from_numpy(points).to(leaf.dtype).reshape(leaf.shape), like=leaf,
                                            canvas_size=(out_h, out_w))
        return tree_unflatten(leaves, structure)

    def _out_size(self, height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
        if not self.size:
            return height, width
        if not self.keep_aspect:
            return self.size, self.size
        scale = self.size / max(crop_h, crop_w)
        return max(1, round(crop_h * scale)), max(1, round(crop_w * scale))

    def _crop(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width): torchvision's RandomResizedCrop sampling (area fraction uniform
        in [crop_scale, 1], aspect ratio log-uniform in [3/4, 4/3], 10 tries, then the whole image)."""
        if self.crop_scale >= 1.0:
            return 0, 0, height, width
        area = height * width
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(self.crop_scale, 1.0))
            ratio = math.exp(float(torch.empty(()).uniform_(*log_ratio)))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        return 0, 0, height, width

    def _warp(self, height: int, width: int) -> np.ndarray | None:
        """3x3 matrix in continuous output coordinates: flips, then rotation and zoom about the centre,
        then the shift; None when it is the identity."""
        flip_x = self.fliplr > 0 and float(torch.rand(())) < self.fliplr
        flip_y = self.flipud > 0 and float(torch.rand(())) < self.flipud
        angle = math.radians(float(torch.empty(()).uniform_(-self.degrees, self.degrees))) if self.degrees else 0.0
        zoom = float(torch.empty(()).uniform_(1 - self.scale, 1 + self.scale)) if self.scale else 1.0
        shift_x = float(torch.empty(()).uniform_(-self.translate, self.translate)) * width if self.translate else 0.0
        shift_y = float(torch.empty(()).uniform_(-self.translate, self.translate)) * height if self.translate else 0.0
        if not (flip_x or flip_y or angle or zoom != 1.0 or shift_x or shift_y):
            return None
        cx, cy = width / 2, height / 2
        flip = np.array([[-1.0 if flip_x else 1.0, 0, width if flip_x else 0], [0, -1.0 if flip_y else 1.0, height if flip_y else 0], [0, 0, 1]])
        cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
        # counter-clockwise on screen for positive angles, as torchvision's rotate
        rotate = np.array([[cos, sin, cx - cos * cx - sin * cy + shift_x], [-sin, cos, cy + sin * cx - cos * cy + shift_y], [0, 0, 1]])
        return rotate @ flip


def _is_image(leaf: Any) -> bool:
    if isinstance(leaf, (Image.Image, np.ndarray, tv_tensors.Image)):
        return True
    return type(leaf) is torch.Tensor  # a plain tensor is the image, as in torchvision's v2


def _to_hwc(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if isinstance(image, np.ndarray):
        return image
    tensor = image.as_subclass(torch.Tensor)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"RandomGeometry works on uint8 images, got {tensor.dtype}")
    return tensor.permute(1, 2, 0).numpy()  # a view when the tensor came from an HWC array


def _from_hwc(pixels: np.ndarray) -> torch.Tensor:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if not pixels.flags.writeable:  # a PIL image's own buffer, untouched: torch needs a copy it may own
        pixels = pixels.copy()
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def _pixel_matrix(matrix: np.ndarray) -> np.ndarray:
    """The same map in OpenCV's coordinates, where pixel i's centre is at i (ours: i + 0.5)."""
    to_continuous = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    to_pixel = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    return (to_pixel @ matrix @ to_continuous)[:2]


def _resample(pixels: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int], warp: np.ndarray | None,
              linear: bool, fill: int) -> np.ndarray:
    top, left, crop_h, crop_w = crop
    out_h, out_w = size
    region = pixels[top:top + crop_h, left:left + crop_w]
    channels = region.shape[2] if region.ndim == 3 else 1
    if channels > 4:  # OpenCV resamples at most 4 channels at a time
        return np.concatenate([_resample(pixels[..., c:c + 4], crop, size, warp, linear, fill) for c in range(0, channels, 4)], axis=2)
    if (crop_h, crop_w) != (out_h, out_w):
        if linear:
            # bilinear reads 2x2 pixels, enough up to halving; beyond, area averaging (slower) keeps
            # thin lines and textures from aliasing
            shrinking = crop_h > 2 * out_h and crop_w > 2 * out_w
            method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        else:
            method = cv2.INTER_NEAREST_EXACT
        # OpenCV reads a strided crop of rows and columns in place; only the channels must be packed
        packed_pixels = region.strides[-1] == region.itemsize and (region.ndim == 2 or region.strides[-2] == region.shape[-1] * region.itemsize)
        packed = region if packed_pixels else np.ascontiguousarray(region)
        region = cv2.resize(packed, (out_w, out_h), interpolation=method)
    if warp is not None:
        region = cv2.warpAffine(np.ascontiguousarray(region), _pixel_matrix(warp), (out_w, out_h),
                                flags=cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)
    if region.ndim == 2 and pixels.ndim == 3:
        region = region[:, :, None]
    return region


def _resample_mask(mask: tv_tensors.Mask, crop: tuple[int, int, int, int], size: tuple[int, int], warp: np.ndarray | None,
                   fill: int) -> torch.Tensor:
    tensor = mask.as_subclass(torch.Tensor)
    dtype = tensor.dtype
    planes = tensor.reshape(-1, *tensor.shape[-2:])
    if dtype == torch.bool:
        planes = planes.to(torch.uint8)
    if planes.shape[0] == 0:
        return torch.zeros(*tensor.shape[:-2], *size, dtype=dtype)
    # HxWxN so that OpenCV resamples up to 4 instance planes per call
    out = _resample(planes.permute(1, 2, 0).numpy(), crop, size, warp, linear=False, fill=fill)
    result = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).reshape(*tensor.shape[:-2], *size)
    return result.to(dtype) if dtype == torch.bool else result


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _map_boxes(boxes: tv_tensors.BoundingBoxes, matrix: np.ndarray, size: tuple[int, int],
               crop: tuple[int, int, int, int]) -> tv_tensors.BoundingBoxes:
    """Each box cut to the crop (the pixels outside it are gone before the warp), then its four
    corners through ``matrix``; the new box encloses them (a rotated box grows)."""
    xyxy = TF.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY).as_subclass(torch.Tensor)
    coords = xyxy.double().numpy().reshape(-1, 4)
    top, left, crop_h, crop_w = crop
    coords = np.clip(coords, [left, top, left, top], [left + crop_w, top + crop_h, left + crop_w, top + crop_h])
    corners = np.stack([coords[:, [0, 1]], coords[:, [2, 1]], coords[:, [0, 3]], coords[:, [2, 3]]], axis=1)
    mapped = _apply(matrix, corners.reshape(-1, 2)).reshape(-1, 4, 2)
    enclosing = np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)
    if abs(matrix[0, 1]) > 1e-9:  # rotated: a box reaching out of the picture encloses only its visible part
        height, width = size
        outside = (enclosing[:, 0] < 0) | (enclosing[:, 1] < 0) | (enclosing[:, 2] > width) | (enclosing[:, 3] > height)
        if outside.any():  # corners in order around each box
            enclosing[outside] = _visible_extent(mapped[outside][:, [0, 1, 3, 2]], width, height)
    out = tv_tensors.BoundingBoxes(torch.from_numpy(enclosing).to(xyxy.dtype if xyxy.is_floating_point() else torch.float32),
                                   format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=size)
    return TF.convert_bounding_box_format(out, new_format=boxes.format)


def _visible_extent(quads: np.ndarray, width: float, height: float) -> np.ndarray:
    """For convex quadrilaterals [N, 4, 2] (corners in order), the box [N, 4] enclosing the part of
    each inside [0, width] x [0, height]: the extremes lie among the corners inside, the crossings of
    its edges with the borders, and the picture's corners inside it. (A quad wholly outside keeps
    an empty box at its nearest border, which the box sanitiser then drops.)"""
    starts, ends = quads, np.roll(quads, -1, axis=1)
    candidates, valid = [quads], [_inside(quads, width, height)]
    for axis, limit in ((0, 0.0), (0, width), (1, 0.0), (1, height)):
        delta = ends[..., axis] - starts[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):  # edges parallel to the border: not valid below
            t = (limit - starts[..., axis]) / delta
            points = starts + t[..., None] * (ends - starts)
        points[..., axis] = limit
        candidates.append(points)
        valid.append((delta != 0) & (t >= 0) & (t <= 1) & _inside(points, width, height))
    picture = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    edges = ends - starts  # [N, 4, 2]
    to_corner = picture[None, None, :, :] - starts[:, :, None, :]  # [N, 4 edges, 4 corners, 2]
    cross = edges[:, :, None, 0] * to_corner[..., 1] - edges[:, :, None, 1] * to_corner[..., 0]
    covered = (cross >= -1e-9).all(axis=1) | (cross <= 1e-9).all(axis=1)  # [N, 4 corners]
    candidates.append(np.broadcast_to(picture, (len(quads), 4, 2)))
    valid.append(covered)
    points = np.concatenate(candidates, axis=1)
    keep = np.concatenate(valid, axis=1)[..., None]
    low = np.where(keep, points, np.inf).min(axis=1)
    high = np.where(keep, points, -np.inf).max(axis=1)
    nothing = ~keep.any(axis=(1, 2))
    clamped = np.clip(quads.mean(axis=1), 0, [width, height])
    low[nothing], high[nothing] = clamped[nothing], clamped[nothing]
    return np.concatenate([low, high], axis=1)


def _inside(points: np.ndarray, width: float, height: float, slack: float = 1e-6) -> np.ndarray:
    return ((points[..., 0] >= -slack) & (points[..., 0] <= width + slack)
            & (points[..., 1] >= -slack) & (points[..., 1] <= height + slack))
