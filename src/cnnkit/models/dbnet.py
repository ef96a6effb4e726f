"""DBNet (Liao et al. 2020, "Real-time Scene Text Detection with Differentiable Binarization", arXiv:1911.08947):
a CNN backbone, an FPN that merges its stride 4-32 maps at stride 4, and two heads that predict, per pixel,
the probability of text (P) and a threshold (T). Training also supervises the approximate binary map
B = 1 / (1 + exp(-k (P - T))), which is differentiable (k = 50); inference thresholds P alone and grows each
region back by unclipping (cnnkit.tasks.ocr.detect_post).

    net = DBNet()                                   # cnnkit's own light backbone
    net = DBNet(backbone="resnet18", pretrained=True)   # any timm CNN with stride 4, 8, 16 and 32 features
    out = net(images)                               # training: [B, 3, H, W] -> {"prob", "thresh", "binary"}, each [B, 1, H, W]
    prob = net.eval()(images)                       # eval: the probability map alone, [B, 1, H, W]

In eval mode only the probability is computed (the threshold head serves training), as one tensor, which is
what an exported file returns too. H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.models.backbones import TimmFeatures

STRIDES = (4, 8, 16, 32)
K = 50.0


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class LightBackbone(nn.Module):
    """A small ResNet-like CNN for CPUs: stride 4, 8, 16 and 32 maps of ``channels``."""

    def __init__(self, channels: tuple[int, int, int, int] = (24, 48, 96, 160)):
        super().__init__()
        c = channels
        self.stem = nn.Sequential(_conv(3, 16, 2), _conv(16, c[0], 2), _Residual(c[0]))
        self.stages = nn.ModuleList([nn.Sequential(_conv(c[i - 1], c[i], 2), _Residual(c[i])) for i in range(1, 4)])
        self.channels = list(c)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [self.stem(x)]
        for stage in self.stages:
            out.append(stage(out[-1]))
        return out


def _head(c_in: int) -> nn.Sequential:
    """Stride 4 -> full resolution, one channel of logits: DB's conv, then two 2x transposed convolutions."""
    mid = max(16, c_in // 4)
    return nn.Sequential(_conv(c_in, mid), nn.ConvTranspose2d(mid, mid, 2, 2, bias=False), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True), nn.ConvTranspose2d(mid, 1, 2, 2))


class DBNet(nn.Module):
    def __init__(self, backbone: str | None = None, pretrained: bool = False, inner: int = 96):
        super().__init__()
        self.backbone = TimmFeatures(backbone, STRIDES, "DBNet", pretrained) if backbone else LightBackbone()
        self.lateral = nn.ModuleList([nn.Conv2d(c, inner, 1, bias=False) for c in self.backbone.channels])
        self.smooth = nn.ModuleList([_conv(inner, inner // 4) for _ in STRIDES])
        self.prob_head = _head(inner)
        self.thresh_head = _head(inner)
        # a prior of "mostly not text", so the first steps do not flood the map (as a detector's focal prior)
        nn.init.constant_(self.prob_head[-1].bias, -2.0)

    def fuse(self, images: torch.Tensor) -> torch.Tensor:
        """[B, inner, H/4, W/4]: the FPN's levels, top-down summed, smoothed, upsampled to stride 4 and stacked."""
        feats = [lat(f) for lat, f in zip(self.lateral, self.backbone(images))]
        for i in range(len(feats) - 2, -1, -1):
            feats[i] = feats[i] + F.interpolate(feats[i + 1], size=feats[i].shape[-2:], mode="nearest")
        size = feats[0].shape[-2:]
        return torch.cat([F.interpolate(s(f), size=size, mode="nearest") if k else s(f)
                          for k, (s, f) in enumerate(zip(self.smooth, feats))], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        fused = self.fuse(images)
        prob = torch.sigmoid(self.prob_head(fused))
        if not self.training:
            return prob
        thresh = torch.sigmoid(self.thresh_head(fused))
        return {"prob": prob, "thresh": thresh, "binary": torch.sigmoid(K * (prob - thresh))}
