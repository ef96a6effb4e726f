"""Instance segmentation in the API: the InstanceSegmenter verbs and the instance recipe of the one training run.

    from cnnkit import InstanceSegmenter
    seg = InstanceSegmenter()                            # Mask R-CNN, mobilenet_v3_large FPN; or InstanceSegmenter.load(FILE)
    run = seg.train(data="shapes", epochs=12)             # COCO instances: polygons or RLE; run.dir, run.metrics
    seg.val("shapes")                                     # mask_map, mask_map50, box_map, … + predictions.json
    seg.predict(["a.jpg"], out="runs/segment/predict")    # masks/a.png, overlays/a.png, instances.json

`cnnkit segment train --model maskrcnn` runs the INSTANCE recipe; `segment val` and `segment predict`
pick this class or the semantic Segmenter by the weights' metadata (``cnnkit.tasks.load``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, finish_best_run, publish, read_in_batches,
                           read_model_file, split_samples, train_and_reload)
from cnnkit.augment.presets import dense_transforms, spec_from_config
from cnnkit.tasks.segment.config import SegmentConfig
from cnnkit.console import console
from cnnkit.data.builtin import resolve_data
from cnnkit.data.detection import DetectionData, DetectionImage, detect_layout, match_categories
from cnnkit.data.images import is_image_file, load_image
from cnnkit.data.sources import expand_source_files, output_names
from cnnkit.tasks.detect.api import deployed_detector, load_split_data, score_split
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.rundir import atomic_path, write_json, write_text
from cnnkit.engine.trainer import evaluate, make_loader
from cnnkit.errors import CnnkitError
from cnnkit.models.detectors import (Anchors, box_statistics, build_maskrcnn, default_mask_layers, fit_anchors, model_cost,
                                     pyramid_levels, set_postprocess)
from cnnkit.models.segmenters import INSTANCE_MODELS, parse_segmenter
from cnnkit.tasks.instance import task as instance
from cnnkit.tasks.detect.task import collate_detection

TASK = "segment"
MODEL = "maskrcnn"
PREDICT_CONF = 0.25
EXPECTED_LAYOUT = ("COCO instances: annotations/train.json (val.json optional) whose annotations carry 'segmentation' "
                   "polygons [[x1, y1, x2, y2, ...]] or RLE {size, counts}, images under images/ (`cnnkit data synth shapes "
                   "--task detect` writes one); or a YOLO segmentation data.yaml (rows 'class x1 y1 x2 y2 ...')")
# the training options detection found it needs from scratch (docs/architecture.md, PreciseBN) where the
# semantic segmenters' defaults differ; options the user sets win
INSTANCE_DEFAULTS = {"precise_bn": 16, "clip_grad": 10.0}


class InstanceSegmenter:
    """Instance segmentation with torchvision's Mask R-CNN: a box, a class and a mask for every object."""

    def __init__(self, model: str = MODEL, class_names: list[str] | None = None, imgsz: int = 256, backbone: str | None = None,
                 pretrained: bool = False, anchors: Anchors | None = None, category_ids: list[int] | None = None,
                 mask_layers: list[int] | None = None):
        self.model_name, self.backbone = parse_segmenter(model, backbone)
        if self.model_name not in INSTANCE_MODELS:
            raise CnnkitError(f"{model} is a semantic segmenter", "use Segmenter for unet, fpn, pan, deeplabv3plus, fcn")
        self.class_names = class_names
        self.category_ids = category_ids or (list(range(1, len(class_names) + 1)) if class_names else None)
        self.imgsz, self.pretrained, self.anchors = imgsz, pretrained, anchors
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)
        if class_names:
            self.model = build_maskrcnn(len(class_names), imgsz, self.backbone, anchors, pretrained, mask_layers=mask_layers)

    @classmethod
    def load(cls, weights: str | Path) -> "InstanceSegmenter":
        """Rebuild the model from a cnnkit weights file alone (backbone, anchors, mask head, classes, size), or
        load a file of `cnnkit export` / `cnnkit quantize --backend onnx` (.onnx, .ts) to run as it is."""
        file = read_model_file(weights, TASK)
        meta = file.meta
        if meta.get("model") not in INSTANCE_MODELS:
            raise CnnkitError(f"{weights}: weights of a semantic segmenter ({meta.get('model')})", "load them with Segmenter")
        anchors = Anchors.from_dict(meta["anchors"]) if meta.get("anchors") else None
        # a deployed file brings its own network: none is built to be replaced
        seg = cls(meta["model"], class_names=meta["class_names"] if file.state is not None else None, imgsz=meta["imgsz"],
                  backbone=meta.get("backbone"), anchors=anchors, category_ids=meta.get("category_ids"),
                  mask_layers=meta.get("mask_layers"))
        seg.class_names = meta["class_names"]
        seg.category_ids = meta.get("category_ids") or list(range(1, len(seg.class_names) + 1))
        return adopt_model_file(seg, file, lambda graph: deployed_detector(graph, meta))

    # ---------------------------------------------------------------- train
    def train(self, data: str = "shapes", **options: Any) -> Run:
        """Train on a COCO instances dataset (or 'shapes'); options are SegmentConfig fields."""
        defaults = {"model": self.model_name, "encoder": self.backbone, "pretrained": self.pretrained, "imgsz": self.imgsz,
                    **INSTANCE_DEFAULTS}
        if self.weights_path is not None:
            defaults["weights"] = str(self.weights_path)
        return train_and_reload(self, SegmentConfig, INSTANCE, data, defaults, options)

    # ---------------------------------------------------------------- val
    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 4, device: str = "auto",
            workers: int = 2, conf: float = 0.001, iou: float = 0.5, max_det: int = 100) -> dict[str, Any]:
        """COCO mask and box metrics of the model on one split, written with predictions.json (COCO
        results with RLE masks, the dataset's own ids), plots and report.html into ``out`` (default:
        val/ beside the run)."""
        dataset = load_instance_data(data, self.val_split, self.split_seed)
        images = split_samples(data, dataset.splits, split)
        categories, label_ids = match_categories(dataset, self.class_names, "segments")
        out_dir = beside_run(out, self.weights_path, TASK)
        metrics, paths = score_split(self, images, categories, label_ids, batch, workers, dist_utils.select_device(device),
                                     conf, iou, max_det, out_dir, split, "val", evaluate_instances, instance.draw)
        metrics = {"split": split, **metrics}
        publish(out_dir, f"cnnkit segment val: {self.model_name} ({self.backbone}) on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "conf": conf, "iou": iou,
                 "max_det": max_det}, metrics, paths, f"{split}: {_headline(metrics)}")
        return metrics

    # ---------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, sources: Iterable[str | Path] | str | Path, out: str | Path | None = None, conf: float = PREDICT_CONF,
                iou: float = 0.5, max_det: int = 100, batch: int = 4, device: str = "auto",
                overlays: bool = True) -> list[dict[str, Any]]:
        """Instances in images, folders and globs: [{"file", "size": [w, h], "instances": [{"id" (1.. by score),
        "label", "category_id", "score", "box" (xyxy pixels), "rle" (COCO compressed RLE at the image's size)}]}].
        With ``out``: DIR/masks/REL.png (uint8 class index, 0 = background, class k of classes.txt = k; where
        instances overlap the higher score wins), DIR/overlays/REL.png (every instance in its own colour with
        box and caption "class id score"), DIR/instances.json (the list returned, each row with its "mask" and
        "overlay" paths) and DIR/classes.txt. REL is the input's path below its folder or glob root
        (data.sources.output_names: no two inputs share an output)."""
        model = self._require_model()
        files = expand_source_files([sources] if isinstance(sources, (str, Path)) else list(sources), is_image_file)
        names = output_names([f.relative for f in files], ".png")
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        set_postprocess(model, conf, iou, max_det)
        out_dir = Path(out) if out is not None else None
        results: list[dict[str, Any]] = []
        for chunk in read_in_batches(files, batch, load_image, "segment"):
            if chunk:
                frames = [np.asarray(image) for _, image in chunk]
                for (index, _), pixels, found in zip(chunk, frames, self._detect(model, frames, dev)):
                    results.append(self._instances(files[index].path, pixels, found, out_dir, overlays, names[index]))
        if out_dir is not None:
            write_json(out_dir / "instances.json", results)
            write_text(out_dir / "classes.txt", "".join(f"{name}\n" for name in ["background", *self.class_names]))
        return results

    @torch.no_grad()
    def predict_images(self, images: list[Any], names: list[str], conf: float = PREDICT_CONF, iou: float = 0.5,
                       max_det: int = 100, device: str = "auto", draw: bool = False) -> list[dict[str, Any]]:
        """The rows of predict for decoded pictures (8-bit RGB, PIL or HxWx3 arrays) in one batch, ``names`` their
        "file"; with ``draw``, each row also holds "drawn", the picture with every instance, box and caption."""
        model = self._require_model()
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        set_postprocess(model, conf, iou, max_det)
        frames = [np.asarray(image) for image in images]
        rows = []
        for name, pixels, found in zip(names, frames, self._detect(model, frames, dev)):
            row = self._instances(Path(name), pixels, found, None, False, "")
            row["file"] = name
            if draw:
                row["drawn"] = self._draw(pixels, row)
            rows.append(row)
        return rows

    @staticmethod
    def _detect(model: nn.Module, frames: list[np.ndarray], device: torch.device) -> list[dict[str, torch.Tensor]]:
        # a copy torch may own: a decoded image's buffer is read-only
        tensors = [torch.from_numpy(np.array(p, order="C")).permute(2, 0, 1).to(device).float().div_(255) for p in frames]
        return instance.detect_unpasted(model, tensors)

    @staticmethod
    def _draw(pixels: np.ndarray, row: dict[str, Any]) -> np.ndarray:
        entries = row["instances"]
        masks = np.stack([instance.decode(e["rle"]) for e in entries]) if entries else np.zeros((0, *pixels.shape[:2]), np.uint8)
        boxes = np.asarray([e["box"] for e in entries], dtype=np.float32).reshape(-1, 4)
        return instance.draw_instances(pixels, masks, boxes, [f"{e['label']} {e['id']} {e['score']:.2f}" for e in entries])

    def _instances(self, path: Path, pixels: np.ndarray, found: dict[str, torch.Tensor], out_dir: Path | None,
                   overlays: bool, name: str) -> dict[str, Any]:
        """One image's detections (masks as the mask head gives them) -> its result; its PNGs into ``out_dir`` as ``name``."""
        height, width = pixels.shape[:2]
        order = torch.argsort(found["scores"], descending=True, stable=True)
        boxes, scores, labels = found["boxes"][order].cpu(), found["scores"][order].cpu(), found["labels"][order].cpu()
        masks = instance.paste(found["masks"][order][:, 0].cpu(), boxes, height, width).numpy()
        entries = [{"id": k + 1, "label": self.class_names[int(label) - 1], "category_id": int(self.category_ids[int(label) - 1]),
                    "score": round(float(score), 5), "box": [round(v, 2) for v in box.tolist()], "rle": instance.encode(mask)}
                   for k, (box, score, label, mask) in enumerate(zip(boxes, scores, labels, masks))]
        result: dict[str, Any] = {"file": str(path), "size": [width, height], "instances": entries}
        if out_dir is not None:
            semantic = instance.semantic_mask(masks, labels.tolist(), scores.tolist(), height, width)
            result["mask"] = str(out_dir / "masks" / name)
            _save_png(Path(result["mask"]), semantic)
            if overlays:
                captions = [f"{e['label']} {e['id']} {e['score']:.2f}" for e in entries]
                drawn = instance.draw_instances(pixels, masks, boxes.numpy(), captions)
                result["overlay"] = str(out_dir / "overlays" / name)
                _save_png(Path(result["overlay"]), drawn)
        return result

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this InstanceSegmenter has no weights yet", "train it first or use InstanceSegmenter.load(FILE)")
        return self.model


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


