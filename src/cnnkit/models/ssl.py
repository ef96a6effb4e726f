"""Self-supervised pretraining networks: a classifier's backbone and the heads of one method.

    net = build_ssl_net("small_cnn", "simclr", imgsz=64)
    losses = net(views)            # views [B, 2, 3, H, W] (contrastive) or [B, 1, 3, H, W] (masked, ae)
    features = net.embed(images)   # the backbone's pooled features [B, D]: what transfer and kNN use

``backbone`` is ``build_classifier(name, 0)`` (no classifier), so its tensor names are the classifier's:
``--backbone-from`` copies them into classify, detect, segment and embed models by name and shape. Every
method's loss is computed inside ``forward``, so DistributedDataParallel sees one forward per step, and BYOL's
teacher follows the student there (its momentum rising from ``momentum`` to 1 over the run, as in the paper).

The heads and losses are lightly's (MIT): SimCLR's projection and NT-Xent (negatives gathered across ranks with
a gradient-carrying all-gather), BYOL's projection and prediction heads, VICReg's. Masked image modelling for
CNNs follows SparK (Tian et al., ICLR 2023; Apache-2.0, read, not copied): masked patches are removed at every
layer, as a sparse convolution would (each convolution's and pooling layer's output is multiplied by the mask
at its resolution), the last feature map's holes are filled with a learned mask token and a light decoder
reconstructs each masked patch's normalised pixels. The autoencoder is the same decoder without a mask.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier

METHODS = ("simclr", "byol", "vicreg", "masked", "ae")
CONTRASTIVE = ("simclr", "byol", "vicreg")  # two augmented views per image; the others one
VIEWS = {method: 2 if method in CONTRASTIVE else 1 for method in METHODS}


class PixelDecoder(nn.Module):
    """The last feature map [B, C, h, w] -> pixels [B, 3, h * stride, w * stride]: one 2x upsampling block
    (nearest, 3x3 convolution, BatchNorm, ReLU) per halving, channels halving down to 32; a 1x1 convolution last."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        blocks, width = [], min(channels, 256)
        blocks += [nn.Conv2d(channels, width, 1)]
        for _ in range(int(math.log2(stride))):
            out = max(32, width // 2)
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            width = out
        blocks.append(nn.Conv2d(width, 3, 1))
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MomentumTeacher(nn.Module):
    """BYOL's target network: a copy of the student's backbone and projection that follows them by an exponential
    moving average, never by gradients. ``steps`` counts the updates, so --resume continues the momentum schedule."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = copy.deepcopy(backbone), copy.deepcopy(projector)
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


class SSLNet(nn.Module):
    def __init__(self, backbone: nn.Module, method: str, imgsz: int, proj_dim: int = 128, hidden: int = 512,
                 temperature: float = 0.5, mask_ratio: float = 0.6, momentum: float = 0.99, total_steps: int = 1):
        super().__init__()
        if method not in METHODS:
            raise CnnkitError(f"--method {method!r} is not one of {', '.join(METHODS)}")
        self.backbone, self.method = backbone, method
        self.mask_ratio, self.momentum, self.total_steps = mask_ratio, momentum, max(1, total_steps)
        width = backbone.num_features
        if method == "simclr":
            from lightly.loss import NTXentLoss
            from lightly.models.modules.heads import SimCLRProjectionHead

            self.projector = SimCLRProjectionHead(width, hidden, proj_dim)
            self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        elif method == "byol":
            from lightly.loss import NegativeCosineSimilarity
            from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead

            self.projector = BYOLProjectionHead(width, hidden, proj_dim)
            self.predictor = BYOLPredictionHead(proj_dim, hidden, proj_dim)
            self.teacher = MomentumTeacher(self.backbone, self.projector)
            self.criterion = NegativeCosineSimilarity()
        elif method == "vicreg":
            from lightly.loss import VICRegLoss
            from lightly.models.modules.heads import VICRegProjectionHead

            self.projector = VICRegProjectionHead(width, hidden, proj_dim, num_layers=3)
            self.criterion = VICRegLoss(gather_distributed=True)
        else:
            channels, self.stride = _feature_map_geometry(backbone, imgsz)
            self.decoder = PixelDecoder(channels, self.stride)
            if method == "masked":
                self.mask_token = nn.Parameter(torch.zeros(1, channels, 1, 1))
                nn.init.trunc_normal_(self.mask_token, std=0.02)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features [B, D], what a classifier's head would see."""
        return self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True).flatten(1)

    def forward(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss": the method's loss, and its parts} for a batch of views [B, V, 3, H, W]."""
        if self.method in CONTRASTIVE:
            first, second = views[:, 0], views[:, 1]
            if self.method == "byol":
                return self._byol(first, second)
            z1, z2 = self.projector(self.embed(first)), self.projector(self.embed(second))
            return {"loss": self.criterion(z1.float(), z2.float())}
        images = views[:, 0]
        if self.method == "ae":
            reconstruction = self.decoder(self.backbone.forward_features(images))
            return {"loss": F.mse_loss(reconstruction.float(), images.float())}
        return self._masked(images)

    def _byol(self, first: torch.Tensor, second: torch.Tensor) -> dict[str, torch.Tensor]:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        teacher = self.teacher
        if self.training:
            m = cosine_schedule(int(teacher.steps), self.total_steps, self.momentum, 1.0)
            update_momentum(self.backbone, teacher.backbone, m)
            update_momentum(self.projector, teacher.projector, m)
            teacher.steps += 1
        p1 = self.predictor(self.projector(self.embed(first)))
        p2 = self.predictor(self.projector(self.embed(second)))
        with torch.no_grad():
            def target(x: torch.Tensor) -> torch.Tensor:
                return teacher.projector(teacher.backbone.forward_head(teacher.backbone.forward_features(x), pre_logits=True).flatten(1))
            t1, t2 = target(first), target(second)
        return {"loss": 0.5 * (self.criterion(p1.float(), t2.float()) + self.criterion(p2.float(), t1.float()))}

    def _masked(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, _, height, width = images.shape
        grid_h, grid_w = height // self.stride, width // self.stride
        keep = random_patch_mask(batch, grid_h, grid_w, self.mask_ratio, images.device)  # [B, 1, h, w], 1 = visible
        visible = F.interpolate(keep, size=(height, width), mode="nearest")
        with sparse_layers(self.backbone, keep):
            features = self.backbone.forward_features(images * visible)
        keep_map = F.interpolate(keep, size=features.shape[-2:], mode="nearest")
        features = features * keep_map + self.mask_token.to(features.dtype) * (1 - keep_map)
        reconstruction = self.decoder(features).float()
        target = patch_normalised(images.float(), self.stride)
        hidden = 1 - visible  # the loss counts the masked patches only (MAE, SparK)
        error = ((reconstruction - target) ** 2 * hidden).sum() / (hidden.sum() * 3).clamp(min=1)
        return {"loss": error}


def random_patch_mask(batch: int, rows: int, cols: int, ratio: float, device: torch.device) -> torch.Tensor:
    """[B, 1, rows, cols] float, 1 where a patch stays visible: exactly round(ratio * rows * cols) patches of
    every image hidden (at least one kept, at least one hidden), chosen uniformly."""
    patches = rows * cols
    hidden = min(max(1, round(ratio * patches)), patches - 1)
    order = torch.rand(batch, patches, device=device).argsort(dim=1)
    keep = (order >= hidden).float()
    return keep.view(batch, 1, rows, cols)


def patch_normalised(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Each patch x patch square of every channel shifted and scaled to mean 0, std 1 (MAE's normalised-pixel
    target, which SparK keeps: the decoder learns shapes and edges, not each patch's brightness)."""
    b, c, h, w = images.shape
    tiles = images.view(b, c, h // patch, patch, w // patch, patch)
    mean = tiles.mean(dim=(3, 5), keepdim=True)
    std = tiles.var(dim=(3, 5), keepdim=True, unbiased=False).add(1e-6).sqrt()
    return ((tiles - mean) / std).view(b, c, h, w)


@contextlib.contextmanager
def sparse_layers(backbone: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, the output of every convolution and pooling layer of ``backbone`` is multiplied by ``keep``
    resized to its resolution: hidden patches stay empty through the network, as under SparK's sparse
    convolutions, instead of filling in from their visible neighbours layer after layer."""
    def remask(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            return output * F.interpolate(keep, size=output.shape[-2:], mode="nearest").to(output.dtype)
        return output

    layers = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    handles = [m.register_forward_hook(remask) for m in backbone.modules() if isinstance(m, layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _feature_map_geometry(backbone: nn.Module, imgsz: int) -> tuple[int, int]:
    """(channels, stride) of the backbone's last feature map at ``imgsz``; the decoders need a power-of-two stride
    that divides the image side."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        features = backbone.forward_features(torch.zeros(1, 3, imgsz, imgsz))
    backbone.train(was_training)
    if features.dim() != 4:
        raise CnnkitError("masked and ae need a convolutional backbone with a feature map", "use small_cnn, tiny_cnn or a timm CNN")
    stride = imgsz // features.shape[-1]
    if stride < 1 or stride & (stride - 1) or features.shape[-1] * stride != imgsz:
        raise CnnkitError(f"--imgsz {imgsz}: the backbone's last map is {features.shape[-1]} wide, not the image over a "
                          "power of two", f"use an --imgsz that is a multiple of {max(stride, 1) * 2}")
    return features.shape[1], stride


def build_ssl_net(name: str, method: str, imgsz: int, pretrained: bool = False, **options) -> SSLNet:
    """``name``'s backbone (cnnkit, timm or torchvision; no classifier) with ``method``'s heads."""
    backbone = build_classifier(name, 0, pretrained)
    if not (callable(getattr(backbone, "forward_head", None)) and hasattr(backbone, "num_features")):
        raise CnnkitError(f"'{name}' cannot be pretrained here (no pooled-feature interface)",
                          "use small_cnn, tiny_cnn or a timm model such as resnet18")
    return SSLNet(backbone, method, imgsz, **options)
