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

OpenVINO (``--backend openvino``): the same ONNX export converted to an OpenVINO IR, then NNCF's post-training
quantization (``nncf.quantize``: int8 FakeQuantize on convolutions' inputs and weights, fast bias correction)
calibrated on the same images; OpenVINO's CPU plugin runs it with its int8 kernels (compress/openvino_ir.py).

ExecuTorch (``--backend executorch``): PT2E quantization with ExecuTorch's XNNPACKQuantizer (per-channel symmetric
int8), calibrated on the same images, lowered to XNNPACK in a ``.pte`` (compress/executorch_pte.py).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from cnnkit.compress.formats import META_FILE, file_size
from cnnkit.compress.owner import ModelOwner, require_metric
from cnnkit.compress.int8 import METHODS, calibrate, convert, dynamic, fx_api, prepare, save_quantized
from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

BACKENDS = ("torch", "onnx", "openvino", "executorch")


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
                     evaluate: bool = True, *, owner: ModelOwner) -> tuple[Path, dict[str, Any]]:
    """`cnnkit quantize`: the int8 file (``NAME.int8.pt``, ``.int8.onnx``, ``.int8.xml`` or ``.int8.pte`` beside the weights unless
    ``out``), and a report with the task metric of fp32 and int8 on ``data``'s val split. ``owner``: the
    weights' task (cnnkit.tasks.owner_of)."""
    from cnnkit.compress.export import data_images, load_float, model_inputs, write_export

    if method not in METHODS:
        raise CnnkitError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise CnnkitError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != "torch" and method != "ptq":
        raise CnnkitError(f"--backend {backend} quantizes after training (ptq), not by --method {method}", "use --backend torch for qat or dynamic")
    if backend == "openvino":
        from cnnkit.compress.openvino_ir import require_nncf, require_openvino

        require_openvino("--backend openvino")
        require_nncf()
    if backend == "executorch":
        from cnnkit.compress.executorch_pte import require_executorch

        require_executorch("--backend executorch")
    weights = Path(weights)
    from cnnkit.compress.detect_graph import is_detection_graph, is_traced_family
    from cnnkit.engine.checkpoint import read_metadata

    recorded = read_metadata(weights)
    if backend == "torch" and method != "dynamic" and is_detection_graph(recorded) and is_traced_family(str(recorded.get("model"))):
        raise CnnkitError(f"{recorded.get('model')}: torchvision's detection code (proposals, RoI pooling, per-image "
                          "post-processing) is Python control flow that FX cannot trace for int8",
                          "use --backend onnx: ONNX Runtime int8 of the exported model")
    model, metadata = load_float(weights, owner)
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
    if backend == "executorch":
        from cnnkit.compress.executorch_pte import write_pte

        path = Path(out) if out else weights.parent / f"{stem}.int8.pte"
        write_pte(model, metadata, path, batches)
    elif backend in ("onnx", "openvino"):
        suffix = ".onnx" if backend == "onnx" else ".xml"
        path = Path(out) if out else weights.parent / f"{stem}.int8{suffix}"
        if not path.name.endswith(suffix):
            raise CnnkitError(f"--out {path}: {'an ONNX Runtime' if backend == 'onnx' else 'an OpenVINO'} int8 file must end with {suffix}")
        from cnnkit.compress.detect_graph import exports_any_batch

        detector = is_detection_graph(metadata)
        float_onnx = write_export(model, metadata, "onnx", path.parent / f".{stem}.fp32-for-int8.onnx",
                                  dynamic_batch=exports_any_batch(metadata))
        try:
            if backend == "onnx":
                quantize_onnx(float_onnx, path, batches, only_convolutions=detector)
            else:
                from cnnkit.compress.export import onnx_metadata_text
                from cnnkit.compress.openvino_ir import quantize_ir

                meta = json.loads(onnx_metadata_text(float_onnx))
                meta["deployed"] = {**meta["deployed"], "opset": None}
                quantize_ir(float_onnx, path, batches, meta, detector)
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
              "size_mb_int8": file_size(path) / 1e6}
    if evaluate and data:
        report.update(compare_metric(weights, path, data, owner=owner))
    return path, report


def _train_qat(model: nn.Module, metadata: dict[str, Any], data: str, epochs: int, lr: float, batch: int, workers: int,
               run_dir: Path) -> nn.Module:
    """Fake-quantized fine-tuning on the one engine (classification data), then the prepared model."""
    from cnnkit.augment.presets import classify_transforms, spec_from_config
    from cnnkit.tasks.classify.config import TrainConfig
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.imagefolder import load_imagefolder
    from cnnkit.data.loaders import ImageDataset, collate_skipping_none
    from cnnkit.engine.trainer import fit
    from cnnkit.tasks.classify.task import ClassifyTask

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
    with fx_api():
        fit(ClassifyTask(dataset.classes), prepared, train_set, val_set, cfg, run_dir, {**metadata, "qat": True}, collate_skipping_none)
    return prepared


def compare_metric(weights: str | Path, deployed: str | Path, data: str, split: str = "val", *, owner: ModelOwner) -> dict[str, Any]:
    """The task metric (classify top1, detect map, segment miou or Mask R-CNN's mask_map) of the fp32
    weights and of a deployed file, on the same split of ``data``, through ``owner``'s val. In-process loading
    (workers=0): forking loader workers after ONNX Runtime or the exporter have started their thread pools can
    deadlock the children."""
    import tempfile

    name = require_metric(owner)
    with tempfile.TemporaryDirectory(prefix="cnnkit_val_") as tmp:
        fp32 = owner.load(weights).val(data, split, out=Path(tmp) / "fp32", device="cpu", workers=0, **owner.val_options)[name]
        int8 = owner.load(deployed).val(data, split, out=Path(tmp) / "int8", device="cpu", workers=0, **owner.val_options)[name]
    return {"metric": name, "split": split, "fp32": fp32, "int8": int8, "change_points": (int8 - fp32) * 100}