# ==================================================================== data
def load_instance_data(data: str, val_split: float, seed: int) -> DetectionData:
    """A COCO instances dataset with a val split (its own, else ``val_split`` of train cut off with
    ``seed``) whose every object has a segmentation; anything else is refused in one line."""
    root = resolve_data(data)
    layout = detect_layout(root)
    if layout not in ("coco", "yolo"):  # YOLO: Ultralytics' segmentation rows (polygons) read as COCO polygons
        found = f"a {layout} detection layout (boxes only)" if layout else "no annotations/SPLIT.json"
        raise CnnkitError(f"{root}: {found}; {MODEL} trains on COCO instances", EXPECTED_LAYOUT)
    dataset = load_split_data(str(root), False, val_split, seed)
    check_segmentations(dataset)
    return dataset


def check_segmentations(dataset: DetectionData) -> None:
    """Every kept object has a segmentation COCO tools can read: polygons (lists of at least three x, y
    pairs) or RLE whose size is the image's [height, width]."""
    objects = sum(len(image.boxes) for images in dataset.splits.values() for image in images)
    if all(image.segmentations is None for images in dataset.splits.values() for image in images):
        what = "YOLO labels have no polygon rows" if dataset.layout == "yolo" else "COCO annotations have no 'segmentation'"
        raise CnnkitError(f"{dataset.root}: the {what} ({objects} objects, boxes only)", EXPECTED_LAYOUT)
    for split, images in dataset.splits.items():
        missing = [image for image in images if len(image.boxes) and
                   (image.segmentations is None or any(s is None for s in image.segmentations))]
        if missing:
            count = sum(len(image.boxes) if image.segmentations is None else sum(s is None for s in image.segmentations)
                        for image in missing)
            raise CnnkitError(f"{dataset.sources.get(split, dataset.root)}: {count} object(s) without 'segmentation' "
                              f"(first in image id {missing[0].image_id})", "every object needs polygons or RLE; crowd regions "
                              "(iscrowd 1) are left out anyway")
        for image in images:
            for k, segmentation in enumerate(image.segmentations or []):
                problem = _segmentation_problem(segmentation, image)
                if problem:
                    raise CnnkitError(f"{dataset.sources.get(split, dataset.root)}: image id {image.image_id}, object "
                                      f"{k + 1}: {problem}", "polygons [[x1, y1, x2, y2, x3, y3, ...]] or RLE {size: [height, "
                                      "width], counts}")


