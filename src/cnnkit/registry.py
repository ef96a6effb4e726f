"""Models by name: one dict, one decorator; the only registry in cnnkit.

Our own models register here with ``@register``. Any other name falls through to timm, whose
~1,000 CNNs and transformers are all buildable by name, and ``tv:NAME`` builds a torchvision
classifier. Unknown names get a "did you mean" list drawn from all three.
"""

from __future__ import annotations

import difflib
from typing import Callable

import torch.nn as nn

from cnnkit.errors import CnnkitError

ModelBuilder = Callable[..., nn.Module]

MODELS: dict[str, ModelBuilder] = {}

# Short names users type -> the timm name they mean.
ALIASES: dict[str, str] = {
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenet_v3_small": "mobilenetv3_small_100",
    "mobilenet_v3_large": "mobilenetv3_large_100",
}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model '{name}' is registered twice")
        MODELS[name] = builder
        return builder

    return decorator


def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return [f"tv:{n}" for n in tvm.list_models(module=tvm)]


def all_names() -> list[str]:
    return sorted(set(MODELS) | set(ALIASES) | set(timm_names()) | set(torchvision_names()))


def suggest(name: str, limit: int = 3) -> list[str]:
    return difflib.get_close_matches(name, all_names(), n=limit, cutoff=0.6)


def unknown_model_error(name: str) -> CnnkitError:
    near = suggest(name)
    hint = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
    return CnnkitError(f"unknown model '{name}'", f"{hint}`cnnkit models` lists all")


def resolve(name: str) -> tuple[str, str]:
    """name -> (source, canonical name) with source one of 'cnnkit', 'timm', 'torchvision'."""
    import cnnkit.models  # noqa: F401  (registers our own models)

    if name in MODELS:
        return "cnnkit", name
    if name.startswith("tv:"):
        if name not in torchvision_names():
            raise unknown_model_error(name)
        return "torchvision", name[3:]
    timm_name = ALIASES.get(name, name)
    import timm

    if timm.is_model(timm_name):
        return "timm", timm_name
    raise unknown_model_error(name)
