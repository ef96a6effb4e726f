"""Augmentation: named presets (none, light, medium, heavy) per task, one option per operation to
override a preset, and the pipelines built from them, on tv_tensors and torchvision.transforms.v2.

One pipeline serves every task. All the geometry is one step (augment/geometry.py: crop, resize,
flips, rotation, shift, zoom as one OpenCV resize and one warp on uint8) that moves tv_tensors boxes,
masks and keypoints with the pixels; torchvision's v2 then clamps the boxes and drops the ones that
vanished (with their labels and instance masks). Colour (one 3x3 matrix per image), lighting, blur,
noise, normalisation and random erasing follow on float.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from cnnkit.augment.geometry import RandomGeometry
from cnnkit.errors import CnnkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OCCLUDED_FRACTION = (0.05, 0.6)  # --erasing: the share of the image hidden, drawn uniformly
MASK_IGNORE = 255  # segmentation masks: pixels uncovered by rotation/translation are not scored



@dataclass(frozen=True)
class AugmentSpec:
    """The strength of every operation; 0 (or crop_scale 1) turns it off. Probabilities are per image."""

    fliplr: float = 0.0  # probability
    flipud: float = 0.0  # probability
    degrees: float = 0.0  # rotation up to ± degrees
    translate: float = 0.0  # shift up to this fraction of the side
    scale: float = 0.0  # zoom by 1 ± scale
    crop_scale: float = 1.0  # random resized crop: minimum kept fraction of the area
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale: float = 0.0  # probability
    blur: float = 0.0  # probability
    noise: float = 0.0  # probability
    erasing: float = 0.0  # probability
    illumination: float = 0.0  # probability
    mixup: float = 0.0  # Beta alpha, batch level, classification only
    cutmix: float = 0.0  # Beta alpha, batch level, classification only

    def active(self) -> dict[str, float]:
        """The operations that are on, with their strength."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


OPERATIONS = tuple(f.name for f in fields(AugmentSpec))
PRESET_NAMES = ("none", "light", "medium", "heavy")
TASKS = ("classify", "detect", "segment", "embed")

_LIGHT = AugmentSpec(fliplr=0.5, degrees=10, translate=0.1, scale=0.1, brightness=0.2, contrast=0.2, saturation=0.2)
_MEDIUM = dataclasses.replace(_LIGHT, degrees=15, crop_scale=0.5, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02,
                              grayscale=0.05, blur=0.1, erasing=0.25, illumination=0.2)
_HEAVY = dataclasses.replace(_MEDIUM, degrees=25, translate=0.2, scale=0.3, crop_scale=0.25, brightness=0.4, contrast=0.4,
                             saturation=0.4, hue=0.05, grayscale=0.1, blur=0.2, noise=0.2, erasing=0.5, illumination=0.5,
                             mixup=0.2, cutmix=1.0)
_PRESETS = {"none": AugmentSpec(), "light": _LIGHT, "medium": _MEDIUM, "heavy": _HEAVY}


def preset(name: str, task: str = "classify") -> AugmentSpec:
    """The preset ``name`` for ``task``. MixUp and CutMix mix labels, which only classification can
    (boxes, masks and identities cannot be blended); detection and segmentation zoom in no further
    than half the area, which would cut too many objects."""
    if name not in _PRESETS:
        raise CnnkitError(f"unknown augmentation preset {name!r}", f"valid presets: {', '.join(PRESET_NAMES)}")
    if task not in TASKS:
        raise CnnkitError(f"unknown task {task!r}", f"valid tasks: {', '.join(TASKS)}")
    spec = _PRESETS[name]
    if task != "classify":
        spec = dataclasses.replace(spec, mixup=0.0, cutmix=0.0)
    if task in ("detect", "segment"):
        spec = dataclasses.replace(spec, crop_scale=max(spec.crop_scale, 0.5))
    return spec