def _segmentation_problem(segmentation: Any, image: DetectionImage) -> str | None:
    if isinstance(segmentation, list):
        for ring in segmentation:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2 or \
                    not all(isinstance(v, (int, float)) and np.isfinite(v) for v in ring):
                return f"polygon {str(ring)[:40]} is not a list of at least three x, y pairs"
        return None if segmentation else "empty polygon list"
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        if not isinstance(size, list) or [int(v) for v in size] != [image.height, image.width]:
            return f"RLE size {size} is not the image's [height, width] [{image.height}, {image.width}]"
        if not isinstance(segmentation.get("counts"), (str, list)):
            return "RLE without 'counts'"
        return None
    return f"segmentation is a {type(segmentation).__name__}"


def _load_data(cfg: SegmentConfig, root: Path) -> DetectionData:
    """The training dataset: COCO instances with a val split; ``shapes`` is the COCO build of the built-in
    (the run resolved the name for the semantic layout, masks without instances)."""
    if cfg.data == "shapes" and not Path(cfg.data).exists() and detect_layout(root) != "coco":
        if dist_utils.is_main():  # rank 0 writes the built-in dataset; the others wait and read it
            resolve_data("shapes")
        dist_utils.barrier()
        root = resolve_data("shapes")
    dataset = load_instance_data(str(root), cfg.val_split, cfg.seed)
    if not dataset.splits.get("train"):
        raise CnnkitError(f"{root}: no training images", "expected annotations/train.json")
    if not any(len(image.boxes) for image in dataset.splits["train"]):
        raise CnnkitError(f"{root}: the training split has no objects at all ({len(dataset.splits['train'])} images)",
                          "check the annotation files (`cnnkit data check`)")
    return dataset


