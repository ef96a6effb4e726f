"""An embedding network: a CNN backbone's pooled features, a linear projection, L2 normalisation.

It follows timm's interface (``forward_features``, ``forward_head(pre_logits=True)``,
``get_classifier``), so feature extraction, transfer (--backbone-from) and the engine treat it like
any classifier: the projection plays the head's part.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier


class EmbeddingNet(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int):
        super().__init__()
        self.backbone = backbone
        self.num_features = dim
        self.proj = nn.Linear(backbone.num_features, dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.backbone.forward_head(x, pre_logits=True).flatten(1)
        return F.normalize(self.proj(pooled).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.proj


def build_embedder(name: str, dim: int, pretrained: bool = False) -> EmbeddingNet:
    """``name``'s backbone (cnnkit or timm; its classifier removed) with a ``dim``-d normalised projection."""
    backbone = build_classifier(name, 0, pretrained)
    if not (callable(getattr(backbone, "forward_head", None)) and hasattr(backbone, "num_features")):
        raise CnnkitError(f"'{name}' cannot be an embedding backbone (no pooled-feature interface)",
                          "use tiny_cnn or a timm model such as resnet18")
    return EmbeddingNet(backbone, dim)
