"""Semantic segmentation in the API: the Segmenter verbs and the segmentation recipe of the one training run.

    from cnnkit import Segmenter
    seg = Segmenter("unet", encoder="resnet34")          # or Segmenter.load("runs/segment/exp/weights/best.safetensors")
    run = seg.train(data="shapes", epochs=20)             # images/ + masks/ + classes.txt; run.dir, run.metrics
    seg.val("shapes")                                     # miou, dice, pixel_accuracy, per class IoU/Dice/HD95
    seg.predict(["a.png", "scan.dcm"], out="runs/segment/predict")   # masks/a.png + overlays/a.png, masks/scan.png, …
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, finish_best_run, publish, read_model_file,
                           split_samples, train_and_reload)
from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, MASK_IGNORE, dense_transforms, spec_from_config
from cnnkit.config import INSTANCE_MODELS
from cnnkit.tasks.segment.config import SegmentConfig
from cnnkit.console import Skips, console, warn
from cnnkit.data.builtin import resolve_data
from cnnkit.data.segmentation import SegmentationData, SegmentSample, is_segmentation_input, load_segmentation
from cnnkit.data.sources import expand_source_files, output_names
from cnnkit.data.shards import read_shards_for
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.callbacks import progress_bar
from cnnkit.engine.rundir import atomic_path
from cnnkit.engine.trainer import evaluate, make_loader
from cnnkit.errors import CnnkitError
from cnnkit.models.segmenters import build_segmenter, parse_segmenter, segmenter_cost
from cnnkit.tasks.segment import task as segment

TASK = "segment"


class Segmenter:
    """A semantic segmenter: U-Net, FPN, PAN, DeepLabV3+ (segmentation_models_pytorch) or FCN
    (torchvision's head) on any timm encoder; a class for every pixel."""

    def __init__(self, model: str = "unet", class_names: list[str] | None = None, encoder: str | None = None, imgsz: int = 256,
                 pretrained: bool = False, intensity: segment.Intensity | None = None, tile: bool = False,
                 tile_overlap: float = 0.25, ignore_index: int = MASK_IGNORE):
        self.model_name, self.encoder = parse_segmenter(model, encoder)
        self.class_names = class_names
        self.imgsz = imgsz
        self.pretrained = pretrained
        self.intensity = intensity or segment.Intensity()
        self.tile, self.tile_overlap, self.ignore_index = tile, tile_overlap, ignore_index
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)
        if class_names:
            self.model = build_segmenter(self.model_name, self.encoder, len(class_names), pretrained)

    @classmethod
    def load(cls, weights: str | Path) -> "Segmenter":
        """Rebuild the segmenter from a cnnkit weights file alone (architecture, classes, size, intensity scaling)."""
        file = read_model_file(weights, TASK)
        meta = file.meta
        if meta.get("model") in INSTANCE_MODELS:
            raise CnnkitError(f"{weights}: Mask R-CNN (instance) weights", "load them with InstanceSegmenter.load, or "
                              "cnnkit.tasks.load for either kind")
        # a deployed file brings its own network: none is built to be replaced
        seg = cls(meta["model"], class_names=meta["class_names"] if file.state is not None else None, encoder=meta.get("encoder"),
                  imgsz=meta["imgsz"], intensity=segment.Intensity.from_dict(meta.get("intensity")), tile=meta.get("tile", False),
                  tile_overlap=meta.get("tile_overlap", 0.25), ignore_index=meta.get("ignore_index", MASK_IGNORE))
        seg.class_names = meta["class_names"]
        return adopt_model_file(seg, file)

    def inference(self, tile: bool | None = None, overlap: float | None = None) -> segment.Inference:
        return segment.Inference(self.imgsz, self.tile if tile is None else tile, self.tile_overlap if overlap is None else overlap)

    # ---------------------------------------------------------------- train
    def train(self, data: str = "shapes", **options: Any) -> Run:
        """Train on a masks dataset (or 'shapes', 'cells'); options are SegmentConfig fields."""
        defaults = {"model": self.model_name, "encoder": self.encoder, "pretrained": self.pretrained, "imgsz": self.imgsz,
                    "normalize": self.intensity.normalize, "tile": self.tile, "tile_overlap": self.tile_overlap,
                    "ignore_index": self.ignore_index,
                    "window": ",".join(f"{v:g}" for v in self.intensity.window) if self.intensity.window else None}
        if self.weights_path is not None:
            defaults["weights"] = str(self.weights_path)
        return train_and_reload(self, SegmentConfig, SEGMENT, data, defaults, options)

    # ---------------------------------------------------------------- val
    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 4, device: str = "auto",
            workers: int = 2, tile: bool | None = None, hd95: bool = True) -> dict[str, Any]:
        """miou, dice, pixel accuracy, per-class IoU/Dice/HD95 of the model on one split, measured on the
        masks at their own size; metrics.json, plots and report.html into ``out`` (default: val/ beside the run)."""
        dataset = read_shards_for(data, TASK) or load_segmentation(resolve_data(data, TASK), self.val_split, self.split_seed,
                                                                    ignore_index=self.ignore_index)
        samples = split_samples(data, dataset.splits, split)
        self._check_classes(dataset, data)
        out_dir = beside_run(out, self.weights_path, TASK)
        metrics, paths = evaluate_segmenter(self, samples, batch, workers, dist_utils.select_device(device),
                                            out_dir / "plots", split, self.inference(tile), hd95)
        metrics = {"split": split, **metrics}
        publish(out_dir, f"cnnkit segment val: {self.model_name} ({self.encoder}) on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "tile": self.inference(tile).tile},
                metrics, paths, f"{split}: {_headline(metrics)}")
        return metrics

    def _check_classes(self, dataset: SegmentationData, data: str) -> None:
        if dataset.classes != self.class_names:
            raise CnnkitError(f"{data}: classes {', '.join(dataset.classes[:8])} differ from the model's "
                              f"({', '.join(self.class_names[:8])})", "index masks must use the model's class indices (classes.txt)")

    # ---------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, sources: Iterable[str | Path] | str | Path, out: str | Path | None = None, tile: bool | None = None,
                overlap: float | None = None, device: str = "auto", overlays: bool = True) -> list[dict[str, Any]]:
        """Segment images (PNG/JPEG/TIFF, 16-bit too, DICOM, NIfTI slices), folders and globs:
        [{"file", "slice"?, "size", "classes": {name: share of the pixels}, "mask"?, "overlay"?}]. With ``out``,
        DIR/masks/REL.png (uint8 class index, the input's size) and DIR/overlays/REL.png, REL being the
        input's path below its folder or glob root (data.sources.output_names: no two inputs share an output);
        "mask" and "overlay" are those paths (DIR joined as given)."""
        model = self._require_model()
        files = expand_source_files([sources] if isinstance(sources, (str, Path)) else list(sources), is_segmentation_input,
                                    "images", "expected .png/.jpg/.tif images, .dcm or .nii.gz files")
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        how = self.inference(tile, overlap)
        colours = segment.palette(len(self.class_names))
        out_dir = Path(out) if out is not None else None
        samples, relatives = [], []
        skips = Skips()
        for path, named, relative in files:
            found = skips.read(path, named, lambda: input_samples(path))
            if found is None:
                continue
            samples += found
            relatives += [relative] * len(found)
        names = output_names(relatives, [("" if s.slice_index is None else f"_{s.slice_index:04d}") + ".png" for s in samples])
        named_files = {path for path, named, _ in files if named}
        results: list[dict[str, Any]] = []
        with progress_bar() as bar:
            task = bar.add_task("segment", total=len(samples), info="", rate="")
            for sample, output in zip(samples, names):
                pixels = skips.read(sample.image, sample.image in named_files,
                                    lambda: segment.load_pixels(sample.image, sample.slice_index, self.intensity))
                if pixels is None:
                    bar.update(task, advance=1)
                    continue
                image = _to_model_input(pixels).to(dev)
                predicted = segment.segment_probabilities(model, [image], how)[0].argmax(0).to(torch.uint8).cpu().numpy()
                shares = np.bincount(predicted.ravel(), minlength=len(self.class_names)) / predicted.size
                result = {"file": str(sample.image), "size": [int(predicted.shape[1]), int(predicted.shape[0])],
                          "classes": {name: round(float(s), 5) for name, s in zip(self.class_names, shares) if s > 0}}
                if sample.slice_index is not None:
                    result["slice"] = sample.slice_index
                if out_dir is not None:
                    result["mask"] = str(out_dir / "masks" / output)
                    _save_png(Path(result["mask"]), predicted)
                    if overlays:
                        result["overlay"] = str(out_dir / "overlays" / output)
                        _save_png(Path(result["overlay"]),
                                  segment.overlay(segment.display_pixels(pixels), predicted, colours, ignore_index=self.ignore_index))
                results.append(result)
                bar.update(task, advance=1)
        skips.report(len(files))
        return results

    @torch.no_grad()
    def predict_images(self, images: list[Any], names: list[str], tile: bool | None = None, overlap: float | None = None,
                       device: str = "auto", draw: bool = False) -> list[dict[str, Any]]:
        """Decoded pictures (8-bit RGB, PIL or HxWx3 arrays) in one batch, ``names`` their "file": predict's rows
        with each class's pixels as COCO compressed RLE at the picture's size ("masks": {name: rle}, the classes
        present); with ``draw``, each row also holds "drawn", the picture with its mask over it."""
        from cnnkit.evaluate.coco import encode_rle

        model = self._require_model()
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        pixels = [np.asarray(image) for image in images]
        inputs = [_to_model_input(p).to(dev) for p in pixels]
        same_size = len({tuple(t.shape) for t in inputs}) == 1
        probabilities = segment.segment_probabilities(model, torch.stack(inputs) if same_size else inputs, self.inference(tile, overlap))
        rows = []
        for name, picture, probs in zip(names, pixels, probabilities):
            predicted = probs.argmax(0).to(torch.uint8).cpu().numpy()
            shares = np.bincount(predicted.ravel(), minlength=len(self.class_names)) / predicted.size
            row: dict[str, Any] = {"file": name, "size": [int(predicted.shape[1]), int(predicted.shape[0])],
                                   "classes": {c: round(float(v), 5) for c, v in zip(self.class_names, shares) if v > 0},
                                   "masks": {c: encode_rle(predicted == k) for k, c in enumerate(self.class_names) if shares[k] > 0}}
            if draw:
                row["drawn"] = segment.overlay(segment.display_pixels(picture), predicted, segment.palette(len(self.class_names)),
                                               ignore_index=self.ignore_index)
            rows.append(row)
        return rows

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this Segmenter has no weights yet", "train it first or use Segmenter.load(FILE)")
        return self.model