def augment_spec(preset_name: str = "light", task: str = "classify", **overrides: float | None) -> AugmentSpec:
    """A preset with some operations overridden (None = keep the preset's value); unknown operations
    and out-of-range values are one-line errors listing what is valid."""
    unknown = sorted(set(overrides) - set(OPERATIONS))
    if unknown:
        raise CnnkitError(f"unknown augmentation operation {unknown[0]!r}", f"valid operations: {', '.join(OPERATIONS)}")
    spec = dataclasses.replace(preset(preset_name, task), **{k: float(v) for k, v in overrides.items() if v is not None})
    check_spec(spec, task)
    return spec


def check_spec(spec: AugmentSpec, task: str = "classify") -> None:
    for name in ("fliplr", "flipud", "grayscale", "blur", "noise", "erasing", "illumination"):
        value = getattr(spec, name)
        if not 0.0 <= value <= 1.0:
            raise CnnkitError(f"augmentation {name}: probability must be between 0 and 1, got {value:g}")
    for name, low, high in (("degrees", 0, 180), ("translate", 0, 1), ("scale", 0, 0.9), ("brightness", 0, 1), ("contrast", 0, 1),
                            ("saturation", 0, 1), ("hue", 0, 0.5), ("mixup", 0, math.inf), ("cutmix", 0, math.inf)):
        value = getattr(spec, name)
        if not low <= value <= high:
            raise CnnkitError(f"augmentation {name} must be between {low} and {high:g}, got {value:g}")
    if not 0.0 < spec.crop_scale <= 1.0:
        raise CnnkitError(f"augmentation crop_scale must be above 0 and at most 1, got {spec.crop_scale:g}")
    if task not in ("classify",) and (spec.mixup or spec.cutmix):
        raise CnnkitError(f"mixup and cutmix are for classification, not {task}", "set --mixup 0 --cutmix 0")


def spec_from_config(cfg: Any, task: str = "classify") -> AugmentSpec:
    """The AugmentSpec a TrainConfig asks for: ``--augment PRESET`` plus any per-operation option given."""
    return augment_spec(cfg.augment, task, **{name: getattr(cfg, name, None) for name in OPERATIONS})


