"""`cnnkit export`: a trained model as ONNX, TorchScript, a torch.export program, an OpenVINO IR, an ExecuTorch
program or a Core ML package, checked against eager PyTorch on real images before the command succeeds (a Core ML
package only where Core ML runs: macOS).

Every exported file takes the normalised float image batch [B, 3, imgsz, imgsz] (mean/std, class names
and the rest of the weights' metadata travel inside the file) and returns the eager model's output:
class logits [B, C] for classifiers, per-pixel logits [B, C, H, W] for semantic segmenters. Detectors
take the letterboxed 0..1 batch and return their post-processed detections (boxes, scores, labels),
NMS included: see cnnkit.compress.detect_graph. Text-line recognisers take lines [B, 3, imgsz, W] of any
width W (a dynamic axis; data.textlines pads a batch to its widest line) and return per-column logits
[B, W / 4, C].
"""

from __future__ import annotations

import io
import json
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from cnnkit.compress.detect_graph import is_detection_graph, is_traced_family, output_names
from cnnkit.compress.formats import file_size
from cnnkit.compress.owner import ModelOwner
from cnnkit.compress.runtime import META_FILE, load_deployed
from cnnkit.console import console
from cnnkit.engine.rundir import atomic_path
from cnnkit.errors import CnnkitError

FORMATS = ("onnx", "torchscript", "pt2", "openvino", "executorch", "coreml")
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2", "openvino": ".xml", "executorch": ".pte", "coreml": ".mlpackage"}
MIN_OPSET = 18  # torch.onnx's exporter writes opset 18 natively; older opsets need a lossy down-conversion
DEFAULT_OPSET = 18


@dataclass
class Parity:
    images: int
    max_abs_diff: float
    output_scale: float  # the largest |eager output|, which the tolerance is relative to
    top1_agreement: float | None
    ok: bool
    agreement_name: str = "top-1 agreement"
    note: str | None = None  # said instead of the figures when parity could not be measured on this machine

    def line(self) -> str:
        if self.note:
            return self.note
        agree = f", {self.agreement_name} {self.top1_agreement:.1%}" if self.top1_agreement is not None else ""
        return f"parity on {self.images} images: largest output difference {self.max_abs_diff:.2e} (outputs up to {self.output_scale:.3g}){agree}"


