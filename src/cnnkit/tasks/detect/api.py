"""Object detection in the API: the Detector verbs and the detection recipe of the one training run.

    from cnnkit import Detector
    det = Detector("yolo_n")                              # or "fasterrcnn", "ssdlite"; or Detector.load("runs/detect/exp/weights/best.safetensors")
    run = det.train(data="shapes", epochs=12)             # COCO, YOLO or VOC layout; run.dir, run.metrics
    det.val("shapes")                                     # metrics.json + predictions.json (COCO results)
    det.predict(["a.jpg", "clip.mp4"], out="runs/detect/predict")   # [{"file", "boxes", "labels", "scores"}]
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from cnnkit.tasks.classify.api import _intensity_options
from cnnkit.runner import (Built, ModelFile, Recipe, Run, adopt_model_file, beside_run, finish_best_run, publish, read_in_batches,
                           read_model_file, split_samples, train_and_reload, write_predictions)
from cnnkit.augment.presets import dense_transforms, spec_from_config
from cnnkit.tasks.detect.config import DetectConfig
from cnnkit.console import console
from cnnkit.data.builtin import resolve_data
from cnnkit.data.detection import DetectionData, DetectionImage, load_detection, match_categories, select_categories
from cnnkit.data.images import is_image_file, load_image
from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec, spec_of
from cnnkit.data.sources import SourceFile, expand_source_files, output_names
from cnnkit.data.shards import read_shards_for
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.callbacks import progress_bar
from cnnkit.engine.rundir import atomic_path
from cnnkit.engine.trainer import evaluate, make_loader
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.coco import coco_evaluate
from cnnkit.models.detectors import (
    YOLO_MODELS,
    Anchors,
    YoloOptions,
    box_statistics,
    build_detector,
    fit_anchors,
    for_inference,
    model_cost,
    parse_model,
    pyramid_levels,
    set_postprocess,
)
from cnnkit.tasks.detect import task as detect

TASK = "detect"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
PREDICT_CONF = 0.25


class Detector:
    """An object detector: torchvision's Faster R-CNN (two-stage) or SSD / SSDlite (single-shot), or
    cnnkit's own single-stage anchor-free yolo_n / yolo_s / yolo_m."""

    def __init__(self, model: str = "fasterrcnn", class_names: list[str] | None = None, imgsz: int = 320,
                 backbone: str | None = None, pretrained: bool = False, anchors: Anchors | None = None,
                 category_ids: list[int] | None = None, yolo: YoloOptions | None = None):
        self.model_name, self.backbone = parse_model(model, backbone)
        self.class_names = class_names
        self.category_ids = category_ids or (list(range(len(class_names))) if class_names else None)
        self.imgsz = imgsz
        self.pretrained = pretrained
        self.anchors = anchors
        self.yolo = yolo or YoloOptions()
        self.intensity = IntensitySpec()  # how images deeper than 8 bits become inputs (data/intensity.py)
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)  # (parameters, GFLOPs at imgsz)
        if class_names:
            self.model = build_detector(self.model_name, len(class_names), imgsz, self.backbone, anchors, pretrained, yolo=self.yolo)

    @classmethod
    def load(cls, weights: str | Path) -> "Detector":
        """Rebuild the detector from a cnnkit weights file alone (architecture, anchors, classes, size), or
        load a file of `cnnkit export` / `cnnkit quantize` (.onnx, .pt2, .ts, .int8.pt) to run as it is."""
        file = read_model_file(weights, TASK)
        det = cls.from_metadata(file.meta, build=file.state is not None)  # a deployed file brings its own network
        return adopt_model_file(det, file, lambda graph: deployed_detector(graph, file.meta))

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], build: bool = True) -> "Detector":
        """The detector a weights file's metadata describes: architecture, anchors, classes, size, split;
        its network freshly built (weights not loaded) unless ``build`` is False."""
        anchors = Anchors.from_dict(meta["anchors"]) if meta.get("anchors") else None
        det = cls(meta["model"], class_names=meta["class_names"] if build else None, imgsz=meta["imgsz"],
                  backbone=meta.get("backbone"), anchors=anchors, category_ids=meta.get("category_ids"),
                  yolo=YoloOptions.from_dict(meta.get("yolo")))
        det.class_names = meta["class_names"]
        det.intensity = IntensitySpec.from_dict(meta.get("intensity"), missing=BEFORE_RECORD)
        return adopt_model_file(det, ModelFile(None, meta))  # the split and cost it records; no weights

    # ---------------------------------------------------------------- train
    def train(self, data: str = "shapes", **options: Any) -> Run:
        """Train on a COCO, YOLO or VOC dataset (or 'shapes'); options are DetectConfig fields."""
        defaults = {"model": self.model_name, "backbone": self.backbone, "pretrained": self.pretrained, "imgsz": self.imgsz,
                    **_intensity_options(self.intensity)}
        if self.model_name in YOLO_MODELS:
            defaults.update(self.yolo.to_dict())
        if self.weights_path is not None:
            defaults["weights"] = str(self.weights_path)
        return train_and_reload(self, DetectConfig, DETECT, data, defaults, options)

    # ---------------------------------------------------------------- val
    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 8, device: str = "auto",
            workers: int = 2, conf: float = 0.001, iou: float = 0.5, max_det: int = 100, classes: str | None = None,
            strict: bool = False) -> dict[str, Any]:
        """COCO metrics of the model on one split, written with predictions.json (COCO results, the
        dataset's own ids), plots and report.html into ``out`` (default: val/ beside the run)."""
        dataset = load_split_data(data, strict, self.val_split, self.split_seed)
        images = split_samples(data, dataset.splits, split)
        categories, label_ids = match_categories(dataset, self.class_names, "detects", classes)
        out_dir = beside_run(out, self.weights_path, TASK)
        metrics, paths = score_split(self, images, categories, label_ids, batch, workers, dist_utils.select_device(device),
                                     conf, iou, max_det, out_dir, split, predictions="val")
        metrics = {"split": split, **metrics}
        publish(out_dir, f"cnnkit detect val: {self.model_name} on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "conf": conf, "iou": iou,
                 "max_det": max_det}, metrics, paths, f"{split}: {_headline(metrics)}")
        return metrics

    # ---------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, sources: Iterable[str | Path] | str | Path, conf: float = PREDICT_CONF, iou: float = 0.5,
                max_det: int = 100, classes: str | None = None, out: str | Path | None = None, batch: int = 4,
                device: str = "auto") -> list[dict[str, Any]]:
        """Detections for images, folders, globs and video files: [{"file", "boxes" (xyxy pixels),
        "labels", "scores", "overlay"?}] (video frames add "frame"). With ``out``, annotated images
        (OUT/REL.png) and videos (OUT/REL.mp4, same frame rate) are written there, REL being the input's
        path below its folder or glob root (data.sources.output_names: no two inputs share an output);
        "overlay" is that path (OUT joined as given)."""
        model = self._require_model()
        media = expand_media([sources] if isinstance(sources, (str, Path)) else list(sources))
        names = output_names([f.relative for f in media], [".mp4" if is_video(f.path) else ".png" for f in media])
        dev = dist_utils.select_device(device)
        net = for_inference(model.to(dev).eval())
        set_postprocess(net, conf, iou, max_det)
        keep = self._keep_labels(classes)
        out_dir = Path(out) if out is not None else None
        results: list[dict[str, Any]] = []
        images = [(f, name) for f, name in zip(media, names) if not is_video(f.path)]  # videos: a bar each
        read = lambda path: load_image(path, self.intensity)  # noqa: E731
        for chunk in read_in_batches([f for f, _ in images], batch, read, "detect", "images"):
            rows = self.predict_images([image for _, image in chunk], [str(images[k][0].path) for k, _ in chunk], conf, iou,
                                       max_det, classes, device, draw=out_dir is not None, net=net)
            for (index, _), result in zip(chunk, rows):
                if out_dir is not None:
                    result["overlay"] = str(out_dir / images[index][1])
                    _save_image(Path(result["overlay"]), result.pop("drawn"))
                results.append(result)
        for f, name in zip(media, names):
            if is_video(f.path):
                results += self._predict_video(net, f.path, dev, keep, out_dir / name if out_dir is not None else None,
                                               batch, max_det)
        return results

    @torch.no_grad()
    def predict_images(self, images: list[Any], names: list[str], conf: float = PREDICT_CONF, iou: float = 0.5,
                       max_det: int = 100, classes: str | None = None, device: str = "auto", draw: bool = False,
                       net: nn.Module | None = None) -> list[dict[str, Any]]:
        """The rows of predict for decoded pictures (8-bit RGB, PIL or HxWx3 arrays) in one batch, ``names`` their
        "file"; with ``draw``, each row also holds "drawn", the picture with its boxes. ``net``: the network to run
        (inference_model's, prepared once by a caller that predicts many batches)."""
        dev = dist_utils.select_device(device)
        net = net if net is not None else self.inference_model(dev)
        set_postprocess(net, conf, iou, max_det)
        frames = [np.asarray(image) for image in images]
        rows = []
        for name, pixels, found in zip(names, frames, self._detect(net, frames, dev, self._keep_labels(classes), max_det)):
            row = {"file": name, **found}
            if draw:
                row["drawn"] = self._draw(pixels, found)
            rows.append(row)
        return rows

    def inference_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network predict runs on ``device``, in eval mode (YOLO's with its BatchNorms folded: a copy)."""
        return for_inference(self._require_model().to(device).eval())

    def frame_detector(self, conf: float = PREDICT_CONF, iou: float = 0.5, max_det: int = 100, classes: str | None = None,
                       device: str = "auto") -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """A function from RGB frames (uint8 HxWx3) to each frame's detections [K, 6]: x1, y1, x2, y2 (pixels),
        score, class index (0-based, into ``class_names``), as a tracker takes them."""
        model = self._require_model()
        dev = dist_utils.select_device(device)
        net = for_inference(model.to(dev).eval())
        set_postprocess(net, conf, iou, max_det)
        keep = self._keep_labels(classes)

        def detect_frames(frames: list[np.ndarray]) -> list[np.ndarray]:
            if not frames:
                return []
            tensors = [torch.from_numpy(np.array(f, order="C")).permute(2, 0, 1).to(dev).float().div_(255) for f in frames]
            with torch.inference_mode():
                padded = detect.pad_detections(net(tensors), max_det, keep)
            found = []
            for boxes, scores, labels in zip(padded["boxes"].cpu(), padded["scores"].cpu(), padded["labels"].cpu()):
                valid = labels > 0
                found.append(np.concatenate([boxes[valid].numpy(), scores[valid, None].numpy(),
                                             (labels[valid, None] - 1).numpy()], axis=1).astype(np.float64))
            return found

        detect_frames.class_names = self.class_names  # type: ignore[attr-defined]  # what the drawn labels say
        return detect_frames

    def _detect(self, net: nn.Module, frames: list[np.ndarray], device: torch.device, keep: set[int] | None,
                max_det: int) -> list[dict[str, Any]]:
        if not frames:
            return []
        # a copy torch may own: a decoded image's buffer is read-only, a video frame a reversed (BGR) view
        tensors = [torch.from_numpy(np.array(f, order="C")).permute(2, 0, 1).to(device).float().div_(255) for f in frames]
        padded = detect.pad_detections(net(tensors), max_det, keep)
        found = []
        for boxes, scores, labels in zip(padded["boxes"].cpu(), padded["scores"].cpu(), padded["labels"].cpu()):
            valid = labels > 0
            found.append({"boxes": [[round(v, 2) for v in box] for box in boxes[valid].tolist()],
                          "labels": [self.class_names[k - 1] for k in labels[valid].tolist()],
                          "scores": [round(s, 5) for s in scores[valid].tolist()]})
        return found

    def _draw(self, pixels: np.ndarray, found: dict[str, Any]) -> np.ndarray:
        captions = [f"{label} {score:.2f}" for label, score in zip(found["labels"], found["scores"])]
        return detect.draw_boxes(pixels, np.asarray(found["boxes"]).reshape(-1, 4), captions, colour=(255, 40, 40))

    def _predict_video(self, net: nn.Module, path: Path, device: torch.device, keep: set[int] | None, target: Path | None,
                       batch: int, max_det: int) -> list[dict[str, Any]]:
        """Frame by frame through OpenCV; the annotated copy (``target``) keeps the frame rate and size."""
        import cv2

        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise CnnkitError(f"{path}: OpenCV cannot open this video", "check the file plays; mp4 (H.264/MPEG-4) and avi are read")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        results: list[dict[str, Any]] = []
        writer = None
        tmp = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.stem}.part.mp4")  # OpenCV picks the container by the extension
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        frame_number = 0
        started = time.perf_counter()
        try:
            with progress_bar() as bar:
                task = bar.add_task(f"{path.name}", total=total, info="", rate="")
                while True:
                    frames = []
                    for _ in range(batch):
                        ok, frame = capture.read()
                        if not ok:
                            break
                        frames.append(frame[:, :, ::-1])  # BGR -> RGB
                    if not frames:
                        break
                    for pixels, found in zip(frames, self._detect(net, frames, device, keep, max_det)):
                        results.append({"file": str(path), "frame": frame_number, **found,
                                        **({"overlay": str(target)} if target is not None else {})})
                        frame_number += 1
                        if writer is not None:
                            writer.write(np.ascontiguousarray(self._draw(np.ascontiguousarray(pixels), found)[:, :, ::-1]))
                    bar.update(task, advance=len(frames), rate=f"{frame_number / max(time.perf_counter() - started, 1e-9):.1f} frames/s")
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if frame_number == 0:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise CnnkitError(f"{path}: no frame could be read from this video")
        if tmp is not None:
            os.replace(tmp, target)
        console.print(f"{path.name}: {frame_number} frames at {frame_number / max(time.perf_counter() - started, 1e-9):.1f} frames/s"
                      + (f" -> {target}" if target else ""))
        return results

    def _keep_labels(self, classes: str | None) -> set[int] | None:
        """--classes (names or dataset ids) -> model labels 1..C to keep."""
        if not classes:
            return None
        categories = list(zip(self.category_ids, self.class_names))
        wanted = set(select_categories(categories, classes, "the model"))
        return {k + 1 for k, cid in enumerate(self.category_ids) if cid in wanted}

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this Detector has no weights yet", "train it first or use Detector.load(FILE)")
        return self.model


