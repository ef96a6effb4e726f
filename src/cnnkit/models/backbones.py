"""Build a classifier by name from our registry, timm, or torchvision, with a head for N classes."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit import registry
from cnnkit.errors import CnnkitError


def build_classifier(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A model whose forward maps images [B, 3, H, W] to logits [B, num_classes].

    ``pretrained`` loads the library's published weights (needs the internet the first time; the
    libraries cache them) and replaces the head to fit ``num_classes``.
    """
    source, canonical = registry.resolve(name)
    try:
        if source == "cnnkit":
            return registry.MODELS[canonical].build(num_classes=num_classes, pretrained=pretrained)
        if source == "timm":
            import timm

            if pretrained and not _hub_reachable():
                _use_hub_cache_only()  # cached weights still load; missing ones fail now, not after a minute of retries
            return timm.create_model(canonical, pretrained=pretrained, num_classes=num_classes)
        return _torchvision_classifier(canonical, num_classes, pretrained)
    except CnnkitError:
        raise
    except Exception as exc:  # download failures surface as many exception types (OSError, HTTP, hub errors)
        if not pretrained:
            raise
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if source == "timm" and not _hub_reachable():
            reason = "the Hugging Face hub is unreachable (no internet?) and no copy is cached"
        raise CnnkitError(
            f"could not load published weights for '{name}': {reason}",
            "drop --pretrained, or pass --weights FILE with local weights",
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the Hugging Face hub (or the mirror in $HF_ENDPOINT)?"""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _use_hub_cache_only() -> None:
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _torchvision_classifier(name: str, num_classes: int, pretrained: bool) -> nn.Module:
    import torchvision.models as tvm

    model = tvm.get_model(name, weights="DEFAULT" if pretrained else None)
    # torchvision heads live under different attributes (fc, classifier[-1], heads.head): replace the
    # last Linear layer, which is the classifier in every torchvision classification model.
    last_name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = last_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model


class TimmFeatures(nn.Module):
    """A timm CNN's feature maps at ``strides`` (``features_only``), for the heads that take a timm backbone
    (``needs`` names the head in the error when the CNN lacks one of the strides)."""

    def __init__(self, name: str, strides: tuple[int, ...], needs: str, pretrained: bool = False):
        super().__init__()
        import timm

        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except RuntimeError as exc:  # unknown model, or one without features_only support
            raise CnnkitError(f"--backbone {name}: {exc}".splitlines()[0],
                              "use a timm CNN (resnet18, efficientnet_b0, mobilenetv3_large_100, …) or leave --backbone out") from None
        reductions = probe.feature_info.reduction()
        if any(s not in reductions for s in strides):
            raise CnnkitError(f"--backbone {name}: its feature strides are {reductions}; {needs} needs {', '.join(map(str, strides))}",
                              "pick a CNN with the usual five stride-2 stages (resnet, efficientnet, mobilenet, convnext…)")
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=[reductions.index(s) for s in strides])
        self.channels = list(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))
