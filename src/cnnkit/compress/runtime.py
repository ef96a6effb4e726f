"""Deployed models: the files `cnnkit export` and `cnnkit quantize` write, loaded back as a module that
`val`, `predict` and `bench` call like the eager model (a float batch in, the model's outputs out).

- ``.onnx``: ONNX Runtime on the CPU (the cnnkit metadata in the model's metadata_props);
- ``.pt2``: a torch.export program (``torch.export.load``; the metadata as an extra file);
- ``.ts``: TorchScript (``torch.jit.load``; the metadata as an extra file);
- ``.xml`` (+ ``.bin``): an OpenVINO IR, fp32 or NNCF int8, on OpenVINO's CPU plugin (the metadata in its rt_info;
  compress/openvino_ir.py);
- ``.pte``: an ExecuTorch program (XNNPACK, fp32 or int8) on ExecuTorch's runtime (the metadata as a constant method;
  compress/executorch_pte.py);
- ``.mlpackage``: a Core ML package, converted here and run on macOS only (compress/coreml_package.py);
- ``.int8.pt``: PyTorch int8 (FX graph mode, x86 backend, or dynamic): the quantized state dict read with
  ``torch.load(weights_only=True)``; the network is rebuilt from the metadata and quantized the same way,
  so no code ever comes out of the file.

None of these formats runs Python code stored in the file: ``.pt2`` and ``.ts`` archives are checked
member by member before torch opens them (compress/archives.py).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from cnnkit.compress.archives import check_onnx_external_data, check_pt2, check_torchscript, weights_only_loading
from cnnkit.compress.fixed_batch import FixedBatch
from cnnkit.compress.formats import META_FILE, QUANTIZED_FORMAT, SUFFIXES, is_deployed  # noqa: F401 - read here by others
from cnnkit.errors import CnnkitError

@dataclass
class Deployed:
    model: nn.Module
    metadata: dict[str, Any]  # the source weights' metadata (task, model, class_names, imgsz, mean, std, …) + "deployed"
    kind: str  # onnx | pt2 | torchscript | int8 | openvino | executorch | coreml
    path: Path


class ExportedProgram(nn.Module):
    """A torch.export program's module, callable like any model: its module refuses train()/eval(),
    which val and predict call, so it is kept out of the module tree."""

    def __init__(self, program_module: Any):
        super().__init__()
        self.__dict__["program"] = program_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


class OnnxModule(nn.Module):
    """An ONNX Runtime session as a module: float tensor in, its output as a tensor out (a tuple of
    tensors when the model has several, as a detector does)."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CnnkitError(f"{path}: ONNX Runtime cannot load this model ({str(exc).splitlines()[0][:200]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> Any:
        outputs = [torch.from_numpy(np.ascontiguousarray(out))
                   for out in self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The cnnkit metadata a deployed file carries; CnnkitError when it has none."""
    path = Path(path)
    if not path.is_file() and not (path.suffix == ".mlpackage" and path.is_dir()):
        raise CnnkitError(f"{path}: no such file")
    text = None
    try:
        if path.suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            check_onnx_external_data(path, model)
            text = {p.key: p.value for p in model.metadata_props}.get(META_FILE)
        elif path.suffix == ".pt2":  # the extra file, read from the checked archive: no program deserialised
            text = next((data for name, data in check_pt2(path).items() if name.partition("/")[2] == f"extra/{META_FILE}"), None)
        elif path.suffix == ".xml":
            from cnnkit.compress.openvino_ir import read_metadata_text

            text = read_metadata_text(path)
        elif path.suffix == ".pte":
            from cnnkit.compress.executorch_pte import read_metadata_text as read_pte_metadata

            text = read_pte_metadata(path)
        elif path.suffix == ".mlpackage":
            from cnnkit.compress.coreml_package import read_metadata_text as read_package_metadata

            text = read_package_metadata(path)
        elif path.suffix == ".ts":
            extra = {META_FILE: ""}
            _load_torchscript(path, extra)
            text = extra[META_FILE] or None
        else:
            text = _read_quantized(path)["metadata"]
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable {path.suffix} model ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not text:
        raise CnnkitError(f"{path}: no cnnkit metadata in this file", "use a file written by `cnnkit export` or `cnnkit quantize`")
    return parse_metadata(path, text.decode(errors="replace") if isinstance(text, bytes) else text)


def parse_metadata(path: Path, text: str) -> dict[str, Any]:
    """The JSON object a file's cnnkit metadata holds; CnnkitError naming the file when it is broken."""
    try:
        metadata = json.loads(text)
    except ValueError as exc:
        raise CnnkitError(f"{path}: broken cnnkit metadata ({exc})", "export or save the model again") from None
    if not isinstance(metadata, dict):
        raise CnnkitError(f"{path}: broken cnnkit metadata (a JSON {type(metadata).__name__}, not an object)",
                          "export or save the model again")
    return metadata


def load_deployed(path: str | Path, threads: int | None = None) -> Deployed:
    """The model in a deployed file, ready to call on a float batch (CPU)."""
    path = Path(path)
    metadata = read_metadata(path)
    batch = metadata.get("deployed", {}).get("batch")
    if path.suffix == ".onnx":
        model: nn.Module = OnnxModule(path, threads)
        kind = "onnx"
    elif path.suffix == ".xml":
        from cnnkit.compress.openvino_ir import OpenVinoModule

        model, kind = OpenVinoModule(path, threads), "openvino"
    elif path.suffix == ".pte":  # any batch already: an image at a time
        from cnnkit.compress.executorch_pte import load_pte

        return Deployed(load_pte(path, metadata), metadata, "executorch", path)
    elif path.suffix == ".mlpackage":
        from cnnkit.compress.coreml_package import load_mlpackage

        return Deployed(load_mlpackage(path, metadata), metadata, "coreml", path)
    elif path.suffix == ".pt2":
        model, kind = ExportedProgram(_load_program(path).module()), "pt2"
    elif path.suffix == ".ts":
        model, kind = _load_torchscript(path, {}).eval(), "torchscript"
    else:
        from cnnkit.compress.int8 import rebuild_quantized

        saved = _read_quantized(path)
        model, kind = rebuild_quantized(metadata, saved["method"], saved["state_dict"]), "int8"
    if batch:
        model = FixedBatch(model, int(batch))
    return Deployed(model, metadata, kind, path)


def load_deployed_for(path: str | Path, task: str) -> tuple[nn.Module, dict[str, Any]]:
    """(model, metadata) of a deployed file that must hold a ``task`` model."""
    deployed = load_deployed(path)
    found = deployed.metadata.get("task")
    if found != task:
        raise CnnkitError(f"{path}: a deployed '{found}' model, not '{task}'", f"use `cnnkit {found} …` with this file")
    return deployed.model, deployed.metadata


def _load_program(path: Path) -> Any:
    check_pt2(path)
    with weights_only_loading():
        return torch.export.load(str(path))


def _load_torchscript(path: Path, extra: dict[str, Any]) -> Any:
    check_torchscript(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.* is deprecated.*")  # the format the issue asks for
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra)


def _read_quantized(path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")  # quantized tensors' storages
            saved = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a cnnkit int8 file ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(saved, dict) or saved.get("format") != QUANTIZED_FORMAT:
        raise CnnkitError(f"{path}: not a cnnkit int8 file", "write one with `cnnkit quantize --weights W --data ROOT`")
    return saved
