"""SiamFC: fully-convolutional Siamese networks for object tracking (Bertinetto, Valmadre, Henriques, Vedaldi and
Torr, "Fully-Convolutional Siamese Networks for Object Tracking", ECCV 2016 workshops).

One CNN embeds an exemplar crop of the target and a larger search crop; the exemplar's feature map, used as a
convolution kernel on the search's, gives a response map whose peak is where the target is. A BatchNorm on the
one-channel response (SiamFC's "adjust" layer) learns its scale and bias, so the logistic loss sees sensible
logits. Written from the paper; huanglianghua/siamfc-pytorch (MIT) was read for the conventions.

    net = build_siamfc("siamfc")                                   # 63 px exemplars, 127 px searches, stride 8
    response = net(exemplars, searches)                            # [B, 3, 63, 63], [B, 3, 127, 127] -> [B, 1, 9, 9]
    kernel = net.features(exemplar)                                # tracking: the exemplar embedded once …
    responses = net.match(kernel, net.features(searches))          # … and matched against 3 scales: [3, 1, 9, 9]

Backbones have no padding, as SiamFC's: the response is then exactly translation-equivariant, and response cell
(i, j) is the exemplar placed with its centre at the search crop's centre plus ``stride`` * (i - c, j - c) pixels,
c the response's centre cell. Sizes are chosen so that this holds exactly ((size - receptive field) divisible by
the stride): ``siamfc`` (cnnkit-sized, 4 convolutions, receptive field 39) takes 63/127, ``siamfc_alexnet``
(SiamFC's own AlexNet variant, receptive field 87) 127/255. ``siamfc:TIMM_NAME`` uses a timm CNN's stride-8
features (padded, so only nearly equivariant) at 127/255.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import CnnkitError


@dataclass(frozen=True)
class SiamSpec:
    """What the tracker and the training pairs need to know of an architecture."""

    exemplar: int  # exemplar crop side, pixels
    search: int  # search crop side, pixels
    stride: int  # pixels of the search crop per response cell


SPECS = {"siamfc": SiamSpec(63, 127, 8), "siamfc_alexnet": SiamSpec(127, 255, 8)}
TIMM_SPEC = SiamSpec(127, 255, 8)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, last: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=last)]
    return layers if last else layers + [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_backbone(widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> nn.Sequential:
    """cnnkit's CPU-sized SiamFC backbone: 3x3 s2 conv, 3x3 conv, max-pool 3 s2, 3x3 conv, max-pool 2 s2, 3x3 conv
    (the last without BatchNorm and ReLU, as SiamFC's). Stride 8, receptive field 39: 63 px -> 4x4, 127 px -> 12x12."""
    a, b, c, d = widths
    return nn.Sequential(*_conv(3, a, 3, 2), *_conv(a, b, 3), nn.MaxPool2d(3, 2), *_conv(b, c, 3), nn.MaxPool2d(2, 2),
                         *_conv(c, d, 3, last=True))


def alexnet_backbone() -> nn.Sequential:
    """SiamFC's AlexNet (the paper's Table 1, with BatchNorm): stride 8, receptive field 87: 127 -> 6x6, 255 -> 22x22."""
    return nn.Sequential(*_conv(3, 96, 11, 2), nn.MaxPool2d(3, 2), *_conv(96, 256, 5, groups=2), nn.MaxPool2d(3, 2),
                         *_conv(256, 384, 3), *_conv(384, 384, 3, groups=2), *_conv(384, 256, 3, groups=2, last=True))


class TimmStride8(nn.Module):
    """A timm CNN's stride-8 feature map (``features_only``), as a backbone."""

    def __init__(self, name: str, pretrained: bool = False):
        super().__init__()
        import timm

        probe = timm.create_model(name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        if 8 not in reductions:
            raise CnnkitError(f"siamfc:{name}: the model has no stride-8 feature map (strides {reductions})",
                              "pick a CNN such as resnet18, efficientnet_b0 or mobilenetv3_large_100")
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(reductions.index(8),))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[0]


class SiamFC(nn.Module):
    """backbone (shared) + cross-correlation + adjust. ``forward(z, x)``: exemplars [B, 3, Z, Z] and searches
    [B, 3, X, X] (normalised RGB) -> response logits [B, 1, R, R], pair by pair."""

    def __init__(self, backbone: nn.Module, spec: SiamSpec):
        super().__init__()
        self.backbone = backbone
        self.adjust = nn.BatchNorm2d(1)  # SiamFC's learned scale and bias of the response
        self.spec = spec

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, C, h, w]."""
        return self.backbone(images)

    @staticmethod
    def correlate(kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Each search feature map correlated with its own exemplar kernel: [K, C, hz, wz] and [B, C, hx, wx] ->
        [B, 1, hx - hz + 1, wx - wz + 1]; one kernel (K = 1) is matched against every search map. One grouped
        convolution with the batch as groups, so the whole batch is a single call."""
        b, c, h, w = features.shape
        if kernels.shape[0] == 1 and b > 1:
            kernels = kernels.expand(b, -1, -1, -1)
        assert kernels.shape[0] == b, f"{kernels.shape[0]} exemplars for {b} searches"
        out = F.conv2d(features.reshape(1, b * c, h, w), kernels, groups=b)
        return out.reshape(b, 1, out.shape[-2], out.shape[-1])

    def match(self, kernels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Response logits [B, 1, R, R] of embedded exemplars against embedded searches (see correlate)."""
        return self.adjust(self.correlate(kernels, features))

    def forward(self, exemplars: torch.Tensor, searches: torch.Tensor) -> torch.Tensor:
        return self.match(self.features(exemplars), self.features(searches))

    def get_classifier(self) -> nn.Module:
        """The head for transfer learning (the engine's TransferPlan): the adjust layer; the rest is backbone."""
        return self.adjust

    def response_size(self) -> int:
        """Side of the response map for this architecture's exemplar and search sizes."""
        def side(size: int) -> int:
            with torch.no_grad():
                return self.features(torch.zeros(1, 3, size, size, device=next(self.parameters()).device)).shape[-1]

        was = self.training
        self.eval()
        try:
            return side(self.spec.search) - side(self.spec.exemplar) + 1
        finally:
            self.train(was)


def spec_of(name: str) -> SiamSpec:
    """The crop sizes and stride of a model name (``siamfc``, ``siamfc_alexnet``, ``siamfc:TIMM_NAME``)."""
    if name in SPECS:
        return SPECS[name]
    if name.startswith("siamfc:") and len(name) > len("siamfc:"):
        return TIMM_SPEC
    import difflib

    near = difflib.get_close_matches(name, list(SPECS), n=1)
    raise CnnkitError(f"unknown single-object tracker model {name!r}",
                      (f"did you mean {near[0]!r}? " if near else "") + "use siamfc, siamfc_alexnet or siamfc:TIMM_NAME (e.g. siamfc:resnet18)")


def build_siamfc(name: str = "siamfc", pretrained: bool = False) -> SiamFC:
    """The SiamFC network of ``name``: ``siamfc`` (cnnkit's small backbone, 0.2M parameters; 63/127 px crops),
    ``siamfc_alexnet`` (the paper's, 2.3M; 127/255) or ``siamfc:TIMM_NAME`` (a timm CNN's stride-8 features;
    ``pretrained`` loads its ImageNet weights; 127/255). Initialised as SiamFC's reference code (Kaiming normal
    convolutions, BatchNorm at 1 and 0)."""
    spec = spec_of(name)
    if name == "siamfc":
        net = SiamFC(small_backbone(), spec)
    elif name == "siamfc_alexnet":
        net = SiamFC(alexnet_backbone(), spec)
    else:
        net = SiamFC(TimmStride8(name.split(":", 1)[1], pretrained), spec)
    for module in net.backbone.modules() if not name.startswith("siamfc:") else ():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net
