"""Detectors from torchvision, built for the data at hand.

    fasterrcnn   two-stage: a CNN backbone with a feature pyramid (FPN), the region proposal network
                 (RPN) proposing boxes from anchors, RoI-Align and the box head classifying and refining
                 them. Backbones: mobilenet_v3_large (default) and resnet50 as torchvision builds them,
                 or any timm CNN (its last three stages through torchvision's FeaturePyramidNetwork).
    ssd          single-shot, VGG16 backbone (torchvision's ssd300_vgg16)
    ssdlite      single-shot, MobileNetV3-Large backbone and depthwise heads (ssdlite320_mobilenet_v3_large)
    yolo_n|s|m   cnnkit's own single-stage anchor-free detector (models/yolo.py): CSP backbone or a timm
                 CNN, PAN neck, decoupled head at strides 8/16/32, task-aligned assignment

Every model takes a list of float images in [0, 1] of any size and normalises and resizes them itself
(Faster R-CNN: longer side to ``imgsz``, aspect kept; SSD: to imgsz x imgsz); boxes come back in the
input's pixels. Label 0 is the background: class k of the dataset is label k + 1.

Anchors: torchvision's defaults (32 to 512 px) suit 800-px COCO images. ``fit_anchors`` spreads the
sizes over the training boxes' own range at ``imgsz`` instead, and the chosen sizes travel in the
weights' metadata so that val and predict rebuild the same model.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnkit import registry
from cnnkit.errors import CnnkitError
from cnnkit.registry import register

YOLO_MODELS = ("yolo_n", "yolo_s", "yolo_m")  # the YOLO-style family: its own options (--dfl, --box-loss, …) apply
TORCHVISION_BACKBONES = ("mobilenet_v3_large", "resnet50")
DEFAULT_RATIOS = (0.5, 1.0, 2.0)  # height / width, as torchvision's AnchorGenerator takes them
# Faster R-CNN settings for small images on a CPU: torchvision's defaults sample 512 RoIs per image for
# the box head (about 6 GFLOPs an image at 7x7x256 -> 1024) and keep 2000 proposals; a few objects per
# image need far fewer. Measured: a training step of 8 images at 320 px, 2.3 s with 128 RoIs, 1.5 s with 64.
FASTER_RCNN_SPEED = {"rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
                     "rpn_pre_nms_top_n_test": 500, "rpn_post_nms_top_n_test": 300, "box_batch_size_per_image": 64}


@dataclass(frozen=True)
class YoloOptions:
    """How the YOLO-style detectors learn (stored with their weights)."""

    dfl: bool = True          # box sides as distributions (distribution focal loss), else one value each
    box_loss: str = "ciou"    # ciou | giou
    cls_loss: str = "bce"     # bce | varifocal

    def to_dict(self) -> dict[str, Any]:
        return {"dfl": self.dfl, "box_loss": self.box_loss, "cls_loss": self.cls_loss}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "YoloOptions":
        return cls(**(data or {}))


@dataclass(frozen=True)
class Anchors:
    """Anchor box sides in pixels per pyramid level, and height/width ratios (shared by every level)."""

    sizes: tuple[tuple[float, ...], ...]
    ratios: tuple[float, ...] = DEFAULT_RATIOS

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": [list(s) for s in self.sizes], "ratios": list(self.ratios)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Anchors":
        return cls(tuple(tuple(float(v) for v in s) for s in data["sizes"]), tuple(float(r) for r in data["ratios"]))


def parse_model(model: str, backbone: str | None) -> tuple[str, str | None]:
    """(family, backbone) with the defaults filled in and the combination checked."""
    detectors = registry.names("detect")
    if model not in detectors:
        near = registry.near(model, detectors, 1)
        raise CnnkitError(f"--model {model!r} is not a detector", f"did you mean '{near[0]}'?" if near else
                          registry.other_task_hint(model, "detect") or f"choose one of {', '.join(detectors)}")
    if model == "fasterrcnn":
        return model, backbone or "mobilenet_v3_large"
    if model in YOLO_MODELS:
        return model, backbone or None  # None: cnnkit's CSP backbone; else a timm CNN
    if backbone and backbone not in ("vgg16" if model == "ssd" else "mobilenet_v3_large",):
        raise CnnkitError(f"--backbone {backbone} does not apply to {model}: its backbone is fixed "
                          f"({'vgg16' if model == 'ssd' else 'mobilenet_v3_large'})", "use --model fasterrcnn for another backbone")
    return model, None


def pyramid_levels(model: str, backbone: str | None) -> tuple[int, bool]:
    """(number of FPN levels, whether every level shares all anchor sizes) of a Faster R-CNN."""
    if backbone == "mobilenet_v3_large":
        return 3, True  # torchvision: two stages + max-pool level, all sizes at every level
    if backbone == "resnet50":
        return 5, False
    return 4, False  # timm: three stages + max-pool level


def fit_anchors(box_sides: np.ndarray, aspects: np.ndarray, imgsz: int, levels: int, shared: bool) -> Anchors:
    """Anchor sizes spread geometrically over the 2nd to 98th percentile of the training boxes' sides
    (sqrt of the area, at ``imgsz``), five of them (shared by all levels) or one per level, small to
    large; ratios widened past 0.5 / 2 only when the boxes are that elongated."""
    sides = np.asarray(box_sides, dtype=np.float64)
    sides = sides[np.isfinite(sides) & (sides > 0)]
    if sides.size == 0:
        raise CnnkitError("the training set has no boxes to fit anchors to")
    low = max(4.0, float(np.percentile(sides, 2)))
    high = min(float(imgsz), max(low * 2, float(np.percentile(sides, 98))))
    count = 5 if shared else levels
    values = tuple(round(float(v), 1) for v in np.geomspace(low, high, count))
    sizes = (values,) * levels if shared else tuple((v,) for v in values)
    ratio_low, ratio_high = np.percentile(np.asarray(aspects, dtype=np.float64), [5, 95]) if len(aspects) else (1.0, 1.0)
    ratios = (round(min(0.5, float(ratio_low)), 3), 1.0, round(max(2.0, float(ratio_high)), 3))
    return Anchors(sizes, ratios)


def default_anchors(model: str, backbone: str | None) -> Anchors:
    """torchvision's own anchors (used with --pretrained COCO weights, whose RPN was trained on them)."""
    levels, shared = pyramid_levels(model, backbone)
    base = (32.0, 64.0, 128.0, 256.0, 512.0)
    return Anchors((base,) * levels if shared else tuple((v,) for v in base[:levels]))