def load_float(weights: str | Path, owner: ModelOwner, iou: float = 0.5, max_det: int = 100) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode float model on the CPU, metadata) of a cnnkit weights file that ``owner``'s task loads; a
    detector as its export graph, with NMS at ``iou`` and ``max_det`` detection slots per image."""
    from cnnkit.engine.checkpoint import read_metadata

    metadata = read_metadata(weights)
    if not is_detection_graph(metadata):
        return owner.load(weights).model.eval().cpu(), metadata
    from cnnkit.compress.detect_graph import detection_graph

    if not 0.0 < iou <= 1.0:
        raise CnnkitError(f"--iou must be in (0, 1], got {iou}")
    return detection_graph(owner.load(weights).model, max_det, iou), metadata


def write_export(model: nn.Module, metadata: dict[str, Any], fmt: str, path: Path, dynamic_batch: bool = False,
                 opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` in ``fmt`` to ``path`` (atomically) with the metadata inside."""
    if fmt not in FORMATS:
        raise CnnkitError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "openvino":
        return _export_openvino(model, metadata, path, dynamic_batch, opset)
    if fmt == "executorch":
        from cnnkit.compress.executorch_pte import write_pte

        if dynamic_batch:
            raise CnnkitError("--dynamic-batch: ExecuTorch programs here have a fixed batch of 1",
                              "leave it out: val, predict and bench run any batch through it an image at a time")
        return write_pte(model, metadata, path)
    if fmt == "coreml":
        from cnnkit.compress.coreml_package import write_mlpackage

        if dynamic_batch:
            raise CnnkitError("--dynamic-batch: Core ML packages here have a fixed batch of 1", "leave it out")
        return write_mlpackage(model, metadata, path)
    imgsz = int(metadata["imgsz"])
    detector = is_detection_graph(metadata)
    traced = detector and is_traced_family(str(metadata.get("model")))
    if traced and (dynamic_batch or fmt == "pt2"):
        raise CnnkitError(f"{metadata.get('model')}: torchvision's detection post-processing branches on how many boxes it "
                          f"found, which torch.export cannot follow: {'--format pt2' if fmt == 'pt2' else '--dynamic-batch'} "
                          "is not possible for it", "export it with --format onnx or torchscript, batch 1 (val, predict "
                          "and bench run any batch through it an image at a time)")
    lines = is_line_model(metadata)
    example = torch.rand(2 if dynamic_batch else 1, 3, imgsz, imgsz * 8 if lines else imgsz)
    described = "0..1 RGB, letterboxed" if detector else "normalised with mean/std"
    width = "W (any width)" if lines else str(imgsz)
    meta = {**metadata, "deployed": {"format": fmt, "batch": None if dynamic_batch else 1, "opset": opset if fmt == "onnx" else None,
                                     "input": f"float32 [{'N' if dynamic_batch else 1}, 3, {imgsz}, {width}], {described}"}}
    if detector:
        meta["deployed"].update(outputs=output_names(metadata), max_det=model.max_det, iou=float(model.iou))
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    dims = {**({0: batch_dim} if dynamic_batch else {}), **({3: torch.export.Dim("width", min=8, max=8192)} if lines else {})}
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            # torchvision's nms registration still calls a torch API renamed in 2.14
            warnings.filterwarnings("ignore", message=".*create_unbacked_symint.*")
            if fmt == "onnx" and traced:
                _export_onnx_traced(model, example, tmp, opset, meta)
            elif fmt == "onnx":
                _export_onnx(model, example, tmp, opset, dims, meta)
            elif fmt == "pt2":
                program = torch.export.export(model, (example,), dynamic_shapes=(dims,) if dims else None)
                buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer, and tmp is neither
                torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(meta)})
                tmp.write_bytes(buffer.getvalue())
            else:
                warnings.filterwarnings("ignore", message=".*torch.jit.* is deprecated.*")  # said in the docs
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # the fixed batch, checked by parity
                if traced:  # torchvision's detection code copies size tensors while being traced
                    warnings.filterwarnings("ignore", message=".*copy construct from a tensor.*")
                traced = torch.jit.trace(model, example, check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    except CnnkitError:
        raise
    except Exception as exc:
        layer = failing_layer(exc, model)
        where = f" at layer '{layer}' ({type(model.get_submodule(layer)).__name__})" if layer else ""
        raise CnnkitError(f"{metadata.get('model')}: cannot be expressed as {fmt}{where}: {type(exc).__name__}: "
                          f"{_first_line(exc)}", _export_hint(fmt)) from None
    return path


def _export_openvino(model: nn.Module, metadata: dict[str, Any], path: Path, dynamic_batch: bool, opset: int) -> Path:
    """An OpenVINO IR converted from cnnkit's own ONNX export (the graph every runtime here shares, a detector's NMS
    included), written as NAME.xml + NAME.bin."""
    import tempfile

    from cnnkit.compress.openvino_ir import convert_onnx, require_openvino, save_ir

    require_openvino("--format openvino")
    if not path.name.endswith(".xml"):
        raise CnnkitError(f"--out {path}: an OpenVINO IR must end with .xml (its weights go beside it as .bin)")
    with tempfile.TemporaryDirectory(prefix="cnnkit_openvino_") as tmp:
        onnx_path = write_export(model, metadata, "onnx", Path(tmp) / "model.onnx", dynamic_batch, opset)
        meta = json.loads(onnx_metadata_text(onnx_path))
        meta["deployed"] = {**meta["deployed"], "format": "openvino", "opset": None}
        try:
            converted = convert_onnx(onnx_path, meta)
        except CnnkitError:
            raise
        except Exception as exc:
            raise CnnkitError(f"{metadata.get('model')}: OpenVINO cannot convert it: {type(exc).__name__}: {_first_line(exc)}",
                              "try --format onnx, which ONNX Runtime runs") from None
        return save_ir(converted, path)


def onnx_metadata_text(path: Path) -> str:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}[META_FILE]


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dims: dict, meta: dict) -> None:
    """``dims``: the dynamic axes of the input (torch.export.Dim by axis; {} for a fixed shape)."""
    import contextlib
    import logging

    _check_opset(opset)
    # the exporter reports its steps on stdout, which is for results; onnx_ir logs a harmless default
    # (an empty attribute list of NonMaxSuppression's translation taken as ints) as a warning
    quiet = logging.getLogger("onnx_ir")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=["images"],
                                        output_names=_output_names(meta), dynamic_shapes=(dims,) if dims else None,
                                        verbose=False)
    finally:
        quiet.setLevel(level)
    _save_onnx(program.model_proto, path, meta)