def input_samples(path: Path) -> list[SegmentSample]:
    """One sample per 2-D image: a NIfTI volume or multi-frame DICOM gives one per slice."""
    from cnnkit.data.medical import count_slices
    from cnnkit.data.segmentation import suffix_of

    suffix = suffix_of(path)
    if suffix in (".nii", ".nii.gz", ".dcm"):
        slices = count_slices(path)
        if suffix != ".dcm" or slices > 1:
            return [SegmentSample(path, None, k) for k in range(slices)]
    return [SegmentSample(path, None)]


def _to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 or float [0, 1] -> float [3, H, W] normalised as in training."""
    tensor = torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).float()
    if pixels.dtype == np.uint8:
        tensor = tensor / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


# ==================================================================== evaluation
def evaluate_segmenter(seg: Segmenter, samples: list[SegmentSample], batch: int, workers: int, device: torch.device,
                       plot_dir: Path, prefix: str, how: segment.Inference, hd95: bool = True) -> tuple[dict[str, Any], list[Path]]:
    """(metrics, plots) of ``seg`` on ``samples``: confusion matrix, per-class scores, HD95, sample overlays."""
    model = seg._require_model().to(device)
    task = segment.SegmentTask(seg.class_names, loss=None, inference=how, ignore_index=seg.ignore_index, with_hd95=hd95)
    dataset = segment.SegmentSet(samples, _val_transform(), seg.intensity, ignore_index=seg.ignore_index)
    loader = make_loader(dataset, batch, workers, False, 0, segment.collate_segmentation, device)
    metrics, _ = evaluate(task, model, loader, device)
    predictions = []
    model.eval()
    with torch.no_grad():
        for sample in samples[:8]:
            pixels = segment.load_pixels(sample.image, sample.slice_index, seg.intensity)
            probs = segment.segment_probabilities(model, [_to_model_input(pixels).to(device)], how)[0]
            predictions.append(probs.argmax(0).cpu().numpy())
    paths = segment.draw(samples[:8], predictions, seg.class_names, np.asarray(metrics["confusion_matrix"]), plot_dir,
                         seg.intensity, prefix, seg.ignore_index)
    return metrics, paths


def _val_transform():
    return dense_transforms(None, False, mean=IMAGENET_MEAN, std=IMAGENET_STD, mask_fill=MASK_IGNORE)


# ==================================================================== the training recipe
def _intensity(cfg: SegmentConfig) -> segment.Intensity:
    from cnnkit.config import parse_window

    window = parse_window(cfg.window) if cfg.window else None
    return segment.Intensity("window" if window else cfg.normalize, window)


def _load_data(cfg: SegmentConfig, root: Path) -> SegmentationData:
    dataset = load_segmentation(root, cfg.val_split, cfg.seed, ignore_index=cfg.ignore_index)
    if dist_utils.is_main() and dataset.pixel_counts.get("train") is not None:
        counts = dataset.pixel_counts["train"]
        share = counts / max(counts.sum(), 1)
        console.print("train pixels: " + ", ".join(f"{name} {100 * s:.1f}%" for name, s in zip(dataset.classes[:12], share))
                      + (" …" if len(dataset.classes) > 12 else ""))
        absent = [name for name, c in zip(dataset.classes, counts) if c == 0]
        if absent:
            warn(f"{root}: no training pixel of class {', '.join(absent[:5])}")
    return dataset


def _build_model(cfg: SegmentConfig, dataset: SegmentationData) -> Built:
    model = build_segmenter(cfg.model, cfg.encoder, len(dataset.classes), cfg.pretrained)
    params, gflops = segmenter_cost(model, cfg.imgsz)
    if dist_utils.is_main():
        _, encoder = parse_segmenter(cfg.model, cfg.encoder)
        console.print(f"{cfg.model} ({encoder}): {params / 1e6:.2f} M parameters, {gflops:.2f} GFLOPs at {cfg.imgsz}x{cfg.imgsz}")
    return Built(model, {"params": params, "gflops": gflops})


def _metadata(cfg: SegmentConfig, dataset: SegmentationData, model: nn.Module) -> dict[str, Any]:
    _, encoder = parse_segmenter(cfg.model, cfg.encoder)
    return {"class_names": dataset.classes, "num_classes": len(dataset.classes), "encoder": encoder,
            "ignore_index": cfg.ignore_index, "intensity": _intensity(cfg).to_dict(), "tile": cfg.tile,
            "tile_overlap": cfg.tile_overlap, "loss": cfg.loss}


def _make_sets(cfg: SegmentConfig, dataset: SegmentationData):
    intensity = _intensity(cfg)
    spec = spec_from_config(cfg, TASK)
    train_transform = dense_transforms(None if cfg.tile else cfg.imgsz, True, spec, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                       mask_fill=cfg.ignore_index)
    train = segment.SegmentSet(dataset.splits["train"], train_transform, intensity, cfg.imgsz if cfg.tile else None, cfg.ignore_index)
    val = segment.SegmentSet(dataset.splits["val"], _val_transform(), intensity, ignore_index=cfg.ignore_index)
    return train, val


def _make_task(cfg: SegmentConfig, dataset: SegmentationData, model: nn.Module) -> segment.SegmentTask:
    loss = segment.segmentation_loss(cfg.loss, len(dataset.classes), cfg.ignore_index, cfg.focal_gamma)
    background = 0 if dataset.classes and dataset.classes[0].lower() in ("background", "bg", "_background_", "void") else None
    return segment.SegmentTask(dataset.classes, loss, segment.Inference(cfg.imgsz, cfg.tile, cfg.tile_overlap), cfg.ignore_index,
                               with_hd95=cfg.hd95, background=background)


def finish_segment_run(cfg: SegmentConfig, run_dir: Path, dataset: SegmentationData, device: torch.device) -> dict[str, Any]:
    """Evaluate the best weights on val (and test): metrics.json, plots, report.html."""
    best = Segmenter.load(run_dir / "weights" / "best.safetensors")
    return finish_best_run(cfg, run_dir, dataset.splits, lambda split, samples: evaluate_segmenter(
        best, samples, cfg.batch, cfg.workers, device, run_dir / "plots", split, best.inference(), cfg.hd95),
        f"cnnkit segment: {cfg.model} ({best.encoder}) on {cfg.data}", lambda metrics: f"val {_headline(metrics)}",
        cost=best.cost)


def _headline(metrics: dict[str, Any]) -> str:
    parts = [f"{name} {metrics[name]:.4f}" for name in ("miou", "dice", "dice_fg", "pixel_accuracy") if metrics.get(name) is not None]
    if metrics.get("hd95") is not None:
        parts.append(f"hd95 {metrics['hd95']:.2f} px")
    return "  ".join(parts)


SEGMENT = Recipe(
    task=TASK,
    build_model=_build_model,
    make_task=_make_task,
    metadata=_metadata,
    finish=finish_segment_run,
    load_data=_load_data,
    make_sets=_make_sets,
    collate=segment.collate_segmentation,
    backbone_name=lambda cfg: None,  # a classifier's backbone goes into the encoder: compared by tensor shapes
)
