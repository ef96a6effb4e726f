"""`cnnkit quantize`: int8 models for x86 CPUs, by two routes.

PyTorch (``--backend torch``): FX graph-mode quantization with the x86 backend (oneDNN/FBGEMM kernels
that run int8 in eager mode: no compilation step at load time).
- ``ptq``: static post-training quantization; observers calibrated on --calib-images training images;
- ``qat``: quantization-aware training: fake-quantized fine-tuning on the one engine for --epochs,
  then conversion;
- ``dynamic``: weights int8, activations quantized on the fly; only Linear layers (a CNN's head), so it
  shrinks a classifier's head, not its convolutions.
Why not PT2E (the route PyTorch now recommends): in torch 2.14 it lives in torchao, whose
X86InductorQuantizer (torchao 0.18) stops on ResNet's conv-add-ReLU blocks ("Input partition has more
than one output node"), and its int8 speed only appears after torch.compile with Inductor at every
load (or in an AOTInductor package, which is native code we will not load from a downloaded file).
The FX API is marked deprecated upstream; it is the path the issue allows where PT2E does not fit,
and it is confined to this module.

ONNX Runtime (``--backend onnx``): the model exported to ONNX (torch.onnx, whose optimiser folds
BatchNorm into the convolutions), then static QDQ quantization (per-channel int8 weights, uint8
activations) calibrated on the same images.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from cnnkit.compress.runtime import META_FILE, QUANTIZED_FORMAT
from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

METHODS = ("ptq", "qat", "dynamic")


@contextlib.contextmanager
def _fx_api() -> Iterator[None]:
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
    if task == "segment" and metadata.get("model") != "maskrcnn":
        from cnnkit.models.segmenters import build_segmenter

        return build_segmenter(metadata["model"], metadata.get("encoder"), len(metadata["class_names"]))
    if task == "detect" and str(metadata.get("model")).startswith("yolo"):
        from cnnkit.compress.detect_graph import detection_graph
        from cnnkit.detection_api import Detector

        deployed = metadata.get("deployed", {})
        return detection_graph(Detector.from_metadata(metadata).model, int(deployed.get("max_det", 100)),
                               float(deployed.get("iou", 0.5)))
    raise CnnkitError(f"PyTorch int8 covers classifiers, semantic segmenters and the YOLO-style detectors, not a {task} "
                      f"'{metadata.get('model')}'", "use --backend onnx (ONNX Runtime int8 of the exported model) instead")


def _fx_part(model: nn.Module) -> tuple[nn.Module, str | None]:
    """(the module FX quantizes, its attribute on ``model`` or None for the whole model): a detector's
    network without its decoding and NMS, which stay in float."""
    features = getattr(model, "features", None)
    from cnnkit.compress.detect_graph import YoloFeatures

    return (features, "features") if isinstance(features, YoloFeatures) else (model, None)


def _example(metadata: dict[str, Any], batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, 3, int(metadata["imgsz"]), int(metadata["imgsz"]))


def prepare(model: nn.Module, metadata: dict[str, Any], method: str) -> nn.Module:
    """The model with observers (ptq) or fake quantization (qat) inserted, by FX symbolic tracing."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    part, name = _fx_part(model)
    with _fx_api():
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
    model.cnnkit_fx_part = name
    return model


def convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    name = getattr(prepared, "cnnkit_fx_part", None)
    part = getattr(prepared, name) if name else prepared
    with _fx_api():
        converted = convert_fx(part.eval())
    if name is None:
        return converted
    setattr(prepared, name, converted)
    return prepared.eval()


def dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise CnnkitError("--method dynamic quantizes Linear layers, and this network has none", "use --method ptq")

    with _fx_api():
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def rebuild_quantized(metadata: dict[str, Any], method: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """The int8 network of a ``.int8.pt`` file: the float network from the metadata, quantized by the
    same method (structure only), then the file's int8 tensors, scales and zero points loaded."""
    model = float_model(metadata)
    shell = dynamic(model) if method == "dynamic" else convert(prepare(model, metadata, method))
    with _fx_api():
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
    with _fx_api():
        for batch in batches:
            prepared(batch)


def quantize_onnx(float_onnx: Path, out: Path, batches: list[torch.Tensor], per_channel: bool = True,
                  only_convolutions: bool = False) -> Path:
    """ONNX Runtime static QDQ int8 of an exported float model, calibrated on ``batches``. A detector's
    graph ends in box decoding and NMS, whose coordinates int8 would ruin: only its convolutions are
    quantized then."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = onnx.load(str(float_onnx))
    input_name = source.graph.input[0].name
    fixed = source.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0 when the batch is dynamic

    class Reader(CalibrationDataReader):
        def __init__(self):
            samples = [b[i:i + 1] for b in batches for i in range(b.shape[0])] if fixed == 1 else batches
            self.items = iter([{input_name: s.numpy()} for s in samples])

        def get_next(self):
            return next(self.items, None)

    with atomic_path(out) as tmp, _quiet_onnxruntime():
        quantize_static(str(float_onnx), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"] if only_convolutions else None)
        quantized = onnx.load(str(tmp))
        meta = json.loads({p.key: p.value for p in source.metadata_props}[META_FILE])
        meta["deployed"] = {**meta.get("deployed", {}), "format": "onnx-int8", "method": "ptq", "backend": "onnxruntime-qdq"}
        _set_onnx_metadata(quantized, meta)
        onnx.save(quantized, str(tmp))
    return out


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime.quantization logs a pre-processing hint through the root logger: our exporter already
    folds BatchNorm and runs onnxscript's optimiser, which is what that pre-processing does."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _set_onnx_metadata(model: Any, meta: dict[str, Any]) -> None:
    for prop in list(model.metadata_props):
        if prop.key == META_FILE:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_FILE, json.dumps(meta)



def quantize_weights(weights: str | Path, data: str | None, method: str = "ptq", backend: str = "torch", calib_images: int = 256,
                     epochs: int = 1, out: str | Path | None = None, lr: float = 1e-4, batch: int = 32, workers: int = 2,
                     evaluate: bool = True) -> tuple[Path, dict[str, Any]]:
    """`cnnkit quantize`: the int8 file (``NAME.int8.pt`` or ``NAME.int8.onnx`` beside the weights unless
    ``out``), and a report with the task metric of fp32 and int8 on ``data``'s val split."""
    from cnnkit.compress.export import data_images, load_float, model_inputs, write_export

    if method not in METHODS:
        raise CnnkitError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if backend not in ("torch", "onnx"):
        raise CnnkitError(f"--backend {backend!r} is not one of torch, onnx")
    if backend == "onnx" and method != "ptq":
        raise CnnkitError(f"--backend onnx quantizes after training (ptq), not by --method {method}", "use --backend torch for qat or dynamic")
    weights = Path(weights)
    from cnnkit.compress.detect_graph import is_detection_graph, is_traced_family
    from cnnkit.engine.checkpoint import read_metadata

    recorded = read_metadata(weights)
    if backend == "torch" and method != "dynamic" and is_detection_graph(recorded) and is_traced_family(str(recorded.get("model"))):
        raise CnnkitError(f"{recorded.get('model')}: torchvision's detection code (proposals, RoI pooling, per-image "
                          "post-processing) is Python control flow that FX cannot trace for int8",
                          "use --backend onnx: ONNX Runtime int8 of the exported model")
    model, metadata = load_float(weights)
    needs_data = method != "dynamic"
    if needs_data and not data:
        raise CnnkitError(f"--method {method} needs calibration images: pass --data ROOT (its train split is used)",
                          "or use --method dynamic, which needs none")
    if needs_data and calib_images < 1:
        raise CnnkitError(f"--calib-images must be at least 1, got {calib_images}")
    batches: list[torch.Tensor] = []
    if needs_data:
        files = data_images(data, metadata.get("task"), calib_images, splits=("train", "val"))
        inputs = model_inputs(metadata, files)
        batches = list(inputs.split(16))
    stem = weights.name.removesuffix(".safetensors")
    if backend == "onnx":
        path = Path(out) if out else weights.parent / f"{stem}.int8.onnx"
        if not path.name.endswith(".onnx"):
            raise CnnkitError(f"--out {path}: an ONNX Runtime int8 file must end with .onnx")
        from cnnkit.compress.detect_graph import exports_any_batch

        detector = is_detection_graph(metadata)
        float_onnx = write_export(model, metadata, "onnx", path.parent / f"{stem}.fp32-for-int8.onnx",
                                  dynamic_batch=exports_any_batch(metadata))
        try:
            quantize_onnx(float_onnx, path, batches, only_convolutions=detector)
        finally:
            float_onnx.unlink(missing_ok=True)
    else:
        path = Path(out) if out else weights.parent / f"{stem}.int8.pt"
        if not path.name.endswith(".int8.pt"):
            raise CnnkitError(f"--out {path}: a PyTorch int8 file must end with .int8.pt")
        if method == "dynamic":
            quantized = dynamic(model)
        elif method == "ptq":
            prepared = prepare(model, metadata, "ptq")
            calibrate(prepared, batches)
            quantized = convert(prepared)
        else:
            prepared = _train_qat(model, metadata, data, epochs, lr, batch, workers, path.parent / f"{stem}.qat_run")
            quantized = convert(prepared)
        save_quantized(quantized, metadata, method, path)
    report = {"weights": str(weights), "output": str(path), "method": method, "backend": backend,
              "calib_images": sum(len(b) for b in batches), "size_mb_fp32": weights.stat().st_size / 1e6,
              "size_mb_int8": path.stat().st_size / 1e6}
    if evaluate and data:
        report.update(compare_metric(weights, path, data))
    return path, report


def _train_qat(model: nn.Module, metadata: dict[str, Any], data: str, epochs: int, lr: float, batch: int, workers: int,
               run_dir: Path) -> nn.Module:
    """Fake-quantized fine-tuning on the one engine (classification data), then the prepared model."""
    from cnnkit.augment.presets import classify_transforms, spec_from_config
    from cnnkit.config import TrainConfig
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.imagefolder import load_imagefolder
    from cnnkit.data.loaders import ImageDataset, collate_skipping_none
    from cnnkit.engine.trainer import fit
    from cnnkit.tasks.classify import ClassifyTask

    if metadata.get("task") != "classify":
        raise CnnkitError("--method qat trains classifiers", "use --method ptq for this model")
    if epochs < 1:
        raise CnnkitError(f"--epochs must be at least 1, got {epochs}")
    dataset = load_imagefolder(resolve_data(data), metadata.get("val_split", 0.2), metadata.get("split_seed", 0))
    if dataset.classes != metadata["class_names"]:
        raise CnnkitError(f"{data}: classes {', '.join(dataset.classes[:6])} differ from the model's {', '.join(metadata['class_names'][:6])}")
    imgsz = int(metadata["imgsz"])
    # a short fine-tune from trained weights: small lr, light augmentation, no warm-up
    cfg = TrainConfig(data=data, model=metadata["model"], epochs=epochs, batch=batch, imgsz=imgsz, lr=lr, warmup_epochs=0.0,
                      workers=workers, out=str(run_dir), augment="none").validate()
    from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec

    intensity = IntensitySpec.from_dict(metadata.get("intensity"), missing=BEFORE_RECORD)  # as the model was trained
    train_set = ImageDataset(dataset.splits["train"], classify_transforms(imgsz, True, spec_from_config(cfg)), intensity)
    val_set = ImageDataset(dataset.splits["val"], classify_transforms(imgsz, False), intensity)
    prepared = prepare(model, metadata, "qat")
    with _fx_api():
        fit(ClassifyTask(dataset.classes), prepared, train_set, val_set, cfg, run_dir, {**metadata, "qat": True}, collate_skipping_none)
    return prepared


def compare_metric(weights: str | Path, deployed: str | Path, data: str, split: str = "val") -> dict[str, Any]:
    """The task metric (classify top1, detect map, segment miou or Mask R-CNN's mask_map) of the fp32
    weights and of a deployed file, on the same split of ``data``. In-process loading (workers=0): forking loader workers after ONNX Runtime or
    the exporter have started their thread pools can deadlock the children."""
    import tempfile

    from cnnkit.compress.runtime import metric_owner, read_metadata as read_deployed

    Owner, name, extra = metric_owner(read_deployed(deployed))
    with tempfile.TemporaryDirectory(prefix="cnnkit_val_") as tmp:
        fp32 = Owner.load(weights).val(data, split, out=Path(tmp) / "fp32", device="cpu", workers=0, **extra)[name]
        int8 = Owner.load(deployed).val(data, split, out=Path(tmp) / "int8", device="cpu", workers=0, **extra)[name]
    return {"metric": name, "split": split, "fp32": fp32, "int8": int8, "change_points": (int8 - fp32) * 100}