# ==================================================================== evaluation
def evaluate_instances(seg: InstanceSegmenter, images: list[DetectionImage], categories: list[tuple[int, str]],
                       label_ids: list[int | None], batch: int, workers: int, device: torch.device, conf: float = 0.001,
                       iou: float = 0.5, max_det: int = 100) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(COCO mask and box metrics, COCO results with RLE masks) of ``seg`` on ``images``; model labels whose
    class the dataset lacks (label_ids None) are dropped."""
    model = seg._require_model().to(device)
    set_postprocess(model, conf, iou, max_det)
    keep = {k + 1 for k, cid in enumerate(label_ids) if cid is not None}
    task = instance.InstanceTask(images, categories, label_ids, max_det=max_det,
                                 keep=keep if len(keep) < len(label_ids) else None)
    dataset = instance.InstanceSet(images, None, dense_transforms(None, False, mean=None, std=None))
    loader = make_loader(dataset, batch, workers, False, 0, collate_detection, device)
    _, outputs = evaluate(task, model, loader, device)
    results = task.coco_results(outputs) if outputs else []
    return instance.instance_metrics(images, categories, results), results


# ==================================================================== the training recipe
def instance_config(cfg: SegmentConfig, explicit: set[str]) -> SegmentConfig:
    """``segment train --model maskrcnn``: INSTANCE_DEFAULTS where the user set nothing."""
    return dataclasses.replace(cfg, **{k: v for k, v in INSTANCE_DEFAULTS.items() if k not in explicit})


def _build_model(cfg: SegmentConfig, dataset: DetectionData) -> Built:
    _, backbone = parse_segmenter(cfg.model, cfg.encoder)
    anchors = None
    if cfg.anchors == "auto":
        train = dataset.splits["train"]
        sides, aspects = box_statistics([i.boxes for i in train], [(i.width, i.height) for i in train], cfg.imgsz)
        anchors = fit_anchors(sides, aspects, cfg.imgsz, *pyramid_levels(MODEL, backbone))
    mask_layers = list(default_mask_layers(backbone))
    model = build_maskrcnn(len(dataset.categories), cfg.imgsz, backbone, anchors, cfg.pretrained, cfg.conf, cfg.iou, cfg.max_det,
                           mask_layers)
    params, gflops = model_cost(model, cfg.imgsz)
    if dist_utils.is_main():
        console.print(f"{MODEL} ({backbone}, mask head {'x'.join(map(str, mask_layers))}): {params / 1e6:.2f} M "
                      f"parameters, {gflops:.2f} GFLOPs at {cfg.imgsz}x{cfg.imgsz} (blank image)")
        if anchors is not None:
            sides = sorted({v for level in anchors.sizes for v in level})
            console.print(f"anchors: sides {', '.join(f'{s:g}' for s in sides)} px, height/width "
                          f"{', '.join(f'{r:g}' for r in anchors.ratios)} (fitted to the training boxes at --imgsz {cfg.imgsz})")
    return Built(model, {"anchors": anchors.to_dict() if anchors is not None else None, "params": params, "gflops": gflops,
                         "mask_layers": mask_layers})


def _metadata(cfg: SegmentConfig, dataset: DetectionData, model: nn.Module) -> dict[str, Any]:
    _, backbone = parse_segmenter(cfg.model, cfg.encoder)
    return {"class_names": [name for _, name in dataset.categories], "num_classes": len(dataset.categories),
            "category_ids": [int(cid) for cid, _ in dataset.categories], "backbone": backbone,
            # Mask R-CNN normalises inside (torchvision's transform); its inputs are 0..1 RGB
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _make_sets(cfg: SegmentConfig, dataset: DetectionData):
    label_of = {int(cid): k + 1 for k, (cid, _) in enumerate(dataset.categories)}
    train = instance.InstanceSet(dataset.splits["train"], label_of,
                                 dense_transforms(cfg.imgsz, True, spec_from_config(cfg, TASK), mean=None, std=None, mask_fill=0,
                                                  keep_aspect=True))
    # validation scores the model's outputs against the dataset's records: no targets to rasterise
    val = instance.InstanceSet(dataset.splits["val"], None, dense_transforms(None, False, mean=None, std=None))
    return train, val


def _make_task(cfg: SegmentConfig, dataset: DetectionData, model: nn.Module) -> instance.InstanceTask:
    return instance.InstanceTask(dataset.splits["val"], dataset.categories, [int(c) for c, _ in dataset.categories],
                                 max_det=cfg.max_det)


def finish_instance_run(cfg: SegmentConfig, run_dir: Path, dataset: DetectionData, device: torch.device) -> dict[str, Any]:
    """Evaluate the best weights on val (and test): metrics.json, predictions.json, plots, report.html."""
    best = InstanceSegmenter.load(run_dir / "weights" / "best.safetensors")
    label_ids = [int(c) for c, _ in dataset.categories]
    return finish_best_run(cfg, run_dir, dataset.splits, lambda split, images: score_split(
        best, images, dataset.categories, label_ids, cfg.batch, cfg.workers, device, cfg.conf, cfg.iou, cfg.max_det, run_dir,
        split, split, evaluate_instances, instance.draw), f"cnnkit segment: {MODEL} ({best.backbone}) on {cfg.data}",
        lambda metrics: f"val {_headline(metrics)}", cost=best.cost)


def _headline(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{name} {metrics[name]:.4f}" for name in ("mask_map", "mask_map50", "box_map", "box_map50"))


INSTANCE = Recipe(
    task=TASK,
    build_model=_build_model,
    make_task=_make_task,
    metadata=_metadata,
    finish=finish_instance_run,
    load_data=_load_data,
    make_sets=_make_sets,
    collate=collate_detection,
    backbone_name=lambda cfg: None,  # a classifier's backbone goes into the FPN backbone: compared by tensor shapes
)