class TimmFPN(nn.Module):
    """A timm CNN's last three feature stages (strides 8, 16, 32 for most) through torchvision's
    FeaturePyramidNetwork plus a max-pool level: the ``backbone`` torchvision's FasterRCNN expects."""

    def __init__(self, name: str, pretrained: bool = False, out_channels: int = 256):
        super().__init__()
        import timm
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True)
        except RuntimeError as exc:  # timm: unknown model, or no features_only support
            raise CnnkitError(f"--backbone {name}: {exc}".splitlines()[0], "use a timm CNN (resnet18, efficientnet_b0, "
                              "convnext_tiny, …) or mobilenet_v3_large / resnet50") from None
        channels = self.body.feature_info.channels()
        self.keep = list(range(len(channels)))[-3:]
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.keep], out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(x)
        return self.fpn(OrderedDict((str(n), features[i]) for n, i in enumerate(self.keep)))


def build_detector(model: str, num_classes: int, imgsz: int, backbone: str | None = None, anchors: Anchors | None = None,
                   pretrained: bool = False, score_thresh: float = 0.001, nms_iou: float = 0.5, max_det: int = 100,
                   yolo: YoloOptions | None = None) -> nn.Module:
    """A detector for ``num_classes`` object classes (torchvision's add the background). ``anchors``
    default to torchvision's; ``pretrained`` loads torchvision's COCO detector weights (every tensor
    but the class-specific ones) for its own backbones, timm's ImageNet weights for a timm backbone."""
    model, backbone = parse_model(model, backbone)
    with _published_weights(model, backbone, pretrained):
        return registry.MODELS[model].build(model=model, num_classes=num_classes, imgsz=imgsz, backbone=backbone,
                                            anchors=anchors, pretrained=pretrained, score_thresh=score_thresh,
                                            nms_iou=nms_iou, max_det=max_det, yolo=yolo)