def _check_opset(opset: int) -> None:
    import onnx

    if opset < MIN_OPSET:
        raise CnnkitError(f"--opset {opset} is too old: cnnkit exports ONNX opset {MIN_OPSET} or newer",
                          f"use --opset {MIN_OPSET} or above (ONNX Runtime 1.14+ runs it)")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise CnnkitError(f"--opset {opset} is newer than this onnx package knows ({newest})", f"use --opset {newest} or below")


def _export_onnx_traced(model: nn.Module, example: torch.Tensor, path: Path, opset: int, meta: dict) -> None:
    """torch.onnx's TorchScript-based exporter, the one torchvision's detection models support."""
    import onnx

    _check_opset(opset)
    buffer = io.BytesIO()
    warnings.filterwarnings("ignore")  # tracer warnings about Python values frozen in the graph (the fixed batch)
    torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                      output_names=_output_names(meta))
    _save_onnx(onnx.load_from_string(buffer.getvalue()), path, meta)


def _output_names(meta: dict) -> list[str]:
    return list(meta["deployed"].get("outputs") or ["output"])


def _save_onnx(proto: Any, path: Path, meta: dict) -> None:
    import onnx

    entry = proto.metadata_props.add()
    entry.key, entry.value = META_FILE, json.dumps(meta)
    onnx.save(proto, str(path))


def failing_layer(exc: BaseException, model: nn.Module) -> str | None:
    """The dotted name of the deepest submodule of ``model`` whose code was running when ``exc`` rose."""
    names = {id(module): name for name, module in model.named_modules() if name}
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        if owner is not None and id(owner) in names:
            found = names[id(owner)]
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:240] if text else type(exc).__name__


def _export_hint(fmt: str) -> str:
    others = ", ".join(f for f in FORMATS if f != fmt)
    return (f"that layer uses Python control flow or an operator {fmt} lacks: replace or drop it, or try --format {others}; "
            "rerun with --debug for the full trace")


@torch.no_grad()
def check_parity(eager: nn.Module, exported: nn.Module, images: torch.Tensor, metadata: dict[str, Any],
                 rtol: float = 1e-3, atol: float = 1e-4) -> Parity:
    """Eager against exported outputs on ``images``: the largest absolute difference must stay within
    ``atol + rtol * max|eager|``; classifiers also report how often their top-1 classes agree, detectors
    how often their detection slots hold the same class (at least 99% of the filled ones)."""
    reference, got = eager(images), exported(images)
    if isinstance(reference, (tuple, list)):
        return _detection_parity(reference, got, len(images), rtol, atol)
    reference, got = reference.float(), got.float()
    if got.shape != reference.shape:
        return Parity(len(images), float("inf"), float(reference.abs().max()), None, False)
    diff = float((reference - got).abs().max())
    scale = float(reference.abs().max())
    agreement = None
    if metadata.get("task") == "classify":
        agreement = float((reference.argmax(1) == got.argmax(1)).float().mean())
    return Parity(len(images), diff, scale, agreement, diff <= atol + rtol * scale)


