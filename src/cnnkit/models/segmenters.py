"""Semantic segmentation models: an encoder (any timm CNN) and a decoder, from segmentation_models_pytorch
and torchvision rather than written again.

    unet           U-Net: the decoder upsamples step by step and concatenates the encoder's map of the
                   same size (skip connections), so fine detail from early layers reaches the output
    fpn            feature pyramid: top-down sum of the encoder's stride-4..32 maps, each upsampled and merged
    pan            pyramid attention network (smp's PAN: feature pyramid attention on the deepest map and
                   global attention upsampling); needs an encoder whose last stage can be dilated
    deeplabv3plus  atrous spatial pyramid pooling on a stride-16 dilated encoder, and a light decoder that
                   joins the stride-4 map; needs a dilatable encoder
    fcn            fully convolutional network (torchvision's FCN head on a stride-8 dilated encoder; the
                   logits are upsampled to the input size)

Encoders are timm models built with ``features_only`` (smp's ``tu-`` encoders), named as in
classification: resnet18, resnet34, resnet50, vgg16, densenet121, mobilenet_v3 (mobilenetv3_large_100),
efficientnet_b0, convnext_tiny, … so a cnnkit classifier's weights move into an encoder with
``--backbone-from``. Every model maps [B, 3, H, W] (H, W multiples of 32) to logits [B, C, H, W].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit import registry
from cnnkit.errors import CnnkitError
from cnnkit.models.detectors import TORCHVISION_BACKBONES  # also registers maskrcnn, the instance segmenter
from cnnkit.registry import register

DEFAULT_ENCODER = "resnet18"
INSTANCE_MODELS = tuple(registry.names("instance"))  # the registry's view, for callers that test membership
ENCODER_ALIASES = {"mobilenet_v3": "mobilenetv3_large_100", "mobilenet_v3_large": "mobilenetv3_large_100",
                   "mobilenet_v3_small": "mobilenetv3_small_100", "mobilenetv3_large": "mobilenetv3_large_100",
                   "mobilenetv3_small": "mobilenetv3_small_100"}
_SMP_CLASSES = {"unet": "Unet", "fpn": "FPN", "pan": "PAN", "deeplabv3plus": "DeepLabV3Plus"}
STRIDE = 32  # inputs must be multiples of this


def parse_segmenter(model: str, encoder: str | None) -> tuple[str, str]:
    """(architecture, timm encoder name) with defaults and aliases applied; a one-line error for unknown names."""
    semantic, instance = registry.names("segment"), registry.names("instance")
    if model not in semantic + instance:
        near = registry.near(model, semantic + instance, 1)
        raise CnnkitError(f"unknown segmentation model {model!r}" + (f"; did you mean '{near[0]}'?" if near else ""),
                          registry.other_task_hint(model, "segment")
                          or f"semantic: {', '.join(semantic)}; instance: {', '.join(instance)}")
    import timm

    if model in instance:
        return model, _instance_backbone(encoder)
    name = encoder or DEFAULT_ENCODER
    name = ENCODER_ALIASES.get(name, name)
    if not timm.is_model(name):
        near = [n for n in registry.suggest(name) if timm.is_model(n)]
        raise CnnkitError(f"--encoder {encoder!r} is not a timm model" + (f"; did you mean '{near[0]}'?" if near else ""),
                          "resnet18, resnet34, vgg16, densenet121, mobilenet_v3, efficientnet_b0 or any timm CNN (`cnnkit models`)")
    return model, name


def _instance_backbone(encoder: str | None) -> str:
    """maskrcnn's backbone: the names the Faster R-CNN builder takes (torchvision's mobilenet_v3_large, the
    default and cheapest on a CPU, or resnet50; else a timm CNN through a feature pyramid)."""
    import timm

    name = {"mobilenet_v3": "mobilenet_v3_large"}.get(encoder or "", encoder) or "mobilenet_v3_large"
    if name not in TORCHVISION_BACKBONES and not timm.is_model(name):
        near = [n for n in registry.suggest(name) if timm.is_model(n) or n in TORCHVISION_BACKBONES]
        raise CnnkitError(f"--encoder {encoder!r} is not a maskrcnn backbone" + (f"; did you mean '{near[0]}'?" if near else ""),
                          "mobilenet_v3_large (default), resnet50, or a timm CNN: resnet18, efficientnet_b0, convnext_tiny, …")
    return name


def build_segmenter(model: str, encoder: str | None, num_classes: int, pretrained: bool = False) -> nn.Module:
    """Logits [B, num_classes, H, W] for images [B, 3, H, W]; ``pretrained`` loads the encoder's
    ImageNet weights (timm, from the Hugging Face hub: needs the internet once)."""
    arch, name = parse_segmenter(model, encoder)
    entry = registry.MODELS[arch]
    if entry.task == "instance":
        raise CnnkitError(f"{arch} is an instance segmenter, not a semantic one", "use cnnkit.InstanceSegmenter (the CLI picks it)")
    return entry.build(model=arch, encoder=name, num_classes=num_classes, pretrained=pretrained)


# The segment entries of cnnkit's model table (build_segmenter looks --model up there); each builder takes
# (model, encoder, num_classes, pretrained) as keywords.
def _smp_family(model: str, encoder: str, num_classes: int, pretrained: bool) -> nn.Module:
    return _smp(model, encoder, num_classes, pretrained)


register("unet", task="segment", about="U-Net (segmentation_models_pytorch): skip connections at every scale; "
         "--encoder a timm CNN")(_smp_family)
register("fpn", task="segment", about="feature pyramid decoder (segmentation_models_pytorch); --encoder a timm CNN")(_smp_family)
register("pan", task="segment", about="pyramid attention network (segmentation_models_pytorch); "
         "a dilatable --encoder")(_smp_family)
register("deeplabv3plus", task="segment", about="DeepLabV3+ (segmentation_models_pytorch), atrous pyramid pooling; "
         "a dilatable --encoder")(_smp_family)


@register("fcn", task="segment", about="FCN: torchvision's FCN head on a stride-8 dilated timm encoder (--encoder)")
def _fcn_family(model: str, encoder: str, num_classes: int, pretrained: bool) -> nn.Module:
    return _fcn(encoder, num_classes, pretrained)


def _smp(arch: str, encoder: str, num_classes: int, pretrained: bool) -> nn.Module:
    import segmentation_models_pytorch as smp

    from cnnkit.models.backbones import _hub_reachable, _use_hub_cache_only

    if pretrained and not _hub_reachable():
        _use_hub_cache_only()
    try:
        return getattr(smp, _SMP_CLASSES[arch])(encoder_name=f"tu-{encoder}", encoder_weights="imagenet" if pretrained else None,
                                                classes=num_classes)
    except (AssertionError, TypeError, ValueError, RuntimeError) as exc:
        if arch in ("pan", "deeplabv3plus"):
            raise CnnkitError(f"--model {arch} dilates the encoder's last stage, which {encoder} cannot do "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else 'no dilation'})",
                              "use a ResNet, EfficientNet or MobileNet encoder, or --model unet / fpn") from None
        raise CnnkitError(f"cannot build {arch} with encoder {encoder}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}",
                          "pick a CNN encoder with 5 stages: resnet18, efficientnet_b0, …") from None
    except Exception as exc:  # download failures come as many exception types
        if not pretrained:
            raise
        raise CnnkitError(f"could not load published weights for encoder {encoder}: {str(exc).splitlines()[0][:120]}",
                          "drop --pretrained, or pass --backbone-from / --weights with local weights") from None


class FCN(nn.Module):
    """torchvision's FCN head on a timm encoder's stride-8 map (the deeper stages dilated, as in the
    FCN/DeepLab backbones), upsampled bilinearly to the input size."""

    def __init__(self, encoder: nn.Module, channels: int, num_classes: int):
        super().__init__()
        from torchvision.models.segmentation.fcn import FCNHead

        self.encoder = encoder
        self.head = FCNHead(channels, num_classes)
        self.backbone_module = "encoder"  # transfer learning (models.backbone_module): the rest is the head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)[-1]
        logits = self.head(features)
        return nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _fcn(encoder: str, num_classes: int, pretrained: bool) -> nn.Module:
    import timm

    from cnnkit.models.backbones import _hub_reachable, _use_hub_cache_only

    if pretrained and not _hub_reachable():
        _use_hub_cache_only()
    try:
        body = timm.create_model(encoder, pretrained=pretrained, features_only=True, output_stride=8)
    except TypeError:  # no dilation (VGG, DenseNet): the stride-8 map itself, as the original FCN-8s reads it
        body = timm.create_model(encoder, pretrained=pretrained, features_only=True)
        reductions = body.feature_info.reduction()
        body = timm.create_model(encoder, pretrained=pretrained, features_only=True, out_indices=(reductions.index(8),))
    return FCN(body, body.feature_info.channels()[-1], num_classes)


def check_input_size(imgsz: int) -> None:
    if imgsz % STRIDE:
        raise CnnkitError(f"--imgsz {imgsz}: segmentation models downsample by {STRIDE}; use a multiple of {STRIDE}",
                          f"e.g. --imgsz {max(STRIDE, round(imgsz / STRIDE) * STRIDE)}")


def segmenter_cost(net: nn.Module, imgsz: int) -> tuple[int, float]:
    """(parameters, GFLOPs of one imgsz x imgsz image), counted by PyTorch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 3, imgsz, imgsz, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
    return params, counter.get_total_flops() / 1e9
