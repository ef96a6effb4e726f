"""Models by name: one dict, one decorator; the only registry in cnnkit.

Every model family cnnkit builds registers here with ``@register(name, task=...)``, saying which task
builds it: classify (tiny_cnn; classification backbones are also what embed and distill build on), detect
(fasterrcnn, ssd, ssdlite, yolo_n/s/m), segment (unet, fpn, pan, deeplabv3plus, fcn) and instance
(maskrcnn). Each task's builder in models/ looks its ``--model`` up here. For classification any other
name falls through to timm, whose ~1,000 CNNs and transformers are all buildable by name, and ``tv:NAME``
builds a torchvision classifier. Unknown names get a "did you mean" list.

This module knows nothing of the models: they import it, never the other way round, and it imports
neither torch nor the families, so `--help` stays fast. The table is complete once ``cnnkit.models`` is
imported (its ``__init__`` imports every family module, which runs their decorators): the task builders
live in that package, and anything else that needs the whole table (`cnnkit models`) imports it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from cnnkit.errors import CnnkitError

ModelBuilder = Callable[..., Any]  # returns a torch nn.Module; the keywords it takes are its task's

# Every task a registered model can serve, in the order `cnnkit models` lists them, and the command that
# trains it (embed and distill take the classification backbones).
TASKS = {"classify": "classify", "detect": "detect", "segment": "segment", "instance": "segment"}


@dataclass(frozen=True)
class Entry:
    name: str
    task: str            # a key of TASKS
    build: ModelBuilder
    about: str = ""      # one line for `cnnkit models`


MODELS: dict[str, Entry] = {}

# Short names users type -> the timm name they mean.
ALIASES: dict[str, str] = {
    "mobilenetv3_small": "mobilenetv3_small_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenet_v3_small": "mobilenetv3_small_100",
    "mobilenet_v3_large": "mobilenetv3_large_100",
}


def register(name: str, task: str = "classify", about: str = "") -> Callable[[ModelBuilder], ModelBuilder]:
    """Add ``builder`` to the table under ``name``; a name registered twice is a bug, refused at import."""
    if task not in TASKS:
        raise ValueError(f"model '{name}': unknown task '{task}' (one of {', '.join(TASKS)})")

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise ValueError(f"model '{name}' is registered twice (first as a {MODELS[name].task} model)")
        MODELS[name] = Entry(name, task, builder, about)
        return builder

    return decorator


def names(task: str) -> list[str]:
    """cnnkit's own names for ``task``, in registration order."""
    return [e.name for e in MODELS.values() if e.task == task]


def near(name: str, candidates: list[str], limit: int = 3) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)


def other_task_hint(name: str, task: str) -> str | None:
    """'unet is a segment model: `cnnkit segment train --model unet`' when ``name`` belongs to another task."""
    entry = MODELS.get(name)
    if entry is None or entry.task == task:
        return None
    return f"{name} is a {entry.task} model: `cnnkit {TASKS[entry.task]} train --model {name}`"


def timm_names() -> list[str]:
    import timm

    return timm.list_models()


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return [f"tv:{n}" for n in tvm.list_models(module=tvm)]


def all_names() -> list[str]:
    """Every classification name: cnnkit's, the aliases, timm's and torchvision's."""
    return sorted(set(names("classify")) | set(ALIASES) | set(timm_names()) | set(torchvision_names()))


def suggest(name: str, limit: int = 3) -> list[str]:
    return near(name, all_names(), limit)


def unknown_model_error(name: str) -> CnnkitError:
    close = suggest(name)
    hint = f"did you mean {', '.join(repr(n) for n in close)}? " if close else ""
    return CnnkitError(f"unknown model '{name}'", f"{hint}`cnnkit models` lists all")


def resolve(name: str) -> tuple[str, str]:
    """A classifier's name -> (source, canonical name), source one of 'cnnkit', 'timm', 'torchvision'."""
    if name in MODELS:
        hint = other_task_hint(name, "classify")
        if hint:
            raise CnnkitError(f"'{name}' is not a classification backbone", hint)
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


def listing(pattern: str = "", task: str | None = None) -> list[tuple[str, str, str, str]]:
    """(name, task, source, about) of every buildable model whose name contains ``pattern``: cnnkit's
    own by task (in registration order), then timm's (with the aliases) and torchvision's classifiers."""
    own = sorted(MODELS.values(), key=lambda e: list(TASKS).index(e.task))
    rows = [(e.name, e.task, "cnnkit", e.about) for e in own]
    if task in (None, "classify"):
        rows += [(n, "classify", "timm", "") for n in sorted(set(ALIASES) | set(timm_names()))]
        rows += [(n, "classify", "torchvision", "") for n in sorted(torchvision_names())]
    return [r for r in rows if pattern in r[0] and task in (None, r[1])]
