"""Build a classifier by name from our registry, timm, or torchvision, with a head for N classes."""

from __future__ import annotations

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
