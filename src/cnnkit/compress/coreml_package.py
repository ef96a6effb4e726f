"""Core ML: a model as an ``.mlpackage`` (an ML program, the format iPhones, iPads and Macs run on their CPU, GPU and
Neural Engine), converted by Apple's ``coremltools`` from the model's torch.export program, in fp32 (inputs and
compute) so that it answers as eager PyTorch does.

Core ML's runtime exists only on macOS: on Linux cnnkit converts and checks the package's description (its input
and output names and shapes, and cnnkit's metadata in the model's user-defined metadata), and `val`, `predict` and
`bench` say that the file runs on Apple devices. On a Mac the package loads with ``coremltools.models.MLModel`` and
runs like every other deployed file. As with ExecuTorch, the YOLO-style detector's package holds its network alone:
Core ML has no NMS layer inside an ML program, so cnnkit decodes and suppresses after it (``deployed.postprocess``).
A package is a folder of a protobuf description and a weights blob: reading one runs no code. The optional extra:
``pip install "cnnkit[coreml]"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError

META_KEY = "cnnkit"
INSTALL = 'pip install "cnnkit[coreml]"'
RUNS_HERE = sys.platform == "darwin"
POSTPROCESS_OUTSIDE = "outside the package: an ML program has no NMS layer, so cnnkit decodes boxes and runs NMS in PyTorch"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """coremltools prints, on import, that its macOS-only runtime and scikit-learn converter are missing, and that this
    torch is newer than it was tested with, and draws progress bars for its sub-second passes."""
    import logging

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def require_coremltools(what: str = "Core ML") -> Any:
    try:
        with _quiet():
            import coremltools
    except ImportError:
        raise CnnkitError(f"{what} needs the coremltools package, which is not installed", f"run: {INSTALL}") from None
    return coremltools


def write_mlpackage(model: nn.Module, metadata: dict[str, Any], path: Path) -> Path:
    """``model`` converted to an fp32 ML program with a batch of 1 and written to ``path`` (a folder, replaced whole)."""
    from cnnkit.compress.detect_graph import output_names
    from cnnkit.compress.executorch_pte import network_part
    from cnnkit.engine.rundir import temp_dir

    ct = require_coremltools("--format coreml")
    if not path.name.endswith(".mlpackage"):
        raise CnnkitError(f"--out {path}: a Core ML package must end with .mlpackage")
    part, outside = network_part(model, metadata)  # the same limits as ExecuTorch: fixed shapes, no NMS
    imgsz = int(metadata["imgsz"])
    example = torch.rand(1, 3, imgsz, imgsz)
    names = ["features"] if outside else (["logits"] if metadata.get("task") == "classify" else ["output"])
    deployed = {"format": "coreml", "batch": 1, "precision": "fp32", "outputs": names,
                "input": f"float32 [1, 3, {imgsz}, {imgsz}] named 'images', "
                         f"{'0..1 RGB, letterboxed' if outside else 'normalised with mean/std'}"}
    if outside:
        deployed.update(graph_outputs=output_names(metadata), max_det=model.max_det, iou=float(model.iou), postprocess=POSTPROCESS_OUTSIDE)
    meta = {**metadata, "deployed": deployed}
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(part.eval(), (example,)).run_decompositions({})
            converted = ct.convert(program, inputs=[ct.TensorType(name="images", shape=example.shape, dtype=np.float32)],
                                   outputs=[ct.TensorType(name=n) for n in names], convert_to="mlprogram",
                                   compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16)
    except CnnkitError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise CnnkitError(f"{metadata.get('model')}: coremltools cannot convert it: {type(exc).__name__}: {(lines[0] if lines else '')[:240]}",
                          "try --format onnx or openvino; --debug shows the trace") from None
    converted.user_defined_metadata[META_KEY] = json.dumps(meta)
    converted.short_description = f"cnnkit {metadata.get('task')} {metadata.get('model')} at {imgsz} px"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(path.parent, path.name)
    try:
        with _quiet():
            converted.save(str(tmp / path.name))
        old = path.parent / f".{path.name}.old"
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)  # a folder cannot be renamed over another: the old one steps aside first
        os.replace(tmp / path.name, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_spec(path: Path) -> Any:
    ct = require_coremltools(f"{path}")
    if not (path / "Manifest.json").is_file():
        raise CnnkitError(f"{path}: not a Core ML package (no Manifest.json inside)", "pass the .mlpackage folder `cnnkit export` wrote")
    try:
        with _quiet():
            return ct.utils.load_spec(str(path))
    except Exception as exc:
        reason = str(exc).strip().splitlines()
        raise CnnkitError(f"{path}: not a Core ML package coremltools can read ({(reason[0] if reason else type(exc).__name__)[:200]})") from None


def read_metadata_text(path: Path) -> str | None:
    return dict(read_spec(path).description.metadata.userDefined).get(META_KEY)


def describe(path: Path) -> str:
    """The package's inputs and outputs as its description states them (what an app will be given)."""
    spec = read_spec(path)

    def shape(feature: Any) -> str:
        array = feature.type.multiArrayType
        dims = "x".join(str(d) for d in array.shape) or "any"
        return f"{feature.name} {dims} {array.ArrayDataType.Name(array.dataType).lower()}"

    return (f"inputs: {', '.join(shape(f) for f in spec.description.input)}; "
            f"outputs: {', '.join(f.name for f in spec.description.output)}")


class CoreMLModule(nn.Module):
    """A package run by Core ML (macOS only): a batch of one in, its output(s) out."""

    def __init__(self, path: Path, outputs: list[str]):
        super().__init__()
        if not RUNS_HERE:
            raise CnnkitError(f"{path}: Core ML models run on Apple devices and macOS only; this machine can convert them "
                              "but not run them", "run it on a Mac, or use --format onnx, openvino or executorch here")
        ct = require_coremltools(f"{path}")
        self.__dict__["model"] = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> Any:
        result = self.model.predict({"images": x.detach().float().cpu().numpy()})
        values = [torch.from_numpy(np.asarray(result[name], dtype=np.float32)) for name in self.outputs]
        return values[0] if len(values) == 1 else tuple(values)


def load_mlpackage(path: Path, metadata: dict[str, Any]) -> nn.Module:
    from cnnkit.compress.fixed_batch import FixedBatch

    deployed = metadata.get("deployed", {})
    network = FixedBatch(CoreMLModule(path, list(deployed.get("outputs", ["output"]))), 1)
    if not deployed.get("postprocess"):
        return network
    from cnnkit.compress.int8 import float_model

    graph = float_model(metadata)
    graph.features = network
    return graph.eval()