def _detection_parity(reference: tuple, got: tuple, images: int, rtol: float, atol: float) -> Parity:
    """Each image's detections matched as sets: an eager detection is found when the exported output
    has one of its class overlapping it (IoU 0.9 or more, or corners within half a pixel; near-tied scores
may order slots differently);
    at least 99% must be found both ways, and matched boxes and scores must agree within tolerance."""
    from torchvision.ops import box_iou

    found = total = 0
    diff = 0.0
    no_masks = [None] * images
    for ref_boxes, ref_scores, ref_labels, ref_masks, boxes, scores, labels, masks in zip(
            *reference[:3], reference[3] if len(reference) > 3 else no_masks, *got[:3], got[3] if len(got) > 3 else no_masks):
        ref_keep, keep = ref_labels > 0, labels > 0
        ref_boxes, ref_scores, ref_labels = ref_boxes[ref_keep].float(), ref_scores[ref_keep].float(), ref_labels[ref_keep]
        boxes, scores, labels = boxes[keep].float(), scores[keep].float(), labels[keep].long()
        total += max(len(ref_boxes), len(boxes))
        if not len(ref_boxes) or not len(boxes):
            continue
        # degenerate (zero-area) boxes at the image border have no IoU: coinciding corners count as a match
        same_place = (ref_boxes[:, None, :] - boxes[None, :, :]).abs().amax(-1) <= 0.5
        overlap = torch.where(same_place, 1.0, box_iou(ref_boxes, boxes).nan_to_num(0.0)) * (ref_labels[:, None] == labels[None, :])
        best, match = overlap.max(1)
        hit = best >= 0.9
        found += int(hit.sum())
        if hit.any():
            diff = max(diff, float((ref_boxes[hit] - boxes[match[hit]]).abs().max()),
                       float((ref_scores[hit] - scores[match[hit]]).abs().max()))
            if ref_masks is not None:  # mask probabilities, 0..1
                diff = max(diff, float((ref_masks[ref_keep][hit].float() - masks[keep][match[hit]].float()).abs().max()))
    agreement = found / total if total else 1.0
    scale = max((float(r.abs().max()) for r in reference[0:1] if r.numel()), default=1.0)
    return Parity(images, diff, scale, agreement, diff <= atol + rtol * scale and agreement >= 0.99, "detections matched")


def is_line_model(metadata: dict[str, Any]) -> bool:
    """A text-line recogniser (task ocr): lines of any width in, per-column logits out."""
    return metadata.get("task") == "ocr"


def parity_images(metadata: dict[str, Any], data: str | None = None, images: list[str] | None = None, limit: int = 16) -> torch.Tensor:
    """Real images as the model sees them (resized, normalised): ``images``, else up to ``limit`` of
    ``data``'s val split, else the photos scikit-learn and scikit-image ship (text lines rendered in the
    installed fonts, for a recogniser)."""
    from PIL import Image

    if images:
        return model_inputs(metadata, [Path(p) for p in images[:limit]])
    if data:
        return model_inputs(metadata, data_images(data, metadata.get("task"), limit))
    if is_line_model(metadata):
        from cnnkit.data.synth_text import sample_lines

        return model_inputs(metadata, [Image.fromarray(line) for line in sample_lines(limit)])
    return model_inputs(metadata, [Image.fromarray(p) for p in bundled_photos()[:limit]])