def build_maskrcnn(num_classes: int, imgsz: int, backbone: str | None = None, anchors: Anchors | None = None,
                   pretrained: bool = False, score_thresh: float = 0.001, nms_iou: float = 0.5, max_det: int = 100,
                   mask_layers: Sequence[int] | None = None) -> nn.Module:
    """torchvision's Mask R-CNN for ``num_classes`` classes: Faster R-CNN as ``build_detector`` makes it
    (same backbones, anchors and RoI settings) plus the mask branch, RoI-Align at 14x14 into
    ``mask_layers`` 3x3 convolutions and a 2x deconvolution to one 28x28 mask per class. ``mask_layers``
    None: torchvision's four of 256 for resnet50 (its COCO Mask R-CNN weights fit, with ``pretrained``),
    else MASK_LAYERS_LIGHT (see there). mobilenet_v3_large with ``pretrained`` starts from torchvision's
    COCO Faster R-CNN: everything but the mask branch."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    backbone = backbone or "mobilenet_v3_large"
    layers = tuple(mask_layers or default_mask_layers(backbone))
    with _published_weights("maskrcnn", backbone, pretrained):
        parts = _rcnn_parts(backbone, num_classes, imgsz, anchors or default_anchors("maskrcnn", backbone), pretrained,
                            score_thresh, nms_iou, max_det)
        # torchvision takes a mask predictor only beside a box predictor (and no class count): its default
        # box predictor, on the default box head's 1024 features
        options = {**parts.options, "num_classes": None, "box_predictor": FastRCNNPredictor(1024, num_classes + 1)}
        net = MaskRCNN(parts.body, **options, mask_roi_pool=MultiScaleRoIAlign(parts.featmaps, output_size=14, sampling_ratio=2),
                       mask_head=MaskRCNNHeads(parts.body.out_channels, layers, 1),
                       mask_predictor=MaskRCNNPredictor(layers[-1], layers[-1], num_classes + 1))
        if pretrained and backbone in TORCHVISION_BACKBONES:
            _load_coco(net, "fasterrcnn_mobilenet_v3_large_fpn" if backbone == "mobilenet_v3_large" else "maskrcnn_resnet50_fpn")
    return net


# `cnnkit segment train --model maskrcnn` (models/segmenters.py parses its --encoder into the backbone)
register("maskrcnn", task="instance", about="Mask R-CNN (torchvision), instance masks; --encoder mobilenet_v3_large, "
         "resnet50 or a timm CNN")(build_maskrcnn)


# torchvision's mask head (four 3x3 convolutions of 256 channels on 14x14 RoIs) costs about 1 GFLOP per RoI,
# and it runs on every detection in eval: 100 per image at --conf 0.001 made a 320-px image 113 GFLOPs, against
# Faster R-CNN's 10, and training paid for it on every positive RoI. Two convolutions of 128: 30 GFLOPs.
# Only resnet50 has published Mask R-CNN weights to stay compatible with.
MASK_LAYERS_LIGHT = (128, 128)
MASK_LAYERS_TORCHVISION = (256, 256, 256, 256)


def default_mask_layers(backbone: str) -> tuple[int, ...]:
    return MASK_LAYERS_TORCHVISION if backbone == "resnet50" else MASK_LAYERS_LIGHT


@contextlib.contextmanager
def _published_weights(model: str, backbone: str | None, pretrained: bool):
    """A failed download of published weights (OSError, URLError, HTTPError, hub errors…) as one line."""
    try:
        yield
    except CnnkitError:
        raise
    except Exception as exc:
        if not pretrained:
            raise
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CnnkitError(f"could not load published weights for {model} ({backbone or 'its backbone'}): {reason}",
                          "drop --pretrained (needs the internet once), or pass --backbone-from / --weights FILE") from None


# The detect entries of cnnkit's model table (build_detector looks --model up there). Each builder takes
# the detect task's options as keywords, (model, num_classes, imgsz, backbone, anchors, pretrained,
# score_thresh, nms_iou, max_det, yolo), and uses those that apply to its family.
@register("fasterrcnn", task="detect", about="Faster R-CNN (torchvision), two-stage with FPN; --backbone "
          "mobilenet_v3_large, resnet50 or a timm CNN")
def _fasterrcnn(model: str, num_classes: int, imgsz: int, backbone: str, anchors: Anchors | None, pretrained: bool,
                score_thresh: float, nms_iou: float, max_det: int, **_: Any) -> nn.Module:
    return _faster_rcnn(backbone, num_classes, imgsz, anchors or default_anchors(model, backbone), pretrained,
                        score_thresh, nms_iou, max_det)


def _ssd_family(model: str, num_classes: int, imgsz: int, pretrained: bool, score_thresh: float, nms_iou: float,
                max_det: int, **_: Any) -> nn.Module:
    return _ssd(model, num_classes, imgsz, pretrained, score_thresh, nms_iou, max_det)


register("ssd", task="detect", about="SSD300 (torchvision), single-shot, VGG16 backbone")(_ssd_family)
register("ssdlite", task="detect", about="SSDlite320 (torchvision), single-shot, MobileNetV3-Large backbone")(_ssd_family)


def _yolo(model: str, num_classes: int, imgsz: int, backbone: str | None, pretrained: bool, score_thresh: float,
          nms_iou: float, max_det: int, yolo: YoloOptions | None = None, **_: Any) -> nn.Module:
    from cnnkit.models.yolo import build_yolo

    options = yolo or YoloOptions()
    return build_yolo(model, num_classes, imgsz, backbone, pretrained, options.dfl, options.box_loss, options.cls_loss,
                      score_thresh, nms_iou, max_det)


for _name, _size in zip(YOLO_MODELS, ("nano", "small", "medium")):
    register(_name, task="detect", about=f"cnnkit's YOLO-style anchor-free detector, {_size}; CSP backbone or "
             "--backbone a timm CNN")(_yolo)


def _faster_rcnn(backbone: str, num_classes: int, imgsz: int, anchors: Anchors, pretrained: bool,
                 score_thresh: float, nms_iou: float, max_det: int) -> nn.Module:
    from torchvision.models.detection import FasterRCNN

    parts = _rcnn_parts(backbone, num_classes, imgsz, anchors, pretrained, score_thresh, nms_iou, max_det)
    net = FasterRCNN(parts.body, **parts.options)
    if pretrained and backbone in TORCHVISION_BACKBONES:
        _load_coco(net, "fasterrcnn_mobilenet_v3_large_fpn" if backbone == "mobilenet_v3_large" else "fasterrcnn_resnet50_fpn")
    return net


@dataclass
class _RcnnParts:
    """What Faster R-CNN and Mask R-CNN share: the backbone with its FPN, the names of its pyramid
    levels (for the RoI poolers), and the keyword arguments of torchvision's constructor."""

    body: nn.Module
    featmaps: list[str]
    options: dict[str, Any]


