"""`cnnkit segment train|distill|val|predict` (semantic and Mask R-CNN)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnkit.cli.options import (Batch, Device, Split, ValOut, Workers, _check_postprocess, _file_table, _shown, config_command,
                                pixel_limited, takes_sources, weights_option)
from cnnkit.config import INSTANCE_MODELS
from cnnkit.tasks.distill.config import SegmentDistillConfig
from cnnkit.tasks.segment.config import SegmentConfig
from cnnkit.errors import CnnkitError

app = typer.Typer(help="Segmentation, semantic (U-Net, FPN, PAN, DeepLabV3+, FCN) and medical (16-bit, DICOM, NIfTI, "
                  "tiled): train, val, predict.", no_args_is_help=True)


# ==================================================================== segment
@config_command(app, "train", SegmentConfig,
                "Train a segmenter on images/ + masks/ + classes.txt (or --data shapes / cells); --model maskrcnn: "
                "instance segmentation on COCO instances (polygons or RLE).")
def segment_train(cfg: SegmentConfig, explicit: set[str]) -> None:
    from cnnkit.runner import train

    if cfg.model in INSTANCE_MODELS:
        from cnnkit.tasks.instance.api import INSTANCE, instance_config

        train(instance_config(cfg, explicit), explicit, recipe=INSTANCE)
        return
    from cnnkit.tasks.segment.api import SEGMENT

    train(cfg, explicit, recipe=SEGMENT)


@config_command(app, "distill", SegmentDistillConfig,
                "Knowledge distillation for semantic segmentation: train a --student segmenter from a frozen --teacher "
                "segmenter's per-pixel soft targets (KL at --temperature over the classes at every pixel, the teacher's "
                "class map resized to the student's; --ignore-index pixels left out; weighted --alpha, plus the student's "
                "--loss on the masks) and optionally one teacher layer's features. Every segment train option applies; "
                "the result is an ordinary segmenter's weights under runs/distill/.")
def segment_distill(cfg, explicit: set[str]) -> None:
    from cnnkit.tasks.distill.api import run_segment_distillation

    run_segment_distillation(cfg, explicit)


Weights = weights_option("segment")
Tile = Annotated[Optional[bool], typer.Option("--tile/--no-tile", show_default=False,
                                              help="sliding-window inference at the images' own resolution (default: as the "
                                              "model was trained)")]


@app.command("val")
@pixel_limited
def segment_val(
    weights: Weights = ...,
    data: str = typer.Option("shapes", "--data", help="dataset root (images/ + masks/ + classes.txt) or built-in name"),
    split: Split = "val",
    out: ValOut = None,
    batch: Batch = 4,
    device: Device = "auto",
    workers: Workers = 2,
    tile: Tile = None,
    hd95: bool = typer.Option(True, "--hd95/--no-hd95", help="measure the 95th-percentile Hausdorff distance per class"),
    conf: float = typer.Option(0.001, "--conf", help="maskrcnn: keep instances scoring at least this (low, so that mAP sees "
                               "the whole precision-recall curve)"),
    max_det: int = typer.Option(100, "--max-det", help="maskrcnn: at most this many instances per image"),
) -> None:
    """miou, dice, pixel accuracy and per-class IoU / Dice / HD95 of weights on a split (on the masks at
    their own size): metrics.json, confusion matrix, overlays and report.html. maskrcnn weights: COCO
    mask and box mAP (pycocotools), predictions.json, PR curves, samples and report.html."""
    from cnnkit import tasks
    from cnnkit.tasks.instance.api import InstanceSegmenter

    seg = tasks.load(weights, "segment")
    if isinstance(seg, InstanceSegmenter):
        if tile is not None:
            raise CnnkitError("--tile applies to semantic models, not to maskrcnn weights")
        _check_postprocess(conf, 0.5, max_det)
        seg.val(data, split=split, out=out, batch=batch, device=device, workers=workers, conf=conf, max_det=max_det)
        return
    if (conf, max_det) != (0.001, 100):
        raise CnnkitError("--conf and --max-det apply to maskrcnn weights, not to a semantic segmenter")
    seg.val(data, split=split, out=out, batch=batch, device=device, workers=workers, tile=tile, hd95=hd95)


@app.command("predict")
@pixel_limited
@takes_sources()
def segment_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images (PNG, JPEG, 16-bit TIFF, DICOM .dcm, "
                                                  "NIfTI .nii.gz), folders or glob patterns (quote globs)"),
    weights: Weights = ...,
    out: Optional[Path] = typer.Option(None, "--out", help="folder for masks/REL.png and overlays/REL.png, REL being each "
                                       "input's path below the folder or glob it came from "
                                       "(default: runs/segment/predict, predict2, …)"),
    tile: Tile = None,
    overlap: Optional[float] = typer.Option(None, "--overlap", help="tile overlap, fraction of the side (default: the run's)"),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="also write colour overlays"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file", "size", "classes", "mask", "overlay"}] '
                                             'to this file'),
    conf: float = typer.Option(0.25, "--conf", help="maskrcnn: keep instances scoring at least this"),
    device: Device = "auto",
) -> None:
    """Segment images: one index PNG per image (uint8 class index, the input's size) and a colour overlay;
    maskrcnn weights add instances.json (every instance's class, score, box and RLE mask)."""
    from rich.console import Console

    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit import tasks
    from cnnkit.tasks.instance.api import InstanceSegmenter

    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise CnnkitError(f"--overlap must be at least 0 and below 1, got {overlap}")
    seg = tasks.load(weights, "segment")
    if isinstance(seg, InstanceSegmenter):
        if tile is not None or overlap is not None:
            raise CnnkitError("--tile and --overlap apply to semantic models, not to maskrcnn weights")
        if not 0.0 <= conf <= 1.0:
            raise CnnkitError(f"--conf must be between 0 and 1, got {conf}")
        out_dir = out or next_run_dir("segment", None, prefix="predict")
        results = seg.predict(sources, out=out_dir, conf=conf, device=device, overlays=overlays)
        table = _file_table("instances", "classes", "file")
        for r in results[:200]:
            counts: dict[str, int] = {}
            for found in r["instances"]:
                counts[found["label"]] = counts.get(found["label"], 0) + 1
            table.add_row(str(len(r["instances"])), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), _shown(r["file"]))
        Console().print(table)
        if len(results) > 200:
            console.print(f"… {len(results) - 200} more images")
        console.print(f"{len(results)} images: masks/, overlays/ and instances.json written to {out_dir}", soft_wrap=True,
                      markup=False)
        if save_json:
            write_json(save_json, results)
        return
    out_dir = out or next_run_dir("segment", None, prefix="predict")
    results = seg.predict(sources, out=out_dir, tile=tile, overlap=overlap, device=device, overlays=overlays)
    table = _file_table("size", "classes (share of pixels)", "file")
    for r in results[:200]:
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in sorted(r["classes"].items(), key=lambda kv: -kv[1])[:4])
        name = _shown(r["file"]) + (f" [slice {r['slice']}]" if "slice" in r else "")
        table.add_row(f"{r['size'][0]}x{r['size'][1]}", shares, name)
    Console().print(table)
    if len(results) > 200:
        console.print(f"… {len(results) - 200} more images")
    console.print(f"{len(results)} masks written to {out_dir / 'masks'}", soft_wrap=True, markup=False)
    if save_json:
        write_json(save_json, results)
        console.print(f"{len(results)} predictions written to {save_json}", soft_wrap=True, markup=False)
