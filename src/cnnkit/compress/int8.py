"""PyTorch int8 networks (FX graph mode, x86 backend): prepare, calibrate, convert, and rebuild the network of a
``.int8.pt`` file from its metadata (compress/runtime.py loads those files; compress/quantize.py writes them).
Why FX and not PT2E: see compress/quantize.py."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from cnnkit.compress.formats import QUANTIZED_FORMAT
from cnnkit.config import INSTANCE_MODELS
from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

METHODS = ("ptq", "qat", "dynamic")


@contextlib.contextmanager
def fx_api() -> Iterator[None]:
    """torch.ao.quantization warns at every call that it is deprecated; said once in the docs instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.ao")
        # rebuilding the structure converts uncalibrated observers; the file's scales replace theirs
        warnings.filterwarnings("ignore", message=".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        yield


def float_model(metadata: dict[str, Any]) -> nn.Module:
    """The float network a weights file's metadata describes (weights not loaded)."""
    task = metadata.get("task")
    if task == "classify":
        from cnnkit.models.backbones import build_classifier

        return build_classifier(metadata["model"], len(metadata["class_names"]))
    if task == "segment" and metadata.get("model") not in INSTANCE_MODELS:
        from cnnkit.models.segmenters import build_segmenter

        return build_segmenter(metadata["model"], metadata.get("encoder"), len(metadata["class_names"]))
    if task == "detect" and str(metadata.get("model")).startswith("yolo"):
        from cnnkit.compress.detect_graph import detection_graph
        from cnnkit.models.detectors import detector_from_metadata

        deployed = metadata.get("deployed", {})
        return detection_graph(detector_from_metadata(metadata), int(deployed.get("max_det", 100)),
                               float(deployed.get("iou", 0.5)))
    raise CnnkitError(f"PyTorch int8 covers classifiers, semantic segmenters and the YOLO-style detectors, not a {task} "
                      f"'{metadata.get('model')}'", "use --backend onnx (ONNX Runtime int8 of the exported model) instead")


def _fx_part(model: nn.Module) -> tuple[nn.Module, str | None]:
    """(the module FX quantizes, its attribute on ``model`` or None for the whole model): a detector's
    network without its decoding and NMS, which stay in float."""
    features = getattr(model, "features", None)
    from cnnkit.compress.detect_graph import YoloFeatures

    return (features, "features") if isinstance(features, YoloFeatures) else (model, None)


def _prepared_part(prepared: nn.Module) -> str | None:
    """The attribute that ``prepare`` replaced with FX's traced module, or None when it traced the whole model."""
    from torch.fx import GraphModule

    features = getattr(prepared, "features", None)
    return "features" if not isinstance(prepared, GraphModule) and isinstance(features, GraphModule) else None


def _example(metadata: dict[str, Any], batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 3, int(metadata["imgsz"]), int(metadata["imgsz"]))


def prepare(model: nn.Module, metadata: dict[str, Any], method: str) -> nn.Module:
    """The model with observers (ptq) or fake quantization (qat) inserted, by FX symbolic tracing."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    part, name = _fx_part(model)
    with fx_api():
        try:
            if method == "qat":
                prepared = prepare_qat_fx(part.train(), get_default_qat_qconfig_mapping("x86"), (_example(metadata, 2),))
            else:
                prepared = prepare_fx(part.eval(), get_default_qconfig_mapping("x86"), (_example(metadata),))
        except Exception as exc:  # FX cannot trace data-dependent Python control flow
            raise CnnkitError(f"{metadata.get('model')}: FX cannot trace this network for int8 ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})", "use --backend onnx (ONNX Runtime int8) instead") from None
    if name is None:
        return prepared
    setattr(model, name, prepared)
    return model


def convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    name = _prepared_part(prepared)
    part = getattr(prepared, name) if name else prepared
    with fx_api():
        converted = convert_fx(part.eval())
    if name is None:
        return converted
    setattr(prepared, name, converted)
    return prepared.eval()


def dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise CnnkitError("--method dynamic quantizes Linear layers, and this network has none", "use --method ptq")

    with fx_api():
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def rebuild_quantized(metadata: dict[str, Any], method: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """The int8 network of a ``.int8.pt`` file: the float network from the metadata, quantized by the
    same method (structure only), then the file's int8 tensors, scales and zero points loaded."""
    model = float_model(metadata)
    shell = dynamic(model) if method == "dynamic" else convert(prepare(model, metadata, method))
    with fx_api():
        shell.load_state_dict(state)
    return shell.eval()


def save_quantized(model: nn.Module, metadata: dict[str, Any], method: str, path: Path) -> Path:
    """``.int8.pt``: the quantized state dict and the metadata, for ``torch.load(weights_only=True)``."""
    meta = {**metadata, "deployed": {"format": "int8", "method": method, "backend": "torch-x86", "batch": None}}
    if hasattr(model, "max_det"):  # a detector's NMS settings, which the rebuilt graph needs
        meta["deployed"].update(max_det=model.max_det, iou=float(model.iou))
    with atomic_path(path) as tmp:
        torch.save({"format": QUANTIZED_FORMAT, "method": method, "metadata": json.dumps(meta),
                    "state_dict": model.state_dict()}, tmp)
    return path


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: list[torch.Tensor]) -> None:
    prepared.eval()
    with fx_api():
        for batch in batches:
            prepared(batch)
