"""TextRecognizer: train / val / predict / load for text-line recognition (a CRNN with CTC), and its recipe.

    rec = TextRecognizer("crnn")
    rec.train("data/lines", epochs=20)                   # ROOT/train/labels.tsv, ROOT/val/labels.tsv
    rec.val("data/lines")                                # {"cer", "wer", "line_accuracy", …} + report.html
    rec.predict(["line.png"])                            # [{"file", "text", "score"}]
    rec = TextRecognizer.load("runs/ocr/exp/weights/best.safetensors")

The weights record the charset (``class_names``: class k + 1 is its k-th character, 0 CTC's blank), the model
and the line height; ``val`` and ``predict`` need nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.data.textlines import fit_height, line_batch
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.trainer import make_loader
from cnnkit.errors import CnnkitError
from cnnkit.models.crnn import CRNN
from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, evaluate_run_splits, publish, publish_run,
                           read_in_batches, read_model_file, run_diagnosis, train_and_reload)
from cnnkit.tasks.ocr.data import LineData, LineSet, check_charset, collate_lines, load_line_data, read_labels, read_line
from cnnkit.tasks.ocr.task import OcrTask, decode_batch

OCR = "ocr"
HEADS = {"crnn": "lstm", "crnn_conv": "conv"}
WORST_LINES = 12


def build_crnn(model: str, classes: int) -> CRNN:
    if model not in HEADS:
        raise CnnkitError(f"unknown OCR model '{model}'", "valid: " + ", ".join(HEADS))
    return CRNN(classes, head=HEADS[model])


class TextRecognizer:
    """A text-line recogniser: CRNN (cnnkit.models.crnn) read out by CTC decoding."""

    def __init__(self, model: str = "crnn", imgsz: int = 32, device: str = "auto"):
        self.model_name, self.imgsz, self.device = model, imgsz, device
        self.model: torch.nn.Module | None = None
        self.class_names: list[str] | None = None  # the charset
        self.max_width = 800
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)

    @classmethod
    def load(cls, weights: str | Path) -> "TextRecognizer":
        """A recogniser from an `ocr train` weights file, or from its ONNX, TorchScript, torch.export or int8
        file (`cnnkit export`, `cnnkit quantize`)."""
        file = read_model_file(weights, OCR)
        meta = file.meta
        rec = cls(meta["model"], int(meta["imgsz"]))
        rec.class_names = list(meta["class_names"])
        rec.max_width = int(meta.get("max_width", 800))
        rec.mean, rec.std = tuple(meta["mean"]), tuple(meta["std"])
        if file.deployed is None:  # a deployed file (cnnkit export / quantize) brings its own runnable model
            rec.model = build_crnn(meta["model"], len(rec.class_names) + 1)
        adopt_model_file(rec, file)
        rec.model.eval()
        return rec

    def train(self, data: str, **options: Any) -> Run:
        """Train on ``data`` (ROOT/train/labels.tsv, ROOT/val/labels.tsv); options are OcrConfig fields."""
        from cnnkit.tasks.ocr.config import OcrConfig

        return train_and_reload(self, OcrConfig, OCR_RECIPE, data, {"model": self.model_name, "imgsz": self.imgsz}, options)

    def _require_model(self) -> torch.nn.Module:
        if self.model is None or self.class_names is None:
            raise CnnkitError("this TextRecognizer has no weights yet", "train it first or use TextRecognizer.load(FILE)")
        return self.model

    def read(self, images: list[np.ndarray], device: str | None = None, beam: int = 0) -> list[tuple[str, float]]:
        """(text, score) of each line image (RGB uint8, any size: scaled to the model's line height)."""
        model = self._require_model()
        dev = dist_utils.select_device(device or self.device)
        model.to(dev).eval()
        if not images:
            return []
        batch, widths = line_batch(images, self.imgsz, self.max_width, self.mean, self.std)
        with torch.no_grad():
            logits = model(batch.to(dev))
        return decode_batch(logits, widths, self.class_names, beam)

    def predict(self, sources: Iterable[str | Path] | str | Path, batch: int = 32, device: str = "auto",
                beam: int = 0) -> list[dict[str, Any]]:
        """[{"file", "text", "score"}] for line images, folders and globs (each image one line)."""
        from cnnkit.tasks.classify.api import expand_sources

        self._require_model()
        files = expand_sources([sources] if isinstance(sources, (str, Path)) else list(sources))
        results = []
        for chunk in read_in_batches(files, batch, lambda path: read_line(path, self.imgsz, self.max_width), "ocr"):
            if chunk:
                for (index, _), (text, score) in zip(chunk, self.read([im for _, im in chunk], device, beam)):
                    results.append({"file": str(files[index][0]), "text": text, "score": round(score, 5)})
        return results

    def predict_images(self, images: list[Any], names: list[str], device: str = "auto", beam: int = 0,
                       draw: bool = False) -> list[dict[str, Any]]:
        """The rows of predict for decoded line images (8-bit RGB, PIL or HxWx3 arrays) in one batch, ``names`` their
        "file"; with ``draw``, each row also holds "drawn", the line with its reading written over it."""
        from cnnkit.tasks.ocr.pages import draw_page

        pixels = [np.ascontiguousarray(np.asarray(image)) for image in images]
        for picture, name in zip(pixels, names):
            if min(picture.shape[:2]) < 2:
                raise CnnkitError(f"{name}: the image is {picture.shape[1]} x {picture.shape[0]} pixels", "a text line needs at least 2 x 2 pixels")
        readings = self.read([fit_height(p, self.imgsz, self.max_width) for p in pixels], device, beam)
        rows = []
        for name, picture, (text, score) in zip(names, pixels, readings):
            row: dict[str, Any] = {"file": name, "text": text, "score": round(score, 5)}
            if draw:
                h, w = picture.shape[:2]
                row["drawn"] = draw_page(picture, np.array([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], np.float32), [text])
            rows.append(row)
        return rows

    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 32, device: str = "auto",
            workers: int = 2, beam: int = 0) -> dict[str, Any]:
        """cer, wer and line_accuracy on ``data``'s ``split``/labels.tsv (metrics.json; report.html with the worst
        lines as image, truth and reading)."""
        self._require_model()
        labels = Path(data) / split / "labels.tsv"
        if not labels.is_file():
            found = sorted(p.parent.name for p in Path(data).glob("*/labels.tsv"))
            raise CnnkitError(f"{data}: no '{split}' split (no {labels})", f"available: {', '.join(found) or 'none'}")
        lines = read_labels(labels)
        check_charset(lines, self.class_names)
        out_dir = beside_run(out, self.weights_path, OCR)
        metrics, paths = self._evaluate(lines, out_dir, device, batch, workers, beam)
        publish(out_dir, f"cnnkit ocr val: {self.model_name} on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "beam": beam}, metrics, paths, _headline(metrics))
        return metrics

    def _evaluate(self, lines, out_dir: Path, device: str, batch: int, workers: int, beam: int = 0) -> tuple[dict, list[Path]]:
        from cnnkit.evaluate.plots import plot_image_grid
        from cnnkit.evaluate.text import line_errors, scores_from_errors

        model = self._require_model()
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        dataset = LineSet(lines, self.class_names, self.imgsz, self.max_width, self.mean, self.std)
        loader = make_loader(dataset, batch, workers, False, 0, collate_lines, dev)
        readings: list[str] = []
        with torch.no_grad():
            for images, widths, _, _ in loader:
                readings += [text for text, _ in decode_batch(model(images.to(dev)), widths, self.class_names, beam)]
        truths = [line.text for line in lines]
        errors = line_errors(readings, truths)
        scores = scores_from_errors(errors)
        metrics = {"cer": round(scores["cer"], 5), "wer": round(scores["wer"], 5), "line_accuracy": round(scores["line_accuracy"], 5),
                   "lines": scores["lines"], "beam": beam}
        rate = errors["char_errors"] / np.maximum(errors["chars"], 1)
        worst = [int(k) for k in np.argsort(-rate, kind="stable")[:WORST_LINES] if rate[k] > 0]
        metrics["worst_lines"] = [{"file": str(lines[k].path), "truth": truths[k], "reading": readings[k],
                                   "cer": round(float(rate[k]), 4)} for k in worst]
        images = [read_line(lines[k].path, self.imgsz, self.max_width) for k in worst]
        titles = [f"truth: {truths[k]}\nread:  {readings[k]}" for k in worst]
        paths = [plot_image_grid(images, titles, out_dir / "plots" / "worst_lines.png", wrong=[True] * len(worst), columns=1)]
        return metrics, paths


def _headline(metrics: dict[str, Any]) -> str:
    return (f"CER {metrics['cer']:.4f}  WER {metrics['wer']:.4f}  line accuracy {metrics['line_accuracy']:.4f} "
            f"({metrics['lines']} lines)")


# ------------------------------------------------------------------------------------------- the recipe

def _build(cfg, dataset: LineData) -> Built:
    net = build_crnn(cfg.model, len(dataset.classes) + 1)
    return Built(net, {"params": sum(p.numel() for p in net.parameters()), "max_width": cfg.max_width})


def _make_sets(cfg, dataset: LineData) -> tuple[LineSet, LineSet]:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    return (LineSet(dataset.splits["train"], dataset.classes, cfg.imgsz, cfg.max_width, mean, std, train=cfg.augment != "none",
                    seed=cfg.seed),
            LineSet(dataset.splits["val"], dataset.classes, cfg.imgsz, cfg.max_width, mean, std))


def finish_ocr_run(cfg, run_dir: Path, dataset: LineData, device: torch.device) -> dict[str, Any]:
    """The best weights read the val lines (with --beam): metrics.json, the worst lines and report.html."""
    best = TextRecognizer.load(run_dir / "weights" / "best.safetensors")

    def evaluate_split(split: str, lines) -> tuple[dict[str, Any], list[Path]]:
        return best._evaluate(lines, run_dir, str(device), cfg.batch, cfg.workers, cfg.beam)

    metrics, paths = evaluate_run_splits(run_dir, {"val": dataset.splits["val"]}, evaluate_split)
    warning = run_diagnosis(run_dir, metrics)
    if warning:
        metrics["warnings"] = [warning]
    publish_run(run_dir, f"cnnkit ocr: {cfg.model} on {cfg.data}", cfg, metrics, paths, "val " + _headline(metrics))
    return metrics


OCR_RECIPE = Recipe(
    task=OCR,
    build_model=_build,
    make_task=lambda cfg, dataset, model: OcrTask(list(dataset.classes)),
    metadata=lambda cfg, dataset, model: {"class_names": list(dataset.classes)},
    finish=finish_ocr_run,
    load_data=load_line_data,
    make_sets=_make_sets,
    collate=collate_lines,
    backbone_name=lambda cfg: None,
)
