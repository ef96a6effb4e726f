"""`cnnkit data check|synth|convert|shard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cnnkit.cli.options import augment_app, config_command, data_app, pixel_limited
from cnnkit.tasks.classify.config import PreviewConfig
from cnnkit.errors import CnnkitError


@data_app.command("check")
@pixel_limited
def data_check(
    root: str = typer.Argument(..., help="dataset root (ImageFolder, a COCO / YOLO / VOC detection layout, or a segmentation "
                               "masks layout: images/ + masks/ + classes.txt) or built-in name"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout instead of tables"),
) -> None:
    """Check a dataset: counts per split and class, imbalance, sizes and modes, unreadable files,
    duplicates across splits; for detection layouts boxes per class, box sizes, objects per image,
    empty, tiny and duplicate boxes; for segmentation masks pairing, sizes, values against classes.txt,
    colour masks, empty masks and pixel share per class. Exits 2 when it finds errors."""
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.check import check_imagefolder, print_report
    from cnnkit.data.check_detection import check_detection
    from cnnkit.data.check_segmentation import check_segmentation, print_segmentation_report
    from cnnkit.data.detection import detect_layout
    from cnnkit.data.segmentation import is_segmentation_layout

    resolved = resolve_data(root)
    if is_segmentation_layout(resolved):  # before COCO: a masks dataset may carry COCO instances too (synth cells)
        report = check_segmentation(resolved, progress=not as_json)
        show = print_segmentation_report
    else:
        layout = detect_layout(resolved)
        report = check_detection(resolved, layout) if layout else check_imagefolder(resolved, progress=not as_json)
        show = print_report
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        show(report)
    if report.has_errors():
        raise typer.Exit(2)


@data_app.command("synth")
def data_synth(
    kind: str = typer.Argument(..., help="what to generate: shapes or cells (detect/segment); objects, textures or "
                               "cells (--task classify); mot (multi-object tracking sequences, MOTChallenge layout); sot (single-object "
                               "sequences: one target among look-alike distractors); text (--task rec: text-line images for OCR; --task det: "
                               "pages with text-line quadrilaterals)"),
    task: Optional[str] = typer.Option(None, "--task", help="shapes: detect (COCO + YOLO layouts, the default) or segment "
                                       "(masks + classes.txt); cells: segment (the default) or classify (five phenotypes); "
                                       "objects and textures: classify (ImageFolder train/val/test); text: rec (lines, the default) or det (pages)"),
    n: Optional[int] = typer.Option(None, "--n", help="number of images (train + val), default 500; classify: training "
                                    "images of the largest class, default 300; mot, sot: sequences (train + test), default 8; text: lines, default 5000 (pages with --task det, default 600)"),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="square image side in pixels: 32 to 4096, default 320; "
                                        "classify: 16 to 1024, default 64; mot: frame width (height 9/16 of it), default 640; sot: default 480; "
                                        "text: line height, default 32"),
    frames: int = typer.Option(150, "--frames", help="mot, sot: frames in each sequence (30 fps)"),
    out: Path = typer.Option(..., "--out", help="folder to create; must be new or empty unless --force"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes byte-identical files"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="share of the images in the val split (detect/segment)"),
    imbalance: float = typer.Option(1.0, "--imbalance", help="classify: the largest class over the smallest in train "
                                    "(a geometric long tail; 1 = balanced)"),
    eval_n: int = typer.Option(50, "--eval-n", help="classify: val and test images of every class"),
    classes: Optional[str] = typer.Option(None, "--classes", help="classify: the classes to draw, comma-separated; objects "
                                          "(shapes) has six more than its default six: pentagon, hexagon, arrow, crescent, "
                                          "ellipse, semicircle (a supervised source for transfer)"),
    unlabelled: int = typer.Option(0, "--unlabelled", help="classify: also write this many images of random classes, with "
                                   "no labels, into OUT/unlabelled/ (for `cnnkit ssl train`)"),
    fonts: Optional[str] = typer.Option(None, "--fonts", help="text: font families to render with, comma-separated "
                                        "shell patterns, !PATTERN excludes (e.g. '!Liberation*,!Nimbus*'); default: every "
                                        "installed family that covers the character set"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out folder"),
) -> None:
    """Generate a synthetic dataset: shapes (circle, square, triangle, star, cross) on real photos, with occlusion,
    uneven illumination and noise; cells, 16-bit fluorescence-microscopy-like images with semantic and instance labels;
    or, with --task classify, objects on photos among clutter, materials from photos (textures), or cell phenotypes;
    or mot, tracking sequences (train/ and test/ halves, MOTChallenge layout with gt/gt.txt and noisy public detections
    in det/det.txt) of shapes moving over a panning photo, crossing and passing behind occluders."""
    from cnnkit.console import console

    if (classes is not None or unlabelled) and task != "classify" and kind not in ("objects", "textures"):
        raise CnnkitError("--classes and --unlabelled are for classification datasets", "add --task classify")

    if kind == "mot":
        from cnnkit.data.synth_mot import synth_mot

        if task is not None:
            raise CnnkitError(f"--task {task}: mot writes tracking sequences", "leave --task out")
        width = 640 if imgsz is None else imgsz
        summary = synth_mot(out, n_sequences=8 if n is None else n, frames=frames, width=width,
                            height=max(2, round(width * 9 / 32) * 2), seed=seed, force=force)
        seqs = summary["sequences"]
        console.print(f"{seqs['train']} train + {seqs['test']} test sequences of {frames} frames "
                      f"({summary['width']}x{summary['height']}), {summary['ids']} ids, {summary['boxes']} boxes "
                      f"(mean visibility {summary['mean_visibility']:.2f}), detections: recall "
                      f"{summary['detection_recall']:.2f}, {summary['false_positives_per_frame']:.1f} false positives "
                      f"a frame (MOTChallenge layout) written to {out}", soft_wrap=True, markup=False)
        return

    if kind == "text" and task == "det":
        from cnnkit.data.synth_text_pages import synth_text_pages

        if imgsz is not None:
            raise CnnkitError(f"--imgsz {imgsz}: pages come in sizes of 480-800 x 360-640", "leave --imgsz out for --task det")
        summary = synth_text_pages(out, n=600 if n is None else n, fonts=fonts, val_fraction=val_fraction, seed=seed, force=force)
        pages = summary["pages"]
        console.print(f"{pages['train']} train + {pages['val']} val pages with {summary['lines']} text lines ({summary['faces']} "
                      f"faces of {len(summary['families'])} families; det_labels.tsv) written to {out}", soft_wrap=True, markup=False)
        return

    if kind == "text":
        from cnnkit.data.synth_text import synth_text_lines

        if task not in (None, "rec"):
            raise CnnkitError(f"--task {task}: text writes recognition lines (rec) or pages for detection (det)", "use --task rec or det")
        summary = synth_text_lines(out, n=5000 if n is None else n, fonts=fonts, height=32 if imgsz is None else imgsz,
                                   val_fraction=val_fraction, seed=seed, force=force)
        lines = summary["lines"]
        console.print(f"{lines['train']} train + {lines['val']} val text lines ({summary['characters']} characters on "
                      f"average, {summary['faces']} faces of {len(summary['families'])} families: "
                      f"{', '.join(summary['families'])}) written to {out}", soft_wrap=True, markup=False)
        return

    if fonts is not None:
        raise CnnkitError("--fonts is for text", f"{kind} draws no text")

    if kind == "sot":
        from cnnkit.data.synth_sot import synth_sot

        if task is not None:
            raise CnnkitError(f"--task {task}: sot writes tracking sequences", "leave --task out")
        width = 480 if imgsz is None else imgsz
        summary = synth_sot(out, n_sequences=8 if n is None else n, frames=frames, width=width,
                            height=max(2, round(width * 9 / 32) * 2), seed=seed, force=force)
        seqs = summary["sequences"]
        console.print(f"{seqs['train']} train + {seqs['test']} test single-object sequences of {frames} frames "
                      f"({summary['width']}x{summary['height']}, mean visibility {summary['mean_visibility']:.2f}) "
                      f"written to {out}", soft_wrap=True, markup=False)
        return

    if task == "classify" or kind in ("objects", "textures"):
        from cnnkit.data.synth_classify import synth_classification

        if task not in (None, "classify"):
            raise CnnkitError(f"--task {task}: {kind} is a classification dataset", "use --task classify")
        summary = synth_classification(kind, out, n=300 if n is None else n, imgsz=64 if imgsz is None else imgsz, seed=seed,
                                       imbalance=imbalance, eval_n=eval_n, force=force, unlabelled=unlabelled,
                                       classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)
        counts = summary["per_class"]["train"]
        console.print(f"{summary['images']['train']} train ({max(counts)} to {min(counts)} per class) + {summary['images']['val']} "
                      f"val + {summary['images']['test']} test images of {len(summary['classes'])} classes "
                      f"(ImageFolder)" + (f" and {unlabelled} unlabelled images" if unlabelled else "") + f" written to {out}",
                      soft_wrap=True, markup=False)
        return
    from cnnkit.data.synth import synth_dataset

    summary = synth_dataset(kind, out, task=task, n=500 if n is None else n, imgsz=320 if imgsz is None else imgsz, seed=seed,
                            val_fraction=val_fraction, force=force)
    if kind == "cells":
        layouts = "16-bit images/, masks/, instances/, COCO annotations/ and classes.txt"
    else:
        layouts = "COCO annotations/ and YOLO data.yaml" if summary["task"] == "detect" else "masks/ and classes.txt"
    images = summary["images"]
    console.print(f"{images['train']} train + {images['val']} val images, {summary['objects']} objects of "
                  f"{len(summary['classes'])} classes ({layouts}) written to {out}", soft_wrap=True, markup=False)


@data_app.command("convert")
def data_convert(
    source: str = typer.Argument(..., help="dataset root: COCO, YOLO (or its data.yaml) or Pascal VOC detection; for --to masks "
                                 "COCO instances or a masks layout with colour masks; for --to coco or identities also "
                                 "MOTChallenge sequences with gt/gt.txt (one, a folder of them, or a root with train/ and "
                                 "test/)"),
    to: str = typer.Option(..., "--to", help="target layout: coco, yolo or voc (detection), masks (segmentation: "
                           "images/SPLIT, masks/SPLIT index PNGs, classes.txt), or identities (MOT sources: crops per "
                           "track id, train/SEQ_ID and val/SEQ_ID, for embed train)"),
    out: Path = typer.Option(..., "--out", help="new folder to write (must not exist or be empty)"),
    copy: bool = typer.Option(False, "--copy", help="copy images instead of hard-linking them"),
    strict: bool = typer.Option(False, "--strict", help="boxes outside the image are errors instead of being clipped"),
    palette: Optional[str] = typer.Option(None, "--palette", metavar="voc|FILE", help="--to masks from colour masks: map each "
                                          "colour to its class index by Pascal VOC's colours (voc; its boundary colour -> 255) "
                                          "or a file: lines `NAME R G B` in class-index order, or JSON "
                                          "{\"name\": [r, g, b], ...}"),
    unknown: str = typer.Option("error", "--unknown", metavar="error|ignore", help="--to masks --palette: a colour not in the "
                                "palette is an error (error), or set to 255 = ignore with a warning (ignore)"),
    every: Optional[int] = typer.Option(None, "--every", metavar="N", help="MOT sources only, --to coco: keep every Nth "
                                        "frame of each sequence (neighbouring frames are near duplicates); default 1"),
    min_visibility: Optional[float] = typer.Option(None, "--min-visibility", metavar="V", help="MOT sources only: leave out "
                                                   "boxes less visible than V (gt's visibility, 0-1); default 0 for --to coco, "
                                                   "0.5 for --to identities"),
) -> None:
    """Convert a detection dataset between COCO, YOLO and Pascal VOC (boxes, category names and,
    where the target can hold them, the dataset's own ids); or make segmentation index masks
    (--to masks) from COCO instance polygons / RLE or from colour masks (--palette); or turn
    MOTChallenge sequences with ground truth into training data for a tracker's models: --to coco
    (detection; train/ sequences -> train, test/ -> val, else the last 20% of the sequences -> val)
    for detect train, --to identities (crops per track id, each split in time between train/ and
    val/) for embed train."""
    target = to.lower()
    if target not in ("coco", "yolo", "voc", "masks", "identities"):
        raise CnnkitError(f"--to {to}: unknown target layout",
                          "choose one of coco, yolo, voc (detection), masks (segmentation) or identities (MOT sources)")
    if target == "identities" or _is_mot(source):
        _convert_mot(source, target, out, copy, strict, palette, unknown, every, min_visibility)
        return
    if every is not None or min_visibility is not None:
        raise CnnkitError(f"--every and --min-visibility apply to MOTChallenge sources; {source} is not one",
                          "a MOT source has sequences with seqinfo.ini, img1/ or gt/gt.txt")
    if target == "masks":
        from cnnkit.data.convert_masks import convert_to_masks

        result = convert_to_masks(source, out, palette=palette, unknown=unknown.lower(), copy=copy)
        images = sum(result.images.values())
        per_split = ", ".join(f"{n} {split}" for split, n in result.images.items())
        done = (f"{result.objects} objects, {result.crowd} crowd regions" if result.source_layout in ("coco", "yolo")
                else f"{result.recoloured} masks mapped by palette {palette}" if palette else "index masks copied")
        classes = f"{len(result.classes)} classes (background first)" if result.classes else "no classes.txt"
        typer.echo(f"{result.source_layout} -> masks: {images} images ({per_split}), {done}, {classes} written to {out}",
                   err=True)
        return
    if palette is not None or unknown != "error":
        raise CnnkitError("--palette and --unknown apply to --to masks only", f"drop them for --to {target}")
    from cnnkit.data.detection import convert

    data = convert(source, target, out, copy=copy, strict=strict)
    images = sum(len(images) for images in data.splits.values())
    typer.echo(f"{data.layout} -> {target}: {images} images, {data.num_boxes()} boxes, "
               f"{len(data.categories)} categories written to {out}", err=True)


@data_app.command("shard")
@pixel_limited
def data_shard(
    source: str = typer.Argument(..., help="dataset root in any layout cnnkit trains from: ImageFolder (classify), COCO / YOLO / "
                                 "VOC (detect), images/ + masks/ + classes.txt (segment), or a built-in name"),
    out: Path = typer.Option(..., "--out", help="folder for the shards ({split}-000000.tar …), {split}.json and index.json"),
    shard_size: str = typer.Option("1GB", "--shard-size", help="largest shard, e.g. 1GB, 500MB (a shard closes once it "
                                   "reaches it; object stores and tar tools like shards of 100 MB to a few GB)"),
    task: Optional[str] = typer.Option(None, "--task", help="classify, detect or segment; default: from the layout "
                                       "(built-in shapes: detect)"),
    val_split: float = typer.Option(0.2, "--val-split", help="fraction of train held out as val when the source has no val "
                                    "split (then fixed in the shards)"),
    seed: int = typer.Option(0, "--seed", help="seed of the val cut"),
    force: bool = typer.Option(False, "--force", help="replace shards already in --out"),
) -> None:
    """Write a dataset as WebDataset tar shards for streaming: `--data OUT` (or a pattern of train shards such as
    OUT/train-{000000..000099}.tar, local or any URL webdataset opens) then trains from them without unpacking,
    split between ranks and loader workers, through a shuffle buffer (docs/distributed.md)."""
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.detection import detect_layout
    from cnnkit.data.segmentation import is_segmentation_layout, load_segmentation
    from cnnkit.data.shards import is_shard_source, parse_size, write_shards

    size = parse_size(shard_size)
    if is_shard_source(source):
        raise CnnkitError(f"{source}: already shards", "train from them with --data, or shard the original dataset again")
    kind = (task or "").lower() or None
    if kind not in (None, "classify", "detect", "segment"):
        raise CnnkitError(f"--task {task}: cannot be sharded", "choose classify, detect or segment")
    root = resolve_data(source, kind)
    if kind is None:
        kind = "segment" if is_segmentation_layout(root) else "detect" if detect_layout(root) else "classify"
    if kind == "segment":
        data = load_segmentation(root, val_split, seed)
    elif kind == "detect":
        from cnnkit.tasks.detect.api import load_split_data

        data = load_split_data(str(root), False, val_split, seed)
    else:
        from cnnkit.data.imagefolder import load_imagefolder

        data = load_imagefolder(root, val_split, seed)
    index = write_shards(data, out, size, source=str(source), force=force)
    parts = ", ".join(f"{split} {e['count']} images in {len(e['shards'])} shard{'s' if len(e['shards']) > 1 else ''} "
                      f"({e['bytes'] / 1e6:.1f} MB)" for split, e in index["splits"].items())
    typer.echo(f"{kind} shards: {parts}; {len(index['classes'])} classes; written to {out}", err=True)


def _is_mot(source: str) -> bool:
    """MOTChallenge sequences, and not a detection layout (checked first: it is the cheaper look)."""
    from cnnkit.data.convert_mot import is_mot_source
    from cnnkit.data.detection import detect_layout

    return detect_layout(source) is None and is_mot_source(source)


def _convert_mot(source: str, target: str, out: Path, copy: bool, strict: bool, palette: Optional[str], unknown: str,
                 every: Optional[int], min_visibility: Optional[float]) -> None:
    from cnnkit.data import convert_mot

    if target not in ("coco", "identities"):
        raise CnnkitError(f"--to {target}: MOTChallenge sequences convert --to coco (detection) or --to identities (re-ID)",
                          "convert --to coco first, then that COCO set --to yolo or voc")
    if strict or palette is not None or unknown != "error":
        raise CnnkitError("--strict, --palette and --unknown do not apply to MOTChallenge sources",
                          "boxes are clipped to the frame")
    visibility = {} if min_visibility is None else {"min_visibility": min_visibility}
    if target == "coco":
        summary = convert_mot.mot_to_coco(source, out, every=1 if every is None else every, copy=copy, **visibility)
        images, boxes, splits = summary["images"], summary["boxes"], summary["splits"]
        typer.echo(f"mot -> coco: {images['train']} train + {images['val']} val images ({len(splits['train'])} + "
                   f"{len(splits['val'])} sequences), {boxes['train'] + boxes['val']} boxes, {len(summary['classes'])} "
                   f"{'category' if len(summary['classes']) == 1 else 'categories'} written to {out}", err=True)
        return
    if every is not None or copy:
        raise CnnkitError("--every and --copy apply to --to coco", "--to identities keeps at most 40 crops an identity, "
                          "spread over its frames")
    summary = convert_mot.mot_to_identities(source, out, **visibility)
    ids, crops = summary["identities"], summary["crops"]
    typer.echo(f"mot -> identities: {ids['train']} identities, {crops['train']} train + {crops['val']} val crops "
               f"({ids['val']} identities in val) from {len(summary['sequences'])} sequences written to {out}", err=True)


@config_command(augment_app, "preview", PreviewConfig,
                "Draw -n images of a dataset before and after augmentation (a --preset and any per-operation option) into one PNG.")
def augment_preview(cfg: PreviewConfig, explicit: set[str]) -> None:
    from cnnkit.augment.presets import describe
    from cnnkit.augment.preview import preview_dataset
    from cnnkit.console import console

    path = preview_dataset(cfg.data, cfg.spec, cfg.out, cfg.n, cfg.seed, cfg.imgsz, cfg.split)
    console.print(f"{describe(cfg.spec)}\npreview: {path}")
