"""The task table: which task owns a weights file (Mask R-CNN's included) and the class that loads it — the
only place that decides. The CLI, distillation, export, quantize and bench ask it; compress receives the
answer (an ``Owner``) instead of importing a task. Importing this module imports no torch: the classes
load when a file is.

    from cnnkit import tasks
    seg = tasks.load("runs/segment/exp/weights/best.safetensors")   # a Segmenter or an InstanceSegmenter
    tasks.owner_of("best.onnx").metric                              # "miou"

The modules beside this one hold each task's plain functions (loss, eval step, metrics, drawing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Mapping, Protocol

from cnnkit.config import INSTANCE_MODELS
from cnnkit.errors import CnnkitError


class TaskClass(Protocol):
    """What every task's class (an Owner's ``facade``) offers; the CLI, distillation, export, quantize and
    bench call nothing else. tests/test_task_table.py checks each class of the table against it, names and
    keywords both. A task whose class predicts (all but embed, whose verbs are embed/index/search) also has
    ``predict(sources, …, device=…) -> list[dict]``, the rows of `predict --save-json`."""

    model: Any  # the network (an nn.Module), or a deployed file's runner; None before training or loading
    class_names: list[str] | None
    imgsz: int
    weights_path: Path | None  # the file it was loaded from; val writes beside its run by default
    val_split: float  # how the training run cut val from train, so val sees the same held-out images
    split_seed: int

    @classmethod
    def load(cls, weights: str | Path) -> "TaskClass":
        """From a cnnkit weights file alone (its metadata rebuilds the network), or a deployed file."""

    def train(self, data: str, **options: Any) -> Any:
        """A training run (runner.Run) with this object's settings as defaults; then this object holds the best weights."""

    def val(self, data: str, split: str, out: str | Path | None = None, batch: int = 1, device: str = "auto",
            workers: int = 2) -> dict[str, Any]:
        """The task's metrics on a split (metrics.json, plots and report.html into ``out``); extra keywords
        are the task's own (the Owner's ``val_options`` among them)."""


@dataclass(frozen=True)
class Owner:
    """A task as the rest of cnnkit sees it: its name, the class whose ``load``/``val``/``predict`` serve its
    files, and the headline metric that quantize and bench report (compress.owner.ModelOwner)."""

    name: str  # classify | detect | segment | instance | embed | sot | ocr | ocr_det | ssl
    facade: str  # "module:Class", imported when a file is loaded (keeps `cnnkit --help` free of torch)
    metric: str  # "" for a task whose val has no single headline metric
    val_options: Mapping[str, Any] = field(default_factory=dict)
    predicts: bool = True  # its class has predict() (TaskClass)

    def load_class(self) -> type:
        module, name = self.facade.split(":")
        return getattr(import_module(module), name)

    def load(self, path: str | Path) -> Any:
        """The task's object for a weights or deployed file (Classifier, Detector, Segmenter, …)."""
        return self.load_class().load(path)


TASKS: dict[str, Owner] = {owner.name: owner for owner in (
    Owner("classify", "cnnkit.tasks.classify.api:Classifier", "top1"),
    Owner("detect", "cnnkit.tasks.detect.api:Detector", "map"),
    Owner("segment", "cnnkit.tasks.segment.api:Segmenter", "miou", {"hd95": False}),
    Owner("instance", "cnnkit.tasks.instance.api:InstanceSegmenter", "mask_map"),
    Owner("embed", "cnnkit.tasks.embed.api:Embedder", "", predicts=False),
    Owner("sot", "cnnkit.tasks.track.sot:SingleObjectTracker", "success_auc", predicts=False),
    Owner("ocr", "cnnkit.tasks.ocr.api:TextRecognizer", "cer"),
    Owner("ocr_det", "cnnkit.tasks.ocr.detector:TextDetector", "hmean"),
    Owner("ssl", "cnnkit.tasks.ssl.api:Pretrainer", "knn_top1", predicts=False),
)}


def task_of(metadata: Mapping[str, Any], path: str | Path | None = None) -> Owner:
    """The task that owns a file with this cnnkit metadata (a weights file's or a deployed file's)."""
    task = metadata.get("task")
    if task == "segment" and metadata.get("model") in INSTANCE_MODELS:
        return TASKS["instance"]
    if task not in TASKS:
        where = f"{path}: " if path is not None else ""
        raise CnnkitError(f"{where}weights of an unknown task '{task}'", f"cnnkit knows {', '.join(sorted(TASKS))}")
    return TASKS[task]


def metadata_of(path: str | Path) -> dict[str, Any]:
    """The cnnkit metadata of a weights file (safetensors) or of a deployed file (.onnx, .pt2, .ts, .int8.pt)."""
    from cnnkit.compress.formats import is_deployed

    if is_deployed(path):
        from cnnkit.compress.runtime import read_metadata as read_deployed

        return read_deployed(path)
    from cnnkit.engine.checkpoint import read_metadata

    return read_metadata(path)


def owner_of(path: str | Path) -> Owner:
    """The task that owns a weights or deployed file."""
    return task_of(metadata_of(path), path)


def load(path: str | Path, command_task: str | None = None) -> Any:
    """The loaded object (Classifier, Detector, Segmenter, InstanceSegmenter, Embedder) for a weights or deployed
    file; with ``command_task`` (the TASK of `cnnkit TASK val|predict`), a file of another task is one line."""
    owner = owner_of(path)
    family = {"instance": "segment", "ocr_det": "ocr"}.get(owner.name, owner.name)
    if command_task is not None and family != command_task:
        raise CnnkitError(f"{path}: weights of a '{family}' model, not '{command_task}'", f"use `cnnkit {family} …` with this file")
    return owner.load(path)


# The deployment verbs for a weights file: compress does the work, given the file's task from the table.
def export_weights(weights: str | Path, *args: Any, **options: Any):
    """compress.export.export_weights (`cnnkit export`) with the weights' own task."""
    from cnnkit.compress.export import export_weights as export

    return export(weights, *args, owner=owner_of(weights), **options)


def load_float(weights: str | Path, *args: Any, **options: Any):
    """compress.export.load_float: the eval-mode float model (a detector as its export graph) and metadata."""
    from cnnkit.compress.export import load_float as load_model

    return load_model(weights, owner_of(weights), *args, **options)


def quantize_weights(weights: str | Path, *args: Any, **options: Any):
    """compress.quantize.quantize_weights (`cnnkit quantize`) with the weights' own task."""
    from cnnkit.compress.quantize import quantize_weights as quantize

    return quantize(weights, *args, owner=owner_of(weights), **options)


def compare_metric(weights: str | Path, deployed: str | Path, *args: Any, **options: Any):
    """compress.quantize.compare_metric: the task metric of the weights and of a deployed copy."""
    from cnnkit.compress.quantize import compare_metric as compare

    return compare(weights, deployed, *args, owner=owner_of(weights), **options)


def bench(weights: str | Path, *args: Any, **options: Any):
    """compress.bench.bench (`cnnkit bench`) with the weights' own task."""
    from cnnkit.compress.bench import bench as measure

    return measure(weights, *args, owner=owner_of(weights), **options)