def model_inputs(metadata: dict[str, Any], images: list) -> torch.Tensor:
    """Image files (or PIL images) as one normalised float batch at the model's size."""
    from PIL import Image

    from cnnkit.augment.presets import classify_transforms
    from cnnkit.data.images import load_image
    from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec

    intensity = IntensitySpec.from_dict(metadata.get("intensity"), missing=BEFORE_RECORD)  # as the model reads files
    if is_line_model(metadata):
        from cnnkit.data.textlines import line_batch

        pictures = [image if isinstance(image, Image.Image) else load_image(image, intensity) for image in images]
        return line_batch([np.asarray(p.convert("RGB")) for p in pictures], int(metadata["imgsz"]), int(metadata.get("max_width", 800)),
                          tuple(metadata["mean"]), tuple(metadata["std"]))[0]
    if is_detection_graph(metadata):
        from cnnkit.compress.detect_graph import letterbox, letterbox_options

        pictures = [image if isinstance(image, Image.Image) else load_image(image, intensity) for image in images]
        size, (stretch, like_torchvision) = int(metadata["imgsz"]), letterbox_options(metadata)
        return torch.stack([letterbox(torch.from_numpy(np.asarray(p.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1),
                                      size, stretch, like_torchvision)[0] for p in pictures])
    transform = classify_transforms(int(metadata["imgsz"]), train=False, mean=tuple(metadata["mean"]), std=tuple(metadata["std"]))
    return torch.stack([transform(image if isinstance(image, Image.Image) else load_image(image, intensity)) for image in images])


def data_images(data: str, task: str | None, limit: int, splits: tuple[str, ...] = ("val", "test", "train")) -> list[Path]:
    """Up to ``limit`` image files of ``data`` spread over the first of ``splits`` it has (ImageFolder,
    masks, COCO/YOLO layouts: ROOT/SPLIT or ROOT/images/SPLIT), else of the whole folder."""
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.images import is_image_file
    from cnnkit.data.sources import walk_files

    root = resolve_data(data, task)
    if not root.is_dir():
        raise CnnkitError(f"{data}: no such dataset folder")
    candidates = [folder for split in splits for folder in (root / split, root / "images" / split)]
    for folder in (*candidates, root / "images", root):
        if folder.is_dir():
            files = [p for p in walk_files(folder) if is_image_file(p)]
            if files:
                step = max(1, len(files) // limit)
                return files[::step][:limit]
    raise CnnkitError(f"{data}: no images found", "pass a dataset root with images (ROOT/train, ROOT/val, …)")


def bundled_photos() -> list[np.ndarray]:
    """RGB photos that ship inside scikit-learn and scikit-image: real images without a download."""
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    try:
        from skimage import data as skdata

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"):
            photos.append(getattr(skdata, name)())
    except Exception:  # scikit-image is optional here
        pass
    return [p for p in photos if p.ndim == 3 and p.shape[2] == 3]


def export_weights(weights: str | Path, fmt: str, out: str | Path | None = None, dynamic_batch: bool = False,
                   opset: int = DEFAULT_OPSET, data: str | None = None, images: list[str] | None = None,
                   rtol: float = 1e-3, iou: float = 0.5, max_det: int = 100, *, owner: ModelOwner) -> tuple[Path, Parity]:
    """`cnnkit export`: write the file, load it back, compare with eager on real images; a mismatch
    beyond tolerance removes the file and is a one-line error. ``owner``: the weights' task (cnnkit.tasks.owner_of)."""
    weights = Path(weights)
    model, metadata = load_float(weights, owner, iou, max_det)
    if fmt not in FORMATS:
        raise CnnkitError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    path = Path(out) if out else weights.with_suffix(SUFFIX[fmt])
    if not str(path).endswith(SUFFIX[fmt]):
        raise CnnkitError(f"--out {path}: a {fmt} file must end with {SUFFIX[fmt]}", "val, predict and bench tell formats by the suffix")
    write_export(model, metadata, fmt, path, dynamic_batch, opset)
    if fmt == "coreml":
        from cnnkit.compress.coreml_package import RUNS_HERE, describe

        if not RUNS_HERE:  # conversion only: the package's description is what can be checked here
            parity = Parity(0, float("nan"), float("nan"), None, True,
                            note=f"{describe(path)}; parity not checked: Core ML runs on Apple devices and macOS only")
            console.print(f"{fmt}: {path} ({file_size(path) / 1e6:.1f} MB)\n{parity.line()}")
            return path, parity
    batch = parity_images(metadata, data, images)
    exported = load_deployed(path).model
    parity = check_parity(model, exported, batch, metadata, rtol=rtol)
    console.print(f"{fmt}: {path} ({file_size(path) / 1e6:.1f} MB)\n{parity.line()}")
    if not parity.ok:
        path.unlink(missing_ok=True)
        if fmt == "openvino":
            path.with_suffix(".bin").unlink(missing_ok=True)
        raise CnnkitError(f"{path}: the exported model disagrees with eager PyTorch ({parity.line()})",
                          "the file was removed; report the model and format, or try another --format")
    return path, parity

