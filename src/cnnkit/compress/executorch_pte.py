"""ExecuTorch: a model as a ``.pte`` program for PyTorch's on-device runtime, lowered to the XNNPACK backend (the CPU
kernels ExecuTorch uses on ARM and x86 phones and boards), fp32 or int8 (PT2E quantization with ExecuTorch's
XNNPACKQuantizer: per-channel symmetric int8 weights, int8 activations), and run here by ExecuTorch's own runtime
(``executorch.runtime``).

A ``.pte`` has no free-form metadata field: cnnkit's metadata is a second method of the program, ``cnnkit_metadata``,
that returns the JSON's bytes as a uint8 tensor (ExecuTorch's "constant methods"). A program is a flatbuffer of
operators and weights, loaded with the runtime's internal-consistency verification: reading one runs no Python.

ExecuTorch programs here have a fixed batch of 1 (phones run one image at a time; val, predict and bench run a
batch an image at a time). ExecuTorch has no kernel for NMS, so the YOLO-style detector's file holds its network
alone (the part int8 converts) and cnnkit decodes boxes and runs NMS in PyTorch after it: the metadata says so
(``deployed.postprocess``). The optional extra: ``pip install "cnnkit[executorch]"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError

META_METHOD = "cnnkit_metadata"
INSTALL = 'pip install "cnnkit[executorch]"'
POSTPROCESS_OUTSIDE = "outside the file: ExecuTorch has no NMS kernel, so cnnkit decodes boxes and runs NMS in PyTorch"


def require_executorch(what: str = "ExecuTorch") -> None:
    try:
        with _quiet():
            import executorch.runtime  # noqa: F401
    except ImportError:
        raise CnnkitError(f"{what} needs the executorch package, which is not installed", f"run: {INSTALL}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ExecuTorch's runtime prints its CPU probing from C++ straight to the process's stderr on first use, and its
    import registers an enum with torch's pytree the deprecated way: neither is the user's business."""
    import logging

    pytree = logging.getLogger("torch.utils._pytree")
    level = pytree.level
    pytree.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        pytree.setLevel(level)


def network_part(model: nn.Module, metadata: dict[str, Any]) -> tuple[nn.Module, bool]:
    """(the module the .pte holds, whether post-processing runs outside it): a YOLO graph's network alone."""
    from cnnkit.compress.detect_graph import YoloGraph, is_detection_graph, is_traced_family

    if is_detection_graph(metadata) and is_traced_family(str(metadata.get("model"))):
        raise CnnkitError(f"{metadata.get('model')}: torchvision's detectors post-process with data-dependent Python "
                          "(proposals, RoI pooling, per-image NMS), which ExecuTorch cannot run",
                          "export it with --format onnx or openvino")
    if metadata.get("task") == "ocr":
        raise CnnkitError("a text-line recogniser takes lines of any width, and ExecuTorch programs here have fixed shapes",
                          "export it with --format onnx or openvino")
    if isinstance(model, YoloGraph):
        return model.features, True
    return model, False


def write_pte(model: nn.Module, metadata: dict[str, Any], path: Path, int8_batches: list[torch.Tensor] | None = None) -> Path:
    """``model`` (a float model or export graph) lowered to XNNPACK and written to ``path``; with ``int8_batches``,
    PT2E int8 calibrated on them first."""
    from cnnkit.compress.detect_graph import output_names
    from cnnkit.engine.rundir import write_bytes

    require_executorch("--format executorch" if int8_batches is None else "--backend executorch")
    if not path.name.endswith(".pte"):
        raise CnnkitError(f"--out {path}: an ExecuTorch program must end with .pte")
    part, outside = network_part(model, metadata)
    imgsz = int(metadata["imgsz"])
    example = (torch.rand(1, 3, imgsz, imgsz),)
    deployed = {"format": "executorch" if int8_batches is None else "executorch-int8", "batch": 1, "backend": "xnnpack",
                "input": f"float32 [1, 3, {imgsz}, {imgsz}], {'0..1 RGB, letterboxed' if outside else 'normalised with mean/std'}"}
    if int8_batches is not None:
        deployed.update(method="ptq", quantizer="XNNPACKQuantizer, per-channel symmetric")
    if outside:
        deployed.update(outputs=output_names(metadata), max_det=model.max_det, iou=float(model.iou), postprocess=POSTPROCESS_OUTSIDE)
    meta = {**metadata, "deployed": deployed}
    try:
        with _quiet(), torch.no_grad():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            program = torch.export.export(part.eval(), example)
            if int8_batches is not None:
                program = torch.export.export(_quantized(program, int8_batches), example)
            text = torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                                  constant_methods={META_METHOD: text}).to_executorch()
    except CnnkitError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise CnnkitError(f"{metadata.get('model')}: ExecuTorch cannot lower it: {type(exc).__name__}: "
                          f"{(lines[0] if lines else '')[:240]}", "try --format onnx or openvino; --debug shows the trace") from None
    return write_bytes(path, lowered.buffer)


def _quantized(program: Any, batches: list[torch.Tensor]) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(program.module(), quantizer)
    for batch in batches:
        for image in batch.split(1):  # the program's batch is 1
            prepared(image)
    return convert_pt2e(prepared)


def _program(path: Path) -> Any:
    require_executorch(f"{path}")
    from executorch.runtime import Runtime, Verification

    try:
        with _quiet():
            return Runtime.get().load_program(str(path), verification=Verification.InternalConsistency)
    except Exception as exc:
        reason = str(exc).strip().splitlines()
        raise CnnkitError(f"{path}: not an ExecuTorch program the runtime can load ({(reason[0] if reason else type(exc).__name__)[:200]})") from None


def read_metadata_text(path: Path) -> str | None:
    program = _program(path)
    if META_METHOD not in program.method_names:
        return None
    with _quiet():
        value = program.load_method(META_METHOD).execute([])[0]
    return bytes(value.to(torch.uint8).tolist()).decode(errors="replace")


class PteModule(nn.Module):
    """An ExecuTorch program's forward method, as a module: a batch of one in, its output(s) out."""

    def __init__(self, path: Path):
        super().__init__()
        program = _program(path)
        if "forward" not in program.method_names:
            raise CnnkitError(f"{path}: this ExecuTorch program has no forward method")
        try:
            with _quiet():
                # not modules: kept out of the module tree; the method needs its program alive
                self.__dict__["program"], self.__dict__["method"] = program, program.load_method("forward")
        except Exception as exc:
            raise CnnkitError(f"{path}: ExecuTorch cannot prepare this program ({str(exc).splitlines()[0][:200]})") from None

    def forward(self, x: torch.Tensor) -> Any:
        outputs = self.method.execute([x.detach().float().contiguous().cpu()])
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def load_pte(path: Path, metadata: dict[str, Any]) -> nn.Module:
    """The module of a ``.pte`` for any batch (an image at a time); a detector's file with cnnkit's decoding and NMS
    after it."""
    from cnnkit.compress.fixed_batch import FixedBatch

    network = FixedBatch(PteModule(path), 1)
    if not metadata.get("deployed", {}).get("postprocess"):
        return network
    from cnnkit.compress.int8 import float_model

    graph = float_model(metadata)  # the same decoding and NMS as every other deployed detector; its network replaced
    graph.features = network
    return graph.eval()
