"""OpenVINO: a model as an OpenVINO IR (``NAME.xml``, the graph, beside ``NAME.bin``, its weights), converted from
cnnkit's own ONNX export by ``openvino.convert_model``, run by OpenVINO's CPU plugin, and int8 by NNCF's
post-training quantization (``nncf.quantize``) calibrated on the user's images.

The cnnkit metadata rides in the IR's rt_info (``<rt_info><cnnkit><metadata value="JSON"/>``), which OpenVINO keeps
through conversion, quantization and saving. An IR is an XML graph of OpenVINO's operators and a flat weights
file: reading one runs no code. The optional extra: ``pip install "cnnkit[openvino]"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError

META_PATH = ["cnnkit", "metadata"]
INSTALL = 'pip install "cnnkit[openvino]"'


def require_openvino(what: str = "OpenVINO") -> Any:
    try:
        import openvino
    except ImportError:
        raise CnnkitError(f"{what} needs the openvino package, which is not installed", f"run: {INSTALL}") from None
    return openvino


def require_nncf() -> Any:
    try:
        with _quiet():
            import nncf
    except ImportError:
        raise CnnkitError("OpenVINO int8 needs NNCF (post-training quantization), which is not installed",
                          f"run: {INSTALL}") from None
    return nncf


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF imports torch's C++ extension helper, which logs that this machine has no CUDA runtime, and logs its
    own dataset-size notes through its logger: neither is news to a user quantizing on a CPU."""
    loggers = [logging.getLogger(name) for name in ("torch.utils.cpp_extension", "nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def bin_of(xml: Path) -> Path:
    return xml.with_suffix(".bin")


def convert_onnx(onnx_path: Path, meta: dict[str, Any]) -> Any:
    """The OpenVINO model of an ONNX file cnnkit wrote, with ``meta`` in its rt_info."""
    ov = require_openvino()
    model = ov.convert_model(str(onnx_path))
    set_metadata(model, meta)
    return model


def set_metadata(model: Any, meta: dict[str, Any]) -> None:
    model.set_rt_info(json.dumps(meta), META_PATH)


def save_ir(model: Any, path: Path) -> Path:
    """Write ``path`` (.xml) and its .bin atomically: both are written in a temporary folder beside them and moved into
    place, the weights first, so that an .xml is never seen without its weights."""
    from cnnkit.engine.rundir import temp_dir

    ov = require_openvino()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(path.parent, path.name)
    try:
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)
        os.replace(tmp / bin_of(path).name, bin_of(path))
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_ir(path: Path) -> Any:
    """The OpenVINO model of an IR file; a missing .bin or a file that is not an IR is one line naming it."""
    ov = require_openvino(f"{path}")
    if not bin_of(path).is_file():
        raise CnnkitError(f"{path}: its weights file {bin_of(path).name} is missing beside it",
                          "an OpenVINO IR is two files, NAME.xml and NAME.bin: copy both")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()
        reason = next((line for line in first if line.strip() and "Exception from" not in line), type(exc).__name__)
        raise CnnkitError(f"{path}: not an OpenVINO IR that OpenVINO can read ({reason.strip()[:200]})") from None


def read_metadata_text(path: Path) -> str | None:
    model = read_ir(path)
    if not model.has_rt_info(META_PATH):
        return None
    return str(model.get_rt_info(META_PATH).astype(str))


class OpenVinoModule(nn.Module):
    """An IR compiled for OpenVINO's CPU plugin, as a module: float tensor in, its output as a tensor out (a tuple of
    tensors when the model has several, as a detector does). fp32 IRs run in fp32 (the plugin would otherwise pick
    bf16 on CPUs that have it, and parity with eager would depend on the machine)."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        ov = require_openvino(f"{path}")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(read_ir(path), "CPU", config)
        except CnnkitError:
            raise
        except Exception as exc:
            raise CnnkitError(f"{path}: OpenVINO's CPU plugin cannot compile this model ({str(exc).splitlines()[0][:200]})") from None
        self.request = self.compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> Any:
        results = self.request.infer({0: np.ascontiguousarray(x.detach().float().cpu().numpy())})
        outputs = [torch.from_numpy(np.array(results[out])) for out in self.compiled.outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def quantize_ir(float_onnx: Path, out: Path, batches: list[torch.Tensor], meta: dict[str, Any], detector: bool) -> Path:
    """NNCF post-training int8 of the IR of ``float_onnx``, calibrated on ``batches`` (fed an image at a time to a
    model exported for batch 1). A detector's graph ends in box decoding and NMS, whose coordinates int8 would ruin:
    NNCF's ignored scope keeps every operator after the network's last convolution in float."""
    nncf = require_nncf()
    model = convert_onnx(float_onnx, meta)
    fixed = model.inputs[0].get_partial_shape()[0].is_static
    samples = [b[i:i + 1].numpy() for b in batches for i in range(b.shape[0])] if fixed else [b.numpy() for b in batches]
    options: dict[str, Any] = {"subset_size": len(samples)}  # every calibration image (NNCF's default takes 300 items)
    if detector:
        options["ignored_scope"] = nncf.IgnoredScope(names=_after_last_convolution(model), validate=False)
    with _quiet():
        quantized = nncf.quantize(model, nncf.Dataset(samples), **options)
    set_metadata(quantized, {**meta, "deployed": {**meta.get("deployed", {}), "format": "openvino-int8", "method": "ptq",
                                                  "backend": "nncf"}})
    return save_ir(quantized, out)


def _after_last_convolution(model: Any) -> list[str]:
    """The names of the operators that come after the last convolution in topological order (a detector's decoding
    and NMS)."""
    ordered = model.get_ordered_ops()
    last = max((k for k, op in enumerate(ordered) if op.get_type_name() in ("Convolution", "GroupConvolution")), default=-1)
    return [op.get_friendly_name() for op in ordered[last + 1:] if op.get_type_name() not in ("Parameter", "Result", "Constant")]
