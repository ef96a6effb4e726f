"""`cnnkit detect train|val|predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnkit.cli.options import (Batch, Device, Split, ValOut, Workers, _check_postprocess, _file_table, _shown, config_command,
                                pixel_limited, takes_sources, weights_option)
from cnnkit.tasks.detect.config import DetectConfig

DETECTORS = "cnnkit's YOLO-style yolo_n/yolo_s/yolo_m, Faster R-CNN, SSD, SSDlite"
# short_help: click cuts a group's help to ~45 characters in `cnnkit --help`, which dropped the detectors after the first
app = typer.Typer(help=f"Object detection ({DETECTORS}): train, val, predict on images and videos.",
                  short_help=f"Object detection: train, val, predict ({DETECTORS}).", no_args_is_help=True)


# ==================================================================== detect
@config_command(app, "train", DetectConfig,
                "Train a detector on a COCO, YOLO or Pascal VOC dataset (auto-detected), or --data shapes.")
def detect_train(cfg: DetectConfig, explicit: set[str]) -> None:
    from cnnkit.runner import train
    from cnnkit.tasks.detect.api import DETECT

    train(cfg, explicit, recipe=DETECT)


CONF_HELP = "keep detections scoring at least this"
Weights = weights_option("detect")
Iou = Annotated[float, typer.Option("--iou", help="IoU threshold of the non-maximum suppression")]
MaxDet = Annotated[int, typer.Option("--max-det", help="at most this many detections per image")]
Classes = Annotated[Optional[str], typer.Option("--classes", help="only these classes: comma-separated names or dataset ids")]


@app.command("val")
@pixel_limited
def detect_val(
    weights: Weights = ...,
    data: str = typer.Option("shapes", "--data", help="dataset root (COCO, YOLO or VOC layout) or built-in name"),
    split: Split = "val",
    out: ValOut = None,
    batch: Batch = 8,
    device: Device = "auto",
    workers: Workers = 2,
    conf: float = typer.Option(0.001, "--conf", help=CONF_HELP + " (low, so that mAP sees the whole precision-recall curve)"),
    iou: Iou = 0.5,
    max_det: MaxDet = 100,
    classes: Classes = None,
    strict: bool = typer.Option(False, "--strict", help="refuse boxes outside the image instead of clipping them"),
) -> None:
    """COCO mAP (pycocotools) of weights on a split: metrics.json, predictions.json (COCO results, the
    dataset's own ids), PR curves, confusion matrix, samples and report.html."""
    from cnnkit.tasks.detect.api import Detector

    _check_postprocess(conf, iou, max_det)
    Detector.load(weights).val(data, split=split, out=out, batch=batch, device=device, workers=workers, conf=conf,
                               iou=iou, max_det=max_det, classes=classes, strict=strict)


@app.command("predict")
@pixel_limited
@takes_sources(what="an image, video, folder or quoted glob pattern")
def detect_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images, videos (mp4, avi, …), folders or glob "
                                                  "patterns (quote globs)"),
    weights: Weights = ...,
    conf: float = typer.Option(0.25, "--conf", help=CONF_HELP),
    iou: Iou = 0.5,
    max_det: MaxDet = 100,
    classes: Classes = None,
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the annotated images and videos, each at its input's "
                                       "path below the folder or glob it came from (default: runs/detect/predict, predict2, …)"),
    save: bool = typer.Option(True, "--save/--no-save", help="write annotated images and videos"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file","boxes","labels","scores","overlay"}] '
                                             '(video frames add "frame") to this file'),
    batch: int = typer.Option(4, "--batch", help="images or frames per forward pass"),
    device: Device = "auto",
) -> None:
    """Detect objects in images and videos; draw boxes with class and score (videos keep their frame rate)."""
    from rich.console import Console

    from cnnkit.console import console
    from cnnkit.tasks.detect.api import Detector
    from cnnkit.engine.rundir import next_run_dir, write_json

    _check_postprocess(conf, iou, max_det)
    out_dir = (out or next_run_dir("detect", None, prefix="predict")) if save else None
    results = Detector.load(weights).predict(sources, conf=conf, iou=iou, max_det=max_det, classes=classes, out=out_dir,
                                             batch=batch, device=device)
    table = _file_table("objects", "classes", "file")
    images = [r for r in results if "frame" not in r]
    for r in images[:200]:
        counts: dict[str, int] = {}
        for label in r["labels"]:
            counts[label] = counts.get(label, 0) + 1
        table.add_row(str(len(r["labels"])), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), _shown(r["file"]))
    if images:
        Console().print(table)
    if len(images) > 200:
        console.print(f"… {len(images) - 200} more images")
    if out_dir is not None:
        console.print(f"annotated output in {out_dir}")
    if save_json:
        write_json(save_json, results)
        console.print(f"{len(results)} predictions written to {save_json}")
