"""cnnkit's own YOLO-style detector: single-stage, anchor-free, written in this project.

    image ──► backbone ──► C3 (stride 8), C4 (16), C5 (32)
                              │
                              ▼
              PAN neck: top-down (C5 ─up─► C4 ─up─► C3), then bottom-up (N3 ─down─► N4 ─down─► N5)
                              │
                              ▼
              decoupled head per level: a box branch (4 distances, each a distribution over
              ``reg_max`` bins when DFL is on) and a class branch (C logits), at every grid cell

Backbone: our CSP blocks (Cross Stage Partial: half of the channels bypass a chain of residual
bottlenecks and every bottleneck's output is concatenated before a 1x1 fusion; Wang et al. 2020)
with spatial pyramid pooling at the end; or any timm CNN through ``features_only`` (its stride 8,
16 and 32 stages). ``yolo_n|s|m`` scale the widths and depths.

Anchor-free: each grid cell's centre is a point; the head predicts the distances from that point to
the box's left, top, right and bottom edges in units of the level's stride. With distribution focal
loss (DFL; Li et al. 2020, Generalized Focal Loss) each distance is a softmax over 0..reg_max-1 and
its expectation is the distance. Training targets come from ``models/yolo_loss.py``.

The module takes and returns what torchvision's detectors do, so it plugs into the detection task
unchanged: a list of float images in [0, 1] of any size (resized so the longer side is ``imgsz``,
normalised, padded right and bottom to a multiple of 32), plus targets in training, where it returns
its losses; in eval mode [{"boxes" (input pixels), "scores", "labels" (1..C)}] after
``torchvision.ops.batched_nms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import TimmFeatures
from cnnkit.models.yolo_ops import STRIDES, anchor_points, decode_boxes, distances_from_logits, encode_boxes  # noqa: F401 - encode_boxes: read here by others

REG_MAX = 16  # DFL bins: distances up to 15 strides (120 px at stride 8, 480 px at stride 32)
PAD_MULTIPLE = 32
PRE_NMS_TOP = 3000  # candidates (cell, class) kept by score before NMS
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class YoloScale:
    width: float       # multiplies the channels 64, 128, 256, 512, 1024
    depth: float       # multiplies the bottlenecks per stage 3, 6, 6, 3
    max_channels: int  # caps the widest stages (the deepest cost most)


YOLO_SCALES = {"yolo_n": YoloScale(0.25, 0.34, 1024), "yolo_s": YoloScale(0.5, 0.34, 1024), "yolo_m": YoloScale(0.75, 0.67, 768)}
BASE_CHANNELS = (64, 128, 256, 512, 1024)
BASE_DEPTHS = (3, 6, 6, 3)


class ConvBnAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    def __init__(self, channels: int, shortcut: bool = True):
        super().__init__()
        self.conv1 = ConvBnAct(channels, channels, 3)
        self.conv2 = ConvBnAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """1x1 conv to two halves; the second runs through ``n`` bottlenecks; both halves and every
    bottleneck's output are concatenated and fused by a 1x1 conv (every depth reaches the output)."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.hidden = c_out // 2
        self.split = ConvBnAct(c_in, 2 * self.hidden)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
        self.fuse = ConvBnAct((2 + n) * self.hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = self.split(x)
        parts = [halves[:, : self.hidden], halves[:, self.hidden:]]  # slices, not chunk(): FX (int8) traces them
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1))