class RandomIllumination:
    """A random lighting change on uint8 or float images: gamma (0.5 to 2), a linear shadow gradient
    (down to 40% brightness on one side, any direction) or a colour-temperature shift (red against blue
    by up to ±20%). Boxes and masks pass through: lighting moves no pixel."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(()) >= self.p:
            return image
        dtype = image.dtype
        x = TF.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)
        kind = int(torch.randint(3, ()))
        if kind == 0:
            x = x.clamp(min=0).pow(float(torch.empty(()).uniform_(math.log(0.5), math.log(2.0)).exp()))
        elif kind == 1:
            h, w = x.shape[-2:]
            angle = float(torch.empty(()).uniform_(0, 2 * math.pi))
            ys = torch.linspace(-1, 1, h)[:, None]
            xs = torch.linspace(-1, 1, w)[None, :]
            ramp = (xs * math.cos(angle) + ys * math.sin(angle)).clamp(-1, 1) * 0.5 + 0.5  # 0..1 across the image
            depth = float(torch.empty(()).uniform_(0.2, 0.6))
            x = x * (1.0 - depth * ramp)
        else:
            shift = float(torch.empty(()).uniform_(-0.2, 0.2))
            if x.shape[-3] == 3:
                gains = torch.tensor([1.0 + shift, 1.0, 1.0 - shift]).view(3, 1, 1)
                x = x * gains
        x = TF.to_dtype(x.clamp(0, 1), dtype, scale=True)
        return tv_tensors.wrap(x, like=image) if isinstance(image, tv_tensors.TVTensor) else x


def _geometry(spec: AugmentSpec, imgsz: int | None, mask_fill: int, keep_aspect: bool = False) -> RandomGeometry:
    return RandomGeometry(imgsz, spec.crop_scale, spec.fliplr, spec.flipud, spec.degrees, spec.translate, spec.scale, mask_fill,
                          keep_aspect)


def _float_ops(spec: AugmentSpec, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> list[Callable]:
    """Colour, lighting and blur (uint8, OpenCV where it is faster), then float: noise, normalisation,
    erasing."""
    ops: list[Callable] = []
    if spec.brightness or spec.contrast or spec.saturation or spec.hue:
        ops.append(v2.Lambda(ColourJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue), tv_tensors.Image))
    if spec.grayscale > 0:
        ops.append(v2.RandomGrayscale(spec.grayscale))
    if spec.illumination > 0:
        ops.append(v2.Lambda(RandomIllumination(spec.illumination), tv_tensors.Image))
    if spec.blur > 0:
        ops.append(v2.Lambda(RandomBlur(spec.blur), tv_tensors.Image))
    ops.append(v2.Lambda(ToFloat(), tv_tensors.Image))
    if spec.noise > 0:
        ops.append(v2.RandomApply([_RandomSigmaNoise(0.1)], p=spec.noise))
    if mean is not None:
        ops.append(v2.Lambda(ToFloat(mean, std), tv_tensors.Image))
    if spec.erasing > 0:
        ops.append(v2.Lambda(RandomOcclusion(spec.erasing), tv_tensors.Image))
    return ops


def _hwc_uint8(image: torch.Tensor) -> np.ndarray | None:
    """An HxWxC numpy view of a CPU uint8 image for OpenCV (None for anything else)."""
    pixels = image.as_subclass(torch.Tensor)
    if pixels.dtype != torch.uint8 or pixels.device.type != "cpu" or pixels.ndim != 3:
        return None
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


def _wrap_like(out: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.TVTensor) else out


class RandomOcclusion:
    """With probability p, hide a random fraction (uniform in ``coverage``) of the image under patches
    of 3-15% of its area each (aspect 1:3 to 3:1; at most 12), each filled with noise, one random
    colour, or a copy of another part of the same image. Real occluders come in pieces, in any
    colour, often textured, and hide a lot; one patch of noise of at most a third (torchvision's
    RandomErasing) trained models that larger, solid or textured occluders still fooled
    (docs/augment-imbalance-robustness.md). Works on the normalised float image: noise is standard
    normal there, colours are drawn in the same range."""

    def __init__(self, p: float, coverage: tuple[float, float] = OCCLUDED_FRACTION, piece: tuple[float, float] = (0.03, 0.15)):
        self.p, self.coverage, self.piece = p, coverage, piece

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return image
        pixels = image.as_subclass(torch.Tensor)
        out = pixels.clone()
        channels, height, width = pixels.shape[-3:]
        hidden = torch.zeros(height, width, dtype=torch.bool)
        target = float(torch.empty(()).uniform_(*self.coverage)) * height * width
        for _ in range(12):
            if float(hidden.sum()) >= target:
                break
            area = height * width * float(torch.empty(()).uniform_(*self.piece))
            aspect = math.exp(float(torch.empty(()).uniform_(math.log(1 / 3), math.log(3))))
            h = min(height, max(1, round(math.sqrt(area / aspect))))
            w = min(width, max(1, round(math.sqrt(area * aspect))))
            top, left = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
            fill = int(torch.randint(3, ()))
            if fill == 0:
                patch = torch.randn(channels, h, w, dtype=out.dtype, device=out.device)
            elif fill == 1:
                patch = torch.randn(channels, 1, 1, dtype=out.dtype, device=out.device).expand(channels, h, w)
            else:
                src_top, src_left = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
                patch = pixels[..., src_top:src_top + h, src_left:src_left + w]
            out[..., top:top + h, left:left + w] = patch
            hidden[top:top + h, left:left + w] = True
        return _wrap_like(out, image)


class ToFloat:
    """uint8 -> float 0..1 in contiguous CHW (the geometry step leaves a channels-last view, on which
    the element-wise ops that follow run at half speed); with ``mean`` and ``std``, a float image is
    normalised in one multiply-add: (x - mean) / std."""

    def __init__(self, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None):
        self.mean = mean
        if mean is not None:
            self.scale = 1.0 / torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
            self.shift = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * self.scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.as_subclass(torch.Tensor)
        out = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        if self.mean is None:
            out = out.div_(255.0) if pixels.dtype == torch.uint8 else out
        else:
            out = out.mul_(self.scale.to(out.device)).sub_(self.shift.to(out.device))
        return _wrap_like(out, image)


# RGB -> YIQ: hue is the angle in the I-Q plane, so a hue shift is a rotation about the grey axis
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INVERSE = np.linalg.inv(_YIQ)
_GREY = np.array([0.299, 0.587, 0.114])


class ColourJitter:
    """Brightness, contrast, saturation and hue changes, folded into one 3x3 colour matrix and an
    offset per image: one pass over the pixels (cv2.transform on uint8) instead of torchvision's four,
    whose hue step converts to HSV and back (2.7 ms against 0.1 ms at 224 px on one core). Factors as
    torchvision's ColorJitter: brightness, contrast and saturation uniform in [1 - x, 1 + x], hue
    shift in [-h, h] of a full turn; applied in that order and clamped once at the end."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def matrix(self, mean_grey: float, channels: int = 3) -> np.ndarray:
        """A random [C, C + 1] affine colour map (last column: the offset, in the image's own scale);
        ``mean_grey`` is the image's mean grey level, which contrast blends towards. (numpy: for a
        3x3 matrix, torch's per-call overhead was about 60 % of the whole jitter in cProfile.)"""
        b, c, s = (float(torch.empty(()).uniform_(max(0.0, 1 - x), 1 + x)) if x else 1.0
                   for x in (self.brightness, self.contrast, self.saturation))
        angle = float(torch.empty(()).uniform_(-self.hue, self.hue)) * 2 * math.pi if self.hue else 0.0
        if channels != 3:  # grey images: brightness and contrast only
            linear = np.eye(channels)
        else:
            saturate = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _GREY)
            cos, sin = math.cos(angle), math.sin(angle)
            rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
            linear = _YIQ_INVERSE @ rotate @ _YIQ @ saturate  # both keep grey grey
        offset = np.full((channels, 1), (1 - c) * b * mean_grey)
        return np.concatenate([linear * (b * c), offset], axis=1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.as_subclass(torch.Tensor)
        channels = pixels.shape[-3]
        hwc = _hwc_uint8(image)
        if hwc is not None and channels in (1, 3):
            grey = float(np.dot(cv2.mean(hwc)[:3], _GREY)) if channels == 3 else cv2.mean(hwc)[0]
            out = cv2.transform(hwc, self.matrix(grey if self.contrast else 0.0, channels))  # saturates to 0..255
            return _wrap_like(torch.from_numpy(out.reshape(hwc.shape)).permute(2, 0, 1), image)
        x = TF.to_dtype(pixels, torch.float32, scale=True)
        grey = float((torch.from_numpy(_GREY).to(x) @ x.reshape(3, -1)).mean()) if channels == 3 else float(x.mean())
        matrix = torch.from_numpy(self.matrix(grey if self.contrast else 0.0, channels)).to(x)
        out = torch.addmm(matrix[:, -1:], matrix[:, :-1], x.reshape(channels, -1)).clamp_(0, 1).reshape(x.shape)
        return _wrap_like(TF.to_dtype(out, pixels.dtype, scale=True), image)


class RandomBlur:
    """With probability p, a Gaussian blur with sigma uniform in [0.1, 2] (kernel 3 sigma on each side,
    reflected borders): OpenCV's on uint8, two 1-D convolutions otherwise."""

    def __init__(self, p: float, sigma: tuple[float, float] = (0.1, 2.0)):
        self.p, self.sigma = p, sigma

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return image
        sigma = float(torch.empty(()).uniform_(*self.sigma))
        radius = max(1, math.ceil(3 * sigma))
        hwc = _hwc_uint8(image)
        if hwc is not None:
            out = cv2.GaussianBlur(hwc, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT_101)
            return _wrap_like(torch.from_numpy(out.reshape(hwc.shape)).permute(2, 0, 1), image)
        pixels = image.as_subclass(torch.Tensor)
        x = TF.to_dtype(pixels, torch.float32, scale=True)
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device) / sigma) ** 2)
        taps = taps / taps.sum()
        channels = x.shape[-3]
        x = F.pad(x.reshape(1, channels, *x.shape[-2:]), (radius, radius, radius, radius), mode="reflect")
        x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
        return _wrap_like(TF.to_dtype(x.reshape(pixels.shape), pixels.dtype, scale=True), image)