def _rcnn_parts(backbone: str, num_classes: int, imgsz: int, anchors: Anchors, pretrained: bool,
                score_thresh: float, nms_iou: float, max_det: int) -> _RcnnParts:
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops import MultiScaleRoIAlign

    if backbone == "mobilenet_v3_large":
        from torchvision.models import mobilenet_v3_large

        # torchvision's MobileNetV3 defaults to BatchNorm momentum 0.01, made for long ImageNet runs: in a
        # short detection run from scratch the running statistics then lag the weights so far that the
        # model in eval mode finds nothing on its own training images. Its detector builder passes
        # plain BatchNorm2d (momentum 0.1) for the same reason.
        body = _mobilenet_extractor(mobilenet_v3_large(norm_layer=nn.BatchNorm2d), True, 6)
        featmaps = ["0", "1"]
    elif backbone == "resnet50":
        from torchvision.models import resnet50

        body = _resnet_fpn_extractor(resnet50(), 5)
        featmaps = ["0", "1", "2", "3"]
    else:
        body = TimmFPN(backbone, pretrained)
        featmaps = ["0", "1", "2"]
    generator = AnchorGenerator(anchors.sizes, (anchors.ratios,) * len(anchors.sizes))
    options = dict(num_classes=num_classes + 1, min_size=imgsz, max_size=imgsz, rpn_anchor_generator=generator,
                   box_roi_pool=MultiScaleRoIAlign(featmaps, output_size=7, sampling_ratio=2),
                   box_score_thresh=score_thresh, box_nms_thresh=nms_iou, box_detections_per_img=max_det, **FASTER_RCNN_SPEED)
    return _RcnnParts(body, featmaps, options)


