"""TextDetector: train / val / predict / load for text detection on pages (DBNet), and its recipe.

    det = TextDetector("dbnet")
    det.train("data/pages", epochs=30)                  # ROOT/train/det_labels.tsv (PaddleOCR's layout)
    det.val("data/pages", rec=TextRecognizer.load(…))   # precision, recall, hmean at IoU 0.5; end-to-end CER with rec
    det.detect(page)                                    # (quads [N, 4, 2] in page pixels, scores [N])
    det = TextDetector.load("runs/ocr/exp/weights/best.safetensors")

Its weights are task ``ocr_det``: `cnnkit ocr …` takes them as --det, and a recogniser's place refuses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError
from cnnkit.models.dbnet import DBNet
from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, publish, publish_run, read_model_file, train_and_reload)
from cnnkit.tasks.ocr.data import to_tensor
from cnnkit.tasks.ocr.detect_data import (DET_LABELS, DONT_CARE, PageData, PageSet, collate_pages, load_page_data, page_input,
                                          read_det_labels, read_page)
from cnnkit.tasks.ocr.detect_post import boxes_from_prob, detection_scores
from cnnkit.tasks.ocr.detect_task import PostOptions, TextDetectionTask, score_page

OCR_DET = "ocr_det"
DET_MODELS = ("dbnet",)


def build_dbnet(model: str, backbone: str | None = None, pretrained: bool = False) -> DBNet:
    if model not in DET_MODELS:
        raise CnnkitError(f"unknown text detector '{model}'", "valid: " + ", ".join(DET_MODELS))
    return DBNet(backbone, pretrained)


class TextDetector:
    """A text detector: DBNet (cnnkit.models.dbnet); quadrilaterals by cnnkit.tasks.ocr.detect_post."""

    def __init__(self, model: str = "dbnet", imgsz: int = 640, device: str = "auto", backbone: str | None = None):
        self.model_name, self.imgsz, self.device, self.backbone = model, imgsz, device, backbone
        self.model: torch.nn.Module | None = None
        self.class_names: list[str] | None = ["text"]
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.post = PostOptions()
        self.deployed = False  # an exported file: a fixed square input of imgsz
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)

    @classmethod
    def load(cls, weights: str | Path) -> TextDetector:
        file = read_model_file(weights, OCR_DET)
        meta = file.meta
        det = cls(meta["model"], int(meta["imgsz"]), backbone=meta.get("backbone"))
        det.mean, det.std = tuple(meta["mean"]), tuple(meta["std"])
        det.deployed = file.deployed is not None
        if not det.deployed:  # a deployed file (cnnkit export / quantize) brings its own runnable model
            det.model = build_dbnet(meta["model"], meta.get("backbone"))
        adopt_model_file(det, file)
        det.model.eval()
        return det

    def train(self, data: str, **options: Any) -> Run:
        from cnnkit.tasks.ocr.config import OcrConfig

        return train_and_reload(self, OcrConfig, DET_RECIPE, data, {"model": self.model_name, "imgsz": self.imgsz,
                                                                    "backbone": self.backbone}, options)

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise CnnkitError("this TextDetector has no weights yet", "train it first or use TextDetector.load(FILE)")
        return self.model

    def detect(self, image: np.ndarray, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(quadrilaterals [N, 4, 2] in the page's pixels, clockwise from the top-left; scores [N]) of an RGB page."""
        model = self._require_model()
        dev = dist_utils.select_device(device or self.device)
        model.to(dev).eval()
        # an exported file takes the square input it was exported with; the network any multiple of 32
        canvas, scale = page_input(image, self.imgsz, square=self.deployed)
        with torch.no_grad():
            prob = model(to_tensor(canvas, self.mean, self.std)[None].to(dev))[0, 0].float().cpu().numpy()
        quads, scores = boxes_from_prob(prob, self.post.bin_thresh, self.post.box_thresh, self.post.unclip_ratio, self.post.join_gap)
        quads = quads / scale
        quads[..., 0] = np.clip(quads[..., 0], 0, image.shape[1] - 1)
        quads[..., 1] = np.clip(quads[..., 1], 0, image.shape[0] - 1)
        return quads, scores

    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 1, device: str = "auto",
            workers: int = 2, rec: Any = None) -> dict[str, Any]:
        """precision, recall and hmean at IoU 0.5 on ``data``'s ``split``/det_labels.tsv, and with a recogniser
        (``rec``) the end-to-end CER: each matched line read from its rectified crop, a missed line counting all
        its characters as errors and a false detection all it reads (metrics.json, report.html)."""
        from cnnkit.console import progress_bar
        from cnnkit.tasks.ocr.pages import draw_page, read_lines

        self._require_model()
        labels = Path(data) / split / DET_LABELS
        if not labels.is_file():
            found = sorted(p.parent.name for p in Path(data).glob(f"*/{DET_LABELS}"))
            raise CnnkitError(f"{data}: no '{split}' split (no {labels})", f"available: {', '.join(found) or 'none'}")
        pages = read_det_labels(labels)
        out_dir = beside_run(out, self.weights_path, "ocr")
        tp = predicted = truths = 0
        char_errors = chars = 0
        shown = []
        with progress_bar() as bar:
            task = bar.add_task("ocr val", total=len(pages), info="", rate="")
            for page in pages:
                image = read_page(page.path)
                quads, _ = self.detect(image, device)
                readings = [text for text, _ in read_lines(rec, image, quads, device)] if rec is not None else None
                counts = score_page(quads, page.polygons, [t == DONT_CARE for t in page.texts], readings, page.texts)
                tp, predicted, truths = tp + counts["tp"], predicted + counts["predicted"], truths + counts["truths"]
                char_errors, chars = char_errors + counts["char_errors"], chars + counts["chars"]
                if len(shown) < 4:
                    shown.append(draw_page(image, quads, readings))
                bar.update(task, advance=1)
        metrics: dict[str, Any] = {k: round(v, 5) for k, v in detection_scores(tp, predicted, truths).items()}
        metrics |= {"pages": len(pages), "lines": truths, "detections": predicted}
        if rec is not None:
            metrics["end_to_end_cer"] = round(char_errors / max(chars, 1), 5)
        paths = _save_pages(shown, out_dir / "plots")
        headline = (f"hmean {metrics['hmean']:.4f}  precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}"
                    + (f"  end-to-end CER {metrics['end_to_end_cer']:.4f}" if rec is not None else "") + f" ({len(pages)} pages)")
        publish(out_dir, f"cnnkit ocr val: {self.model_name} on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split,
                 "rec": str(getattr(rec, "weights_path", None)) if rec is not None else None}, metrics, paths, headline)
        return metrics

    def predict(self, sources, device: str = "auto", rec: Any = None, out: str | Path | None = None, beam: int = 0) -> list[dict[str, Any]]:
        """Pages: [{"file", "lines": [{"points", "text", "score"}]}] in reading order (text only with ``rec``)."""
        from cnnkit.tasks.ocr.pages import read_pages

        return read_pages(self, rec, sources, device=device, out=out, beam=beam)

    def predict_images(self, images: list[Any], names: list[str], device: str = "auto", rec: Any = None, beam: int = 0,
                       draw: bool = False) -> list[dict[str, Any]]:
        """The rows of predict for decoded pages (8-bit RGB, PIL or HxWx3 arrays), ``names`` their "file"; with
        ``draw``, each row also holds "drawn", the page with its lines and their text."""
        from cnnkit.tasks.ocr.pages import read_page_image

        return [read_page_image(self, rec, np.ascontiguousarray(np.asarray(image)), name, device, beam, draw)
                for image, name in zip(images, names)]