class _RandomSigmaNoise(v2.GaussianNoise):
    """Gaussian noise with sigma drawn uniformly up to ``max_sigma`` per image."""

    def __init__(self, max_sigma: float):
        super().__init__(sigma=max_sigma)
        self.max_sigma = max_sigma

    def __call__(self, *inputs: Any) -> Any:
        self.sigma = float(torch.empty(()).uniform_(0.0, self.max_sigma))
        return super().__call__(*inputs)


def classify_transforms(imgsz: int, train: bool, spec: AugmentSpec | None = None,
                        mean: tuple[float, ...] | None = IMAGENET_MEAN, std: tuple[float, ...] | None = IMAGENET_STD) -> v2.Compose:
    """PIL RGB image (or uint8 HxWx3 array or 3xHxW tensor) -> float tensor [3, imgsz, imgsz], normalised
    (mean None: 0..1)."""
    spec = spec if (train and spec is not None) else AugmentSpec()
    return v2.Compose([_geometry(spec, imgsz, 0), *_float_ops(spec, mean, std)])


def dense_transforms(imgsz: int | None, train: bool, spec: AugmentSpec | None = None,
                     mean: tuple[float, ...] | None = IMAGENET_MEAN, std: tuple[float, ...] | None = IMAGENET_STD,
                     mask_fill: int = 0, keep_aspect: bool = False) -> v2.Compose:
    """(image, target) -> (float image, target) for detection and segmentation, where target is a dict
    that may hold ``boxes`` (tv_tensors.BoundingBoxes), ``labels`` [N], ``masks`` (tv_tensors.Mask) and
    keypoints. Boxes follow the pixels, are clamped to the image, and boxes (with their labels and
    instance masks) smaller than one pixel afterwards are dropped; imgsz None keeps the input size.
    Where rotation or translation uncovers the border, masks get ``mask_fill``: 0 (background) suits
    instance masks, MASK_IGNORE (255) semantic ones, so those pixels are not scored. ``keep_aspect``
    resizes the longer side to imgsz (detectors that letterbox) instead of squashing to imgsz x imgsz."""
    spec = spec if (train and spec is not None) else AugmentSpec()
    check_spec(spec, "detect")
    return v2.Compose([_geometry(spec, imgsz, mask_fill, keep_aspect), v2.ClampBoundingBoxes(), _DropVanishedBoxes(), *_float_ops(spec, mean, std)])


class _DropVanishedBoxes:
    """v2.SanitizeBoundingBoxes (drops boxes under a pixel wide, with the labels and instance masks that
    share their index) for samples that hold boxes; segmentation samples without boxes pass through."""

    def __init__(self) -> None:
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0)

    def __call__(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if any(isinstance(leaf, tv_tensors.BoundingBoxes) for leaf in tree_flatten(sample)[0]):
            return self.sanitize(*inputs)
        return sample


def batch_mixer(spec: AugmentSpec, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """MixUp and/or CutMix over a batch (one of them, chosen per batch, when both are on): (images,
    labels [B]) -> (mixed images, class probabilities [B, C]); None when both are off."""
    mixers = []
    if spec.mixup > 0:
        mixers.append(v2.MixUp(alpha=spec.mixup, num_classes=num_classes))
    if spec.cutmix > 0:
        mixers.append(v2.CutMix(alpha=spec.cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def describe(spec: AugmentSpec) -> str:
    """One line naming the operations that are on, for logs and plot titles."""
    active = spec.active()
    return ", ".join(f"{k} {v:g}" for k, v in active.items()) if active else "no augmentation"