def _ssd(model: str, num_classes: int, imgsz: int, pretrained: bool, score_thresh: float, nms_iou: float, max_det: int) -> nn.Module:
    from torchvision.models import detection

    # built without backbone weights in every case: the architecture must not depend on --pretrained
    # (torchvision's SSDlite shrinks the MobileNet tail when no ImageNet weights are given, and its COCO
    # weights have that shrunk tail), so that val and predict rebuild it from the metadata alone
    if model == "ssd":
        net = detection.ssd300_vgg16(num_classes=num_classes + 1, weights_backbone=None)
    else:
        net = detection.ssdlite320_mobilenet_v3_large(num_classes=num_classes + 1, weights_backbone=None)
    # torchvision fixes the input side (300 / 320); the default boxes are relative, so any side works
    net.transform.fixed_size = (imgsz, imgsz)
    net.transform.min_size, net.transform.max_size = (imgsz,), imgsz
    net.score_thresh, net.nms_thresh, net.detections_per_img = score_thresh, nms_iou, max_det
    if pretrained:
        _load_coco(net, "ssd300_vgg16" if model == "ssd" else "ssdlite320_mobilenet_v3_large")
    return net


def _load_coco(net: nn.Module, builder: str) -> None:
    """torchvision's COCO detector weights, every tensor whose shape fits (the class layers do not)."""
    from torchvision.models import get_model_weights

    state = get_model_weights(builder).DEFAULT.get_state_dict(progress=True)
    # the published Mask R-CNN file predates torchvision's renaming of its mask head's layers (mask_fcn1 -> 0.0);
    # torchvision maps the old names only in a whole-model load_state_dict, not for this filtered copy
    old_name = re.compile(r"mask_head\.mask_fcn(\d+)\.")
    state = {old_name.sub(lambda m: f"mask_head.{int(m.group(1)) - 1}.0.", k): v for k, v in state.items()}
    own = net.state_dict()
    net.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)


def set_postprocess(net: nn.Module, score_thresh: float, nms_iou: float, max_det: int) -> None:
    """Confidence threshold, NMS IoU and detections per image of a built detector."""
    if hasattr(net, "roi_heads"):
        net.roi_heads.score_thresh, net.roi_heads.nms_thresh, net.roi_heads.detections_per_img = score_thresh, nms_iou, max_det
    else:
        net.score_thresh, net.nms_thresh, net.detections_per_img = score_thresh, nms_iou, max_det


def box_statistics(boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """(sides, aspects): sqrt(area) of every box once its image is scaled to a longer side of
    ``imgsz``, and height / width."""
    sides, aspects = [], []
    for image_boxes, (width, height) in zip(boxes, sizes):
        b = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4)
        if not len(b):
            continue
        scale = imgsz / max(width, height, 1)
        w, h = (b[:, 2] - b[:, 0]) * scale, (b[:, 3] - b[:, 1]) * scale
        ok = (w > 0) & (h > 0)
        sides.append(np.sqrt(w[ok] * h[ok]))
        aspects.append(h[ok] / w[ok])
    if not sides:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(sides), np.concatenate(aspects)


def model_cost(net: nn.Module, imgsz: int) -> tuple[int, float]:
    """(parameters, GFLOPs of one imgsz x imgsz image in eval mode), FLOPs counted by PyTorch's
    FlopCounterMode (a multiply-add is two; convolutions and matrix products, what dominates). Mask
    R-CNN's mask head runs once per detection: its share is that of the detections the model makes on
    the blank image (an untrained model: about max_det)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net([torch.zeros(3, imgsz, imgsz, device=next(net.parameters()).device)])
    finally:
        net.train(was_training)
    return params, counter.get_total_flops() / 1e9


def for_inference(net: nn.Module) -> nn.Module:
    """The model predict runs: for the YOLO-style detectors an eval-mode copy with every BatchNorm
    folded into its convolution (same outputs up to rounding, fewer passes over memory); others as they are."""
    from cnnkit.models.yolo import YoloDetector, fuse_batchnorm

    return fuse_batchnorm(net) if isinstance(net, YoloDetector) else net


def detector_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """The detector network a weights file's metadata describes (architecture, backbone, anchors, classes, size,
    YOLO options), freshly built: its weights are not loaded."""
    anchors = Anchors.from_dict(metadata["anchors"]) if metadata.get("anchors") else None
    return build_detector(metadata["model"], len(metadata["class_names"]), int(metadata["imgsz"]), metadata.get("backbone"),
                          anchors, yolo=YoloOptions.from_dict(metadata.get("yolo")))