def _save_pages(images: list[np.ndarray], folder: Path) -> list[Path]:
    from cnnkit.tasks.ocr.pages import write_png

    return [write_png(folder / f"page_{k + 1}.png", im) for k, im in enumerate(images)]


# ------------------------------------------------------------------------------------------- the recipe

def _build(cfg, dataset: PageData) -> Built:
    net = build_dbnet(cfg.model, cfg.backbone, cfg.pretrained)
    return Built(net, {"params": sum(p.numel() for p in net.parameters()), "backbone": cfg.backbone})


def _make_sets(cfg, dataset: PageData) -> tuple[PageSet, PageSet]:
    return (PageSet(dataset.splits["train"], cfg.imgsz, IMAGENET_MEAN, IMAGENET_STD, train=True, seed=cfg.seed),
            PageSet(dataset.splits["val"], cfg.imgsz, IMAGENET_MEAN, IMAGENET_STD))


def finish_det_run(cfg, run_dir: Path, dataset: PageData, device: torch.device) -> dict[str, Any]:
    best = TextDetector.load(run_dir / "weights" / "best.safetensors")
    metrics = best.val(str(dataset.root), "val", out=run_dir, device=str(device))
    publish_run(run_dir, f"cnnkit ocr: {cfg.model} on {cfg.data}", cfg, metrics, sorted((run_dir / "plots").glob("page_*.png")),
                f"val hmean {metrics['hmean']:.4f}")
    return metrics


DET_RECIPE = Recipe(
    task=OCR_DET,
    build_model=_build,
    make_task=lambda cfg, dataset, model: TextDetectionTask(),
    metadata=lambda cfg, dataset, model: {"class_names": ["text"]},
    finish=finish_det_run,
    load_data=load_page_data,
    make_sets=_make_sets,
    collate=collate_pages,
    backbone_name=lambda cfg: None,
    runs_under="ocr",
)