# ==================================================================== data
def deployed_detector(graph: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """A deployed detection graph behind torchvision's detector interface (lists of images in, boxes out)."""
    from cnnkit.compress.detect_graph import DeployedDetector

    return DeployedDetector(graph, meta)


def load_split_data(data: str, strict: bool, val_split: float, seed: int) -> DetectionData:
    """The dataset with a val split: its own, else ``val_split`` of train cut off with ``seed`` (shards: their val
    and test)."""
    shards = read_shards_for(data, "detect")
    if shards is not None:
        return shards
    root = resolve_data(data)
    dataset = load_detection(root, strict=strict)
    if "train" in dataset.splits and "val" not in dataset.splits:
        images = dataset.splits["train"]
        order = np.random.default_rng(seed).permutation(len(images))
        n_val = max(1, round(len(images) * val_split)) if len(images) > 1 else 0
        dataset.splits["val"] = [images[i] for i in sorted(order[:n_val])]
        dataset.splits["train"] = [images[i] for i in sorted(order[n_val:])]
        if n_val:
            console.print(f"{root}: no val split; {n_val} of {len(images)} train images held out (--val-split {val_split:g})")
    return dataset


def load_training_data(cfg: DetectConfig, root: Path) -> DetectionData:
    """The dataset for a training run: val split ensured, --classes applied, boxes required."""
    dataset = load_split_data(str(root), cfg.strict, cfg.val_split, cfg.seed)
    if "train" not in dataset.splits or not dataset.splits["train"]:
        raise CnnkitError(f"{root}: no training images", "expected a train split (annotations/train.json, data.yaml train:, "
                          "ImageSets/Main/train.txt)")
    if cfg.classes:
        wanted = select_categories(dataset.categories, cfg.classes, str(root))
        dataset = restrict_categories(dataset, set(wanted))
    if not any(len(image.boxes) for image in dataset.splits["train"]):
        raise CnnkitError(f"{root}: the training split has no boxes at all ({len(dataset.splits['train'])} images)",
                          "a detector learns from labelled boxes; check the annotation files (`cnnkit data check`)")
    negatives = sum(not len(image.boxes) for image in dataset.splits["train"])
    if negatives and dist_utils.is_main():
        console.print(f"{negatives} training images without objects are kept as negatives")
    return dataset


def restrict_categories(dataset: DetectionData, keep: set[int]) -> DetectionData:
    """Only the categories in ``keep``; other boxes are dropped (those objects become background)."""
    splits = {}
    for split, images in dataset.splits.items():
        splits[split] = []
        for image in images:
            chosen = np.isin(image.labels, list(keep))
            segmentations = [s for s, c in zip(image.segmentations, chosen) if c] if image.segmentations is not None else None
            splits[split].append(dataclasses.replace(image, boxes=image.boxes[chosen], labels=image.labels[chosen],
                                                     segmentations=segmentations,
                                                     ignored=[obj for obj in image.ignored if obj.label in keep]))
    return dataclasses.replace(dataset, categories=[(c, n) for c, n in dataset.categories if c in keep], splits=splits)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def expand_media(sources: list[str | Path]) -> list[SourceFile]:
    """Image and video files, folders (recursive) and globs (is_video tells them apart)."""
    return expand_source_files(sources, lambda p: is_image_file(p) or is_video(p), "images or videos",
                               f"expected .jpg/.png/… images or {'/'.join(VIDEO_EXTENSIONS[:3])} videos")


def _save_image(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


# ==================================================================== evaluation
def evaluate_detector(det: Detector, images: list[DetectionImage], categories: list[tuple[int, str]], label_ids: list[int | None],
                      batch: int, workers: int, device: torch.device, conf: float = 0.001, iou: float = 0.5,
                      max_det: int = 100) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(COCO metrics, COCO results) of ``det`` on ``images``; model labels whose class the dataset
    lacks (label_ids None) are dropped."""
    model = det._require_model().to(device)
    set_postprocess(model, conf, iou, max_det)
    keep = {k + 1 for k, cid in enumerate(label_ids) if cid is not None}
    task = detect.DetectTask(images, categories, label_ids, max_det=max_det, keep=keep if len(keep) < len(label_ids) else None)
    dataset = detect.DetectionSet(images, None, dense_transforms(None, False, mean=None, std=None), det.intensity)
    loader = make_loader(dataset, batch, workers, False, 0, detect.collate_detection, device)
    _, outputs = evaluate(task, model, loader, device)
    results = task.coco_results(outputs) if outputs else []
    return coco_evaluate(images, categories, results), results


def score_split(owner: Any, images: list[DetectionImage], categories: list[tuple[int, str]], label_ids: list[int | None],
                batch: int, workers: int, device: torch.device, conf: float, iou: float, max_det: int, out_dir: Path,
                split: str, predictions: str, evaluate=evaluate_detector, draw=detect.draw) -> tuple[dict[str, Any], list[Path]]:
    """``evaluate`` (evaluate_detector; Mask R-CNN's evaluate_instances), its COCO results written
    (runner.write_predictions: ``predictions`` names the split) and drawn into OUT/plots by ``draw``:
    (metrics, plots), as `val` and a training run's finish both need them."""
    metrics, results = evaluate(owner, images, categories, label_ids, batch, workers, device, conf, iou, max_det)
    write_predictions(out_dir, results, predictions)
    return metrics, draw(images, categories, results, out_dir / "plots", prefix=split)


# ==================================================================== the training recipe
def _build_model(cfg: DetectConfig, dataset: DetectionData) -> Built:
    family, backbone = parse_model(cfg.model, cfg.backbone)
    anchors = None
    if family == "fasterrcnn" and cfg.anchors == "auto":
        train = dataset.splits["train"]
        sides, aspects = box_statistics([i.boxes for i in train], [(i.width, i.height) for i in train], cfg.imgsz)
        anchors = fit_anchors(sides, aspects, cfg.imgsz, *pyramid_levels(family, backbone))
    model = build_detector(family, len(dataset.categories), cfg.imgsz, backbone, anchors, cfg.pretrained,
                           cfg.conf, cfg.iou, cfg.max_det, yolo=yolo_options(cfg))
    params, gflops = model_cost(model, cfg.imgsz)
    if dist_utils.is_main():
        console.print(f"{cfg.model}{f' ({backbone})' if backbone else ''}: {params / 1e6:.2f} M parameters, "
                      f"{gflops:.2f} GFLOPs at {cfg.imgsz}x{cfg.imgsz}")
        if anchors is not None:
            console.print(f"anchors: sides {', '.join(f'{s:g}' for s in sorted({v for level in anchors.sizes for v in level}))} px, "
                          f"height/width {', '.join(f'{r:g}' for r in anchors.ratios)} (fitted to the training boxes at --imgsz {cfg.imgsz})")
    return Built(model, {"anchors": anchors.to_dict() if anchors is not None else None, "params": params, "gflops": gflops})


def yolo_options(cfg: DetectConfig) -> YoloOptions | None:
    return YoloOptions(cfg.dfl, cfg.box_loss, cfg.cls_loss) if cfg.model in YOLO_MODELS else None


def _metadata(cfg: DetectConfig, dataset: DetectionData, model: nn.Module) -> dict[str, Any]:
    _, backbone = parse_model(cfg.model, cfg.backbone)
    yolo = yolo_options(cfg)
    return {"class_names": [name for _, name in dataset.categories], "num_classes": len(dataset.categories),
            "category_ids": [int(cid) for cid, _ in dataset.categories], "backbone": backbone,
            "yolo": yolo.to_dict() if yolo is not None else None,
            # the detector normalises inside (torchvision's transform); its inputs are 0..1 RGB
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _make_sets(cfg: DetectConfig, dataset: DetectionData):
    label_of = {int(cid): k + 1 for k, (cid, _) in enumerate(dataset.categories)}
    train = detect.DetectionSet(dataset.splits["train"], label_of,
                                dense_transforms(cfg.imgsz, True, spec_from_config(cfg, TASK), mean=None, std=None,
                                                 keep_aspect=True), spec_of(cfg))
    mosaic = cfg.mosaic if cfg.mosaic is not None else (1.0 if cfg.model in YOLO_MODELS else 0.0)
    if mosaic > 0:
        train = detect.MosaicSet(train, cfg.imgsz, mosaic, cfg.epochs, round(cfg.close_mosaic * cfg.epochs))
    val = detect.DetectionSet(dataset.splits["val"], label_of, dense_transforms(None, False, mean=None, std=None), spec_of(cfg))
    return train, val


def _make_task(cfg: DetectConfig, dataset: DetectionData, model: nn.Module) -> detect.DetectTask:
    return detect.DetectTask(dataset.splits["val"], dataset.categories, [int(c) for c, _ in dataset.categories], max_det=cfg.max_det)


def finish_detect_run(cfg: DetectConfig, run_dir: Path, dataset: DetectionData, device: torch.device) -> dict[str, Any]:
    """Evaluate the best weights on val (and test): metrics.json, predictions.json, plots, report.html."""
    best = Detector.load(run_dir / "weights" / "best.safetensors")
    label_ids = [int(c) for c, _ in dataset.categories]
    return finish_best_run(cfg, run_dir, dataset.splits, lambda split, images: score_split(
        best, images, dataset.categories, label_ids, cfg.batch, cfg.workers, device, cfg.conf, cfg.iou, cfg.max_det, run_dir,
        split, predictions=split), f"cnnkit detect: {cfg.model} on {cfg.data}", lambda metrics: f"val {_headline(metrics)}",
        cost=best.cost)


def _headline(metrics: dict[str, Any]) -> str:
    return f"map {metrics['map']:.4f}  map50 {metrics['map50']:.4f}  map75 {metrics['map75']:.4f}"


DETECT = Recipe(
    task=TASK,
    build_model=_build_model,
    make_task=_make_task,
    metadata=_metadata,
    finish=finish_detect_run,
    load_data=load_training_data,
    make_sets=_make_sets,
    collate=detect.collate_detection,
    backbone_name=lambda cfg: None,  # a classifier's backbone goes into a detector: compared by tensor shapes
)
