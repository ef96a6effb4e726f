"""The models a server holds: any cnnkit weights or deployed file (eager, ONNX, TorchScript, torch.export, int8) of a
task that predicts, loaded once through the task table, and the one call the batcher makes on it:
``ServedModel.predict(pictures, names, params, overlay)`` -> predict's rows (the JSON of `TASK predict --save-json`)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnkit.errors import CnnkitError

# the query parameters each task takes (name -> (type, low, high)), checked before a request is queued
PARAMETERS: dict[str, dict[str, tuple[type, float, float]]] = {
    "classify": {"topk": (int, 1, 1000)},
    "detect": {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0)},
    "instance": {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0)},
    "segment": {},
    "ocr": {},
    "ocr_det": {},
    "embed": {},
}


@dataclass
class ServedModel:
    """One loaded model: its endpoint name, its task (the task table's name), the task's object (Classifier,
    Detector, …), the file's format, and what /models says of it."""

    name: str
    task: str
    model: Any
    path: Path
    format: str
    run: Callable[..., list[dict[str, Any]]] = field(repr=False, default=None)  # type: ignore[assignment]
    # picture -> the network's input, run where the upload is decoded (a worker thread) rather than on the inference
    # thread, so that resizing the next requests' images overlaps the running batch (tasks whose class has prepare)
    prepare: Callable[[np.ndarray], Any] | None = field(repr=False, default=None)

    def info(self) -> dict[str, Any]:
        classes = getattr(self.model, "class_names", None)
        return {"name": self.name, "task": self.task, "format": self.format, "file": self.path.name,
                "imgsz": int(getattr(self.model, "imgsz", 0) or 0), "classes": list(classes) if classes else [],
                "parameters": sorted(PARAMETERS[self.task])}

    def predict(self, pictures: list[np.ndarray], names: list[str], params: dict[str, Any], overlay: bool) -> list[dict[str, Any]]:
        """predict's rows for one batch of decoded pictures; with ``overlay``, each row's "overlay" is a PNG of the
        result drawn on its picture, base64-encoded."""
        rows = self.run(pictures, names, params, overlay)
        for row in rows:
            drawn = row.pop("drawn", None)
            if overlay and drawn is not None:
                row["overlay"] = png_base64(drawn)
        return rows


def png_base64(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, label in ((".int8.pt", "int8"), (".onnx", "onnx"), (".ts", "torchscript"), (".pt2", "torch.export"), (".xml", "openvino"),
                          (".pte", "executorch"), (".mlpackage", "coreml")):
        if name.endswith(suffix):
            return f"{label}-int8" if label in ("onnx", "openvino", "executorch") and ".int8." in name else label
    return "eager"


def load_served(path: str | Path, name: str | None = None, device: str = "auto") -> ServedModel:
    """The model of a weights or deployed file, ready to predict; a file of a task that serves no predictions (ssl,
    sot) or no file at all is one line."""
    from cnnkit import tasks

    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"--weights {path}: no such file", "pass a weights file of a `train` run, or an exported one")
    owner = tasks.owner_of(path)
    if owner.name not in PARAMETERS:
        raise CnnkitError(f"--weights {path}: a '{owner.name}' model has no predictions to serve",
                          "serve classify, detect, segment, ocr or embed weights")
    model = owner.load(path)
    served = ServedModel(name or default_name(path), owner.name, model, path, file_format(path))
    served.run = _runner(owner.name, model, device)
    served.prepare = getattr(model, "prepare", None)
    return served


def default_name(path: Path) -> str:
    """The run's name for weights inside a run directory (runs/classify/exp/weights/best.safetensors -> exp), else
    the file's stem."""
    if path.parent.name == "weights" and path.parent.parent.name:
        return path.parent.parent.name
    return path.name.split(".")[0]


def _runner(task: str, model: Any, device: str) -> Callable[..., list[dict[str, Any]]]:
    """The task's predict_images with the server's device and the request's parameters (PARAMETERS' names are
    predict_images' keywords, so each task keeps its own defaults)."""
    from cnnkit.engine.distributed import select_device

    device = str(select_device(device))
    fixed: dict[str, Any] = {}
    if task == "detect":
        fixed["net"] = model.inference_model(device)  # YOLO's BatchNorms folded once, not per batch
    elif task == "ocr_det":  # pages are read with the recogniser cnnkit ships, as `ocr predict` reads them
        from cnnkit.tasks.ocr.shipped import shipped_recognizer

        fixed["rec"] = shipped_recognizer()
    return lambda pictures, names, params, draw: model.predict_images(pictures, names, device=device, draw=draw, **fixed, **params)


def check_parameters(served: ServedModel, query: dict[str, str]) -> dict[str, Any]:
    """The request's task parameters, typed and in range; anything else is a CnnkitError (the app answers 422)."""
    allowed = PARAMETERS[served.task]
    params: dict[str, Any] = {}
    for key, text in query.items():
        if key in ("overlay", "api_key"):
            continue
        if key not in allowed:
            takes = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise CnnkitError(f"parameter '{key}' does not apply to {served.name} (a {served.task} model; {takes}, and overlay)")
        kind, low, high = allowed[key]
        try:
            value = kind(text)
        except ValueError:
            raise CnnkitError(f"parameter '{key}' must be {'an integer' if kind is int else 'a number'}, got '{text}'") from None
        if not low <= value <= high:
            raise CnnkitError(f"parameter '{key}' must be between {low:g} and {high:g}, got {text}")
        params[key] = value
    return params