class SpatialPyramidPool(nn.Module):
    """Max-pools of growing reach (three 5x5 pools in a row: 5, 9, 13) concatenated: context at
    several sizes for the deepest features, at the cost of a few pools."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__()
        self.reduce = ConvBnAct(c_in, c_in // 2)
        self.pool = nn.MaxPool2d(kernel, 1, kernel // 2)
        self.fuse = ConvBnAct(c_in // 2 * 4, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        pooled = [x]
        for _ in range(3):
            pooled.append(self.pool(pooled[-1]))
        return self.fuse(torch.cat(pooled, dim=1))


def scaled_channels(scale: YoloScale) -> list[int]:
    return [max(8, int(math.ceil(min(c, scale.max_channels) * scale.width / 8) * 8)) for c in BASE_CHANNELS]


def scaled_depth(n: int, scale: YoloScale) -> int:
    return max(1, round(n * scale.depth))


class CSPBackbone(nn.Module):
    """Stem (stride 2), then four stages of a stride-2 conv and a CSP block; SPP on the last.
    Returns the stride 8, 16 and 32 features."""

    def __init__(self, scale: YoloScale):
        super().__init__()
        c = scaled_channels(scale)
        d = [scaled_depth(n, scale) for n in BASE_DEPTHS]
        self.stem = ConvBnAct(3, c[0], 3, 2)
        self.stage1 = nn.Sequential(ConvBnAct(c[0], c[1], 3, 2), CSPBlock(c[1], c[1], d[0]))
        self.stage2 = nn.Sequential(ConvBnAct(c[1], c[2], 3, 2), CSPBlock(c[2], c[2], d[1]))
        self.stage3 = nn.Sequential(ConvBnAct(c[2], c[3], 3, 2), CSPBlock(c[3], c[3], d[2]))
        self.stage4 = nn.Sequential(ConvBnAct(c[3], c[4], 3, 2), CSPBlock(c[4], c[4], d[3]), SpatialPyramidPool(c[4], c[4]))
        self.channels = [c[2], c[3], c[4]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage2(self.stage1(self.stem(x)))
        c4 = self.stage3(c3)
        return [c3, c4, self.stage4(c4)]


class PANNeck(nn.Module):
    """Path aggregation (Liu et al. 2018, PANet): a top-down pass carries the deep semantics to the fine
    levels (as FPN does), then a bottom-up pass carries the fine localisation back to the coarse ones."""

    def __init__(self, in_channels: list[int], out_channels: list[int], depth: int):
        super().__init__()
        a, b, c = in_channels
        oa, ob, oc = out_channels
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down4 = CSPBlock(c + b, ob, depth, shortcut=False)
        self.top_down3 = CSPBlock(ob + a, oa, depth, shortcut=False)
        self.down3 = ConvBnAct(oa, oa, 3, 2)
        self.bottom_up4 = CSPBlock(oa + ob, ob, depth, shortcut=False)
        self.down4 = ConvBnAct(ob, ob, 3, 2)
        self.bottom_up5 = CSPBlock(ob + c, oc, depth, shortcut=False)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = features
        p4 = self.top_down4(torch.cat([self.up(c5), c4], dim=1))
        n3 = self.top_down3(torch.cat([self.up(p4), c3], dim=1))
        n4 = self.bottom_up4(torch.cat([self.down3(n3), p4], dim=1))
        n5 = self.bottom_up5(torch.cat([self.down4(n4), c5], dim=1))
        return [n3, n4, n5]


class DecoupledHead(nn.Module):
    """Per level, separate box and class branches (two 3x3 convs each, then a 1x1 prediction):
    classification and localisation want different features (Ge et al. 2021, YOLOX)."""

    def __init__(self, channels: list[int], num_classes: int, reg_max: int):
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        box_width = max(16, channels[0] // 4, 4 * reg_max)
        cls_width = max(channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(nn.Sequential(ConvBnAct(c, box_width, 3), ConvBnAct(box_width, box_width, 3),
                                               nn.Conv2d(box_width, 4 * reg_max, 1)) for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(ConvBnAct(c, cls_width, 3), ConvBnAct(cls_width, cls_width, 3),
                                               nn.Conv2d(cls_width, num_classes, 1)) for c in channels)

    def init_biases(self, imgsz: int) -> None:
        """Class logits start at a prior of about 5 objects an image spread over the level's cells
        (so the first steps are not swamped by the background's loss); DFL bins start flat."""
        for branch, stride in zip(self.cls, STRIDES):
            # a small image over a coarse level has fewer cells than 5 objects: a probability stays below 1
            prior = min(5 / self.num_classes / (imgsz / stride) ** 2, 0.5)
            nn.init.constant_(branch[-1].bias, math.log(prior / (1 - prior)))
        for branch in self.box:
            nn.init.constant_(branch[-1].bias, 1.0)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level [B, 4 * reg_max + C, H, W]."""
        return [torch.cat([box(x), cls(x)], dim=1) for x, box, cls in zip(features, self.box, self.cls)]


class YoloDetector(nn.Module):
    """The whole detector: preprocessing, backbone, PAN neck, decoupled head, loss (training) or
    decoding and NMS (eval). ``score_thresh``, ``nms_thresh`` and ``detections_per_img`` are read at
    inference (the names torchvision's single-shot detectors use)."""

    def __init__(self, name: str, num_classes: int, imgsz: int = 320, backbone: str | None = None, pretrained: bool = False,
                 dfl: bool = True, box_loss: str = "ciou", cls_loss: str = "bce", score_thresh: float = 0.001,
                 nms_thresh: float = 0.5, detections_per_img: int = 100):
        super().__init__()
        scale = YOLO_SCALES[name]
        if backbone:
            self.backbone: nn.Module = TimmFeatures(backbone, STRIDES, "a YOLO head", pretrained)
        else:
            if pretrained:
                raise CnnkitError(f"{name}: cnnkit publishes no pretrained weights for its own CSP backbone",
                                  "pass --backbone NAME (a timm CNN with ImageNet weights) with --pretrained, or --backbone-from FILE")
            self.backbone = CSPBackbone(scale)
        c = scaled_channels(scale)
        self.neck = PANNeck(self.backbone.channels, [c[2], c[3], c[4]], scaled_depth(BASE_DEPTHS[0], scale))
        # transfer learning's backbone (models.backbone_module): a timm model's tensors are named as timm's under body
        self.backbone_module = "backbone.body" if backbone else "backbone"
        self.reg_max = REG_MAX if dfl else 1
        self.head = DecoupledHead([c[2], c[3], c[4]], num_classes, self.reg_max)
        self.head.init_biases(imgsz)
        self.num_classes, self.imgsz = num_classes, imgsz
        self.box_loss, self.cls_loss = box_loss, cls_loss
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ preprocessing
    def prepare(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[float], list[tuple[int, int]]]:
        """(normalised batch padded to a multiple of 32, each image's resize factor, its original (H, W))."""
        resized, scales, sizes = [], [], []
        for image in images:
            h, w = image.shape[-2:]
            factor = self.imgsz / max(h, w)
            if abs(factor - 1) > 1e-6:
                size = (max(1, round(h * factor)), max(1, round(w * factor)))
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=factor < 1)[0]
            resized.append(image)
            scales.append(factor)
            sizes.append((h, w))
        height = max(int(math.ceil(im.shape[-2] / PAD_MULTIPLE) * PAD_MULTIPLE) for im in resized)
        width = max(int(math.ceil(im.shape[-1] / PAD_MULTIPLE) * PAD_MULTIPLE) for im in resized)
        batch = resized[0].new_zeros(len(resized), 3, height, width)  # 0 after normalising = the mean colour
        for i, image in enumerate(resized):
            batch[i, :, : image.shape[-2], : image.shape[-1]] = (image - self.mean[0]) / self.std[0]
        return batch, scales, sizes

    def raw_outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """[B, N, 4 * reg_max + C] over every cell of the three levels, and the levels' (H, W)."""
        levels = self.head(self.neck(self.backbone(batch)))
        shapes = [(x.shape[-2], x.shape[-1]) for x in levels]
        return torch.cat([x.flatten(2) for x in levels], dim=2).transpose(1, 2), shapes

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        batch, scales, sizes = self.prepare(images)
        outputs, shapes = self.raw_outputs(batch)
        if self.training:
            if targets is None:
                raise ValueError("YoloDetector in training mode needs targets")
            from cnnkit.models.yolo_loss import yolo_loss

            scaled = [{"boxes": t["boxes"] * s, "labels": t["labels"]} for t, s in zip(targets, scales)]
            return yolo_loss(outputs, shapes, scaled, self.num_classes, self.reg_max, self.box_loss, self.cls_loss)
        return self.postprocess(outputs, shapes, scales, sizes)

    # ------------------------------------------------------------------ inference
    def postprocess(self, outputs: torch.Tensor, shapes: list[tuple[int, int]], scales: list[float],
                    sizes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        from torchvision.ops import batched_nms

        outputs = outputs.float()
        points, strides = anchor_points(shapes, outputs.device)
        boxes = decode_boxes(points, distances_from_logits(outputs[..., : 4 * self.reg_max], self.reg_max), strides)
        scores = outputs[..., 4 * self.reg_max:].sigmoid()
        detections = []
        for image_boxes, image_scores, factor, (h, w) in zip(boxes, scores, scales, sizes):
            # every (cell, class) pair above the threshold is a candidate: a cell may hold two classes
            flat = image_scores.flatten()
            keep = torch.nonzero(flat > self.score_thresh).squeeze(1)
            if keep.numel() > PRE_NMS_TOP:
                keep = keep[flat[keep].topk(PRE_NMS_TOP).indices]
            cells, classes = keep // self.num_classes, keep % self.num_classes
            found_boxes = image_boxes[cells] / factor
            found_boxes[:, 0::2] = found_boxes[:, 0::2].clamp(0, w)
            found_boxes[:, 1::2] = found_boxes[:, 1::2].clamp(0, h)
            found_scores = flat[keep]
            chosen = batched_nms(found_boxes, found_scores, classes, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": found_boxes[chosen], "scores": found_scores[chosen], "labels": classes[chosen] + 1})
        return detections


def build_yolo(name: str, num_classes: int, imgsz: int, backbone: str | None = None, pretrained: bool = False, dfl: bool = True,
               box_loss: str = "ciou", cls_loss: str = "bce", score_thresh: float = 0.001, nms_iou: float = 0.5,
               max_det: int = 100) -> YoloDetector:
    return YoloDetector(name, num_classes, imgsz, backbone, pretrained, dfl, box_loss, cls_loss, score_thresh, nms_iou, max_det)


def fuse_batchnorm(net: YoloDetector) -> YoloDetector:
    """An eval-mode copy with each ConvBnAct's BatchNorm folded into its convolution."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(net).eval()
    for module in fused.modules():
        if isinstance(module, ConvBnAct) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return fused
