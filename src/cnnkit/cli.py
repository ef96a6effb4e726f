"""The command line: `cnnkit TASK MODE [options]`. Options become a config, the config one API call.

Every user error is a CnnkitError: one line on stderr and exit code 2; `--debug` anywhere on the
line shows the full traceback instead. Anything else is a bug: exit code 1.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional, get_args, get_type_hints

import typer

from cnnkit import __version__
from cnnkit.config import (INSTANCE_MODELS, MAX_PIXELS, DetectConfig, DistillConfig, EmbedConfig, PreviewConfig, SegmentConfig,
                            SegmentDistillConfig, TrainConfig, read_yaml_options)
from cnnkit.errors import CnnkitError
from cnnkit.libwarnings import routed_warnings

app = typer.Typer(help="cnnkit: the whole CNN computer-vision workflow in one tool.", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)
classify_app = typer.Typer(help="Image classification: train, val, predict.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: check, convert, synth.", no_args_is_help=True)
embed_app = typer.Typer(help="Image embeddings and visual search: train, val, index, search, dedup, cluster.", no_args_is_help=True)
DETECTORS = "cnnkit's YOLO-style yolo_n/yolo_s/yolo_m, Faster R-CNN, SSD, SSDlite"
# short_help: click cuts a group's help to ~45 characters in `cnnkit --help`, which dropped the detectors after the first
detect_app = typer.Typer(help=f"Object detection ({DETECTORS}): train, val, predict on images and videos.",
                         short_help=f"Object detection: train, val, predict ({DETECTORS}).", no_args_is_help=True)
app.add_typer(classify_app, name="classify")
app.add_typer(detect_app, name="detect")
segment_app = typer.Typer(help="Segmentation, semantic (U-Net, FPN, PAN, DeepLabV3+, FCN) and medical (16-bit, DICOM, NIfTI, "
                          "tiled): train, val, predict.", no_args_is_help=True)
app.add_typer(segment_app, name="segment")
app.add_typer(embed_app, name="embed")
app.add_typer(data_app, name="data")
augment_app = typer.Typer(help="Augmentation: preview a preset or any mix of operations on a dataset.", no_args_is_help=True)
app.add_typer(augment_app, name="augment")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
    debug: bool = typer.Option(False, "--debug", help="show full tracebacks (also accepted after any command)"),
) -> None:
    """cnnkit TASK MODE [options]; every command has --help."""


def _typed(ctx: typer.Context, name: str) -> bool:
    """Was this option given on the command line (or by env), rather than left at its default?"""
    source = ctx.get_parameter_source(name)
    # compared by name: typer may carry its own copy of click, whose enum is not click.core's
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


MAX_PIXELS_HELP = ("refuse images with more pixels than this, a guard against decompression bombs (files found in "
                   "folders are skipped with a warning); default Pillow's own limit; 0 = no limit, for genuine large scans")


def pixel_limited(command: Callable) -> Callable:
    """Give a command --max-pixels N: the pixel limit of every image it reads (cnnkit.data.images.pixel_limit).
    Training commands have it as a config field instead, recorded in config.yaml."""
    signature = inspect.signature(command, eval_str=True)
    option = typer.Option(MAX_PIXELS, "--max-pixels", min=0, help=MAX_PIXELS_HELP)
    parameter = inspect.Parameter("max_pixels", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=int)

    def run(*args: Any, max_pixels: int = MAX_PIXELS, **kwargs: Any) -> Any:
        from cnnkit.data.images import pixel_limit

        with pixel_limit(max_pixels):
            return command(*args, **kwargs)

    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), parameter])
    run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
    return run


def takes_sources(param: str = "sources", required: bool = True,
                  what: str = "an image, folder or quoted glob pattern") -> Callable:
    """Accept a command's inputs both ways users type them, as the field's CLIs do: positional (the
    command's own ``param`` Argument, declared optional) and repeated ``--source``. The command gets one
    list in ``param``, positional ones first; ``required``: none at all is a one-line error here, else the
    command decides (an index can be changed with --remove alone)."""

    def decorator(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        metavar = signature.parameters[param].default.metavar
        option = typer.Option(None, "--source", metavar="DIR|FILE|GLOB",
                              help=f"the same as the {metavar} arguments: {what}; repeat for more")
        extra = inspect.Parameter("source_option", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[list[str]])
        parameters = list(signature.parameters.values())
        at = parameters.index(signature.parameters[param]) + 1  # listed right after the positional in --help
        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if i >= at else p for i, p in enumerate(parameters)]

        def run(*args: Any, source_option: Optional[list[str]] = None, **kwargs: Any) -> Any:
            kwargs[param] = [*(kwargs.get(param) or []), *(source_option or [])]
            if required and not kwargs[param]:
                raise missing_sources(metavar)
            return command(*args, **kwargs)

        run.__signature__ = signature.replace(parameters=[*parameters[:at], extra, *parameters[at:]])
        run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
        return run

    return decorator


def missing_sources(metavar: str) -> CnnkitError:
    return CnnkitError(f"missing {metavar}", "pass images, folders or quoted globs as arguments or with --source "
                       "(repeatable)")


def config_command(app_: typer.Typer, name: str, config_type: type, help: str) -> Callable:
    """Register a command whose options are the fields of ``config_type``, plus --config FILE.yaml.

    Precedence: options typed on the command line > the YAML file > the dataclass defaults.
    """

    def decorator(run: Callable[[Any, set[str]], None]) -> Callable:
        hints = get_type_hints(config_type)
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        for f in fields(config_type):
            flag = f.name.replace("_", "-")
            hint = hints[f.name]
            choices = f.metadata.get("choices")
            kwargs = {"help": f.metadata.get("help", ""), "show_default": True}
            numbers = [a for a in get_args(hint) if a is not type(None)]
            if hint in (int, float, str, bool):
                annotation = hint
            elif len(numbers) == 1 and numbers[0] in (int, float):  # "from the preset" when left out
                annotation = Optional[numbers[0]]
            else:
                annotation = Optional[str]
            if choices:  # typer shows and checks the allowed values of an Enum
                annotation = enum.Enum(f"{f.name}_choice", {c: c for c in choices}, type=str)
            if hint is bool:
                option = typer.Option(f.default, f"--{flag}/--no-{flag}", **kwargs)
            else:
                short = f.metadata.get("short")
                option = typer.Option(f.default, f"--{flag}", *f.metadata.get("aliases", ()), *([short] if short else []), **kwargs)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                        default=typer.Option(None, "--config", help="YAML file with any of these options")))

        def command(ctx: typer.Context, **values: Any) -> None:
            config_file = values.pop("config")
            options = read_yaml_options(config_file, config_type) if config_file else {}
            typed = {k: v for k, v in values.items() if _typed(ctx, k)}
            options.update({k: v.value if isinstance(v, enum.Enum) else v for k, v in typed.items()})
            run(config_type(**options).validate(), set(options))

        command.__signature__ = inspect.Signature(params)
        command.__doc__ = help
        app_.command(name, help=help)(command)
        return run

    return decorator


@config_command(classify_app, "train", TrainConfig, "Train a classifier on an ImageFolder dataset (or --data digits).")
def classify_train(cfg: TrainConfig, explicit: set[str]) -> None:
    from cnnkit.api import train

    train(cfg, explicit)


@config_command(augment_app, "preview", PreviewConfig,
                "Draw -n images of a dataset before and after augmentation (a --preset and any per-operation option) into one PNG.")
def augment_preview(cfg: PreviewConfig, explicit: set[str]) -> None:
    from cnnkit.augment.presets import describe
    from cnnkit.augment.preview import preview_dataset
    from cnnkit.console import console

    path = preview_dataset(cfg.data, cfg.spec, cfg.out, cfg.n, cfg.seed, cfg.imgsz, cfg.split)
    console.print(f"{describe(cfg.spec)}\npreview: {path}")


@classify_app.command("val")
@pixel_limited
def classify_val(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    data: str = typer.Option("digits", "--data", help="dataset root or built-in name"),
    split: str = typer.Option("val", "--split", help="split to evaluate: train, val or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: val/ beside the weights' run)"),
    batch: int = typer.Option(64, "--batch", help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    workers: int = typer.Option(2, "--workers", help="data-loading worker processes"),
) -> None:
    """Evaluate weights on a dataset split: metrics.json, plots and report.html."""
    from cnnkit.api import Classifier

    Classifier.load(weights).val(data, split=split, out=out, batch=batch, device=device, workers=workers)


@classify_app.command("predict")
@pixel_limited
@takes_sources()
def classify_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images, folders or glob patterns (quote globs)"),
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    topk: int = typer.Option(5, "--topk", help="how many classes to list per image"),
    batch: int = typer.Option(32, "--batch", help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file","label","score","topk"}] to this file'),
) -> None:
    """Classify images and print a table (and JSON with --save-json)."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.api import Classifier
    from cnnkit.console import console
    from cnnkit.engine.rundir import write_json

    results = Classifier.load(weights).predict(sources, topk=topk, batch=batch, device=device)
    table = Table("label", "score", f"top-{topk}", "file")
    for r in results:
        table.add_row(r["label"], f"{r['score']:.3f}", ", ".join(f"{l} {s:.2f}" for l, s in r["topk"][1:]), r["file"])
    Console().print(table)  # stdout: results; progress and messages go to stderr
    if save_json:
        write_json(save_json, results)
        console.print(f"{len(results)} predictions written to {save_json}")


def _print_layers(clf) -> None:
    """The model's modules whose output is a feature map, as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.tasks.features import list_layers

    table = Table("layer", "type", "output (C, H, W)")
    for name, kind, shape in list_layers(clf.model, clf.imgsz):
        table.add_row(name, kind, " x ".join(map(str, shape)))
    Console().print(table)  # stdout: results; messages go to stderr


@classify_app.command("features")
@pixel_limited
@takes_sources(required=False)  # --layers list needs none
def classify_features(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns "
                                                  "(quote globs)"),
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE.npz", help="the .npz to write: features [N, D], files [N], labels [N] when the folders name the classes"),
    batch: int = typer.Option(64, "--batch", min=1, help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="A,B|list", help="comma-separated module names whose outputs are also saved, "
                                         "as layer:NAME [N, C, H, W] float16; 'list' prints the usable names"),
) -> None:
    """Pooled features (the classifier's input) of every image, saved as an .npz for search, clustering or probes."""
    from cnnkit.api import Classifier
    from cnnkit.console import console

    clf = Classifier.load(weights)
    if layers is not None and layers.strip() == "list":
        _print_layers(clf)
        return
    if not sources:
        raise missing_sources("SOURCE")
    if out is None or out.is_dir():
        raise CnnkitError(f"--out {out}: is a folder" if out else "missing --out", "pass --out FILE.npz")
    names = [n.strip() for n in (layers or "").split(",") if n.strip()]
    arrays = clf.features(sources, out, layers=names, batch=batch, device=device, workers=workers)
    n, dims = arrays["features"].shape
    notes = ["labels from class folders" if "labels" in arrays else "no labels (files are not in class folders)"]
    if names:
        notes.append(f"layers {', '.join(names)}")
    console.print(f"{n} images, {dims} dims, {'; '.join(notes)}: written to {out}", soft_wrap=True, markup=False)


@classify_app.command("explain")
@pixel_limited
@takes_sources(required=False)  # --layers list needs none
def classify_explain(
    sources: Optional[list[str]] = typer.Argument(None, metavar="IMAGE", help="images, folders or glob patterns (quote globs)"),
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    target: Optional[str] = typer.Option(None, "--target", metavar="CLASS", help="class to explain, by name or index (default: the predicted class)"),
    out: Path = typer.Option(Path("runs/classify/explain"), "--out", metavar="DIR", help="folder for a PNG per image, at the "
                             "image's path below the folder or glob it came from (created)"),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="A,B,C|list", help="comma-separated module names whose strongest "
                                         "channels are shown (default: an early, a middle and the last conv stage); 'list' prints the usable names"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Explain predictions: per image a PNG with the input, the Grad-CAM heatmap of the predicted (or --target)
    class and the strongest feature maps of an early, a middle and a late layer."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.api import Classifier
    from cnnkit.console import console

    clf = Classifier.load(weights)
    if layers is not None and layers.strip() == "list":
        _print_layers(clf)
        return
    if not sources:
        raise missing_sources("IMAGE")
    names = [n.strip() for n in (layers or "").split(",") if n.strip()]
    results = clf.explain(sources, out=out, target=target, layers=names or None, device=device)
    table = Table("file", "predicted", "score", "target", "png")
    for r in results:
        table.add_row(r["file"], r["label"], f"{r['score']:.3f}", r["target"], r["png"])
    Console().print(table)  # stdout: results; messages go to stderr
    console.print(f"{len(results)} explanations written to {out}", soft_wrap=True, markup=False)

# ==================================================================== detect
@config_command(detect_app, "train", DetectConfig,
                "Train a detector on a COCO, YOLO or Pascal VOC dataset (auto-detected), or --data shapes.")
def detect_train(cfg: DetectConfig, explicit: set[str]) -> None:
    from cnnkit.api import train
    from cnnkit.detection_api import DETECT

    train(cfg, explicit, recipe=DETECT)


CONF_HELP = "keep detections scoring at least this"
CLASSES_HELP = "only these classes: comma-separated names or dataset ids"


@detect_app.command("val")
@pixel_limited
def detect_val(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a detect run"),
    data: str = typer.Option("shapes", "--data", help="dataset root (COCO, YOLO or VOC layout) or built-in name"),
    split: str = typer.Option("val", "--split", help="split to evaluate: train, val or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: val/ beside the weights' run)"),
    batch: int = typer.Option(8, "--batch", help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    workers: int = typer.Option(2, "--workers", help="data-loading worker processes"),
    conf: float = typer.Option(0.001, "--conf", help=CONF_HELP + " (low, so that mAP sees the whole precision-recall curve)"),
    iou: float = typer.Option(0.5, "--iou", help="IoU threshold of the non-maximum suppression"),
    max_det: int = typer.Option(100, "--max-det", help="at most this many detections per image"),
    classes: Optional[str] = typer.Option(None, "--classes", help=CLASSES_HELP),
    strict: bool = typer.Option(False, "--strict", help="refuse boxes outside the image instead of clipping them"),
) -> None:
    """COCO mAP (pycocotools) of weights on a split: metrics.json, predictions.json (COCO results, the
    dataset's own ids), PR curves, confusion matrix, samples and report.html."""
    from cnnkit.detection_api import Detector

    _check_postprocess(conf, iou, max_det)
    Detector.load(weights).val(data, split=split, out=out, batch=batch, device=device, workers=workers, conf=conf,
                               iou=iou, max_det=max_det, classes=classes, strict=strict)


def _check_postprocess(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0 or max_det < 1:
        raise CnnkitError(f"--conf must be in [0, 1], --iou in (0, 1] and --max-det at least 1; got {conf}, {iou}, {max_det}")


@detect_app.command("predict")
@pixel_limited
@takes_sources(what="an image, video, folder or quoted glob pattern")
def detect_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images, videos (mp4, avi, …), folders or glob "
                                                  "patterns (quote globs)"),
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a detect run"),
    conf: float = typer.Option(0.25, "--conf", help=CONF_HELP),
    iou: float = typer.Option(0.5, "--iou", help="IoU threshold of the non-maximum suppression"),
    max_det: int = typer.Option(100, "--max-det", help="at most this many detections per image"),
    classes: Optional[str] = typer.Option(None, "--classes", help=CLASSES_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the annotated images and videos, each at its input's "
                                       "path below the folder or glob it came from (default: runs/detect/predict, predict2, …)"),
    save: bool = typer.Option(True, "--save/--no-save", help="write annotated images and videos"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file","boxes","labels","scores","overlay"}] '
                                             '(video frames add "frame") to this file'),
    batch: int = typer.Option(4, "--batch", help="images or frames per forward pass"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Detect objects in images and videos; draw boxes with class and score (videos keep their frame rate)."""
    from rich.console import Console

    from cnnkit.console import console
    from cnnkit.detection_api import Detector
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


# ==================================================================== segment
@config_command(segment_app, "train", SegmentConfig,
                "Train a segmenter on images/ + masks/ + classes.txt (or --data shapes / cells); --model maskrcnn: "
                "instance segmentation on COCO instances (polygons or RLE).")
def segment_train(cfg: SegmentConfig, explicit: set[str]) -> None:
    from cnnkit.api import train

    if cfg.model in INSTANCE_MODELS:
        from cnnkit.instance_api import INSTANCE, instance_config

        train(instance_config(cfg, explicit), explicit, recipe=INSTANCE)
        return
    from cnnkit.segmentation_api import SEGMENT

    train(cfg, explicit, recipe=SEGMENT)


@config_command(segment_app, "distill", SegmentDistillConfig,
                "Knowledge distillation for semantic segmentation: train a --student segmenter from a frozen --teacher "
                "segmenter's per-pixel soft targets (KL at --temperature over the classes at every pixel, the teacher's "
                "class map resized to the student's; --ignore-index pixels left out; weighted --alpha, plus the student's "
                "--loss on the masks) and optionally one teacher layer's features. Every segment train option applies; "
                "the result is an ordinary segmenter's weights under runs/distill/.")
def segment_distill(cfg, explicit: set[str]) -> None:
    from cnnkit.distill_api import run_segment_distillation

    run_segment_distillation(cfg, explicit)


TILE_HELP = "sliding-window inference at the images' own resolution (default: as the model was trained)"


@segment_app.command("val")
@pixel_limited
def segment_val(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a segment run"),
    data: str = typer.Option("shapes", "--data", help="dataset root (images/ + masks/ + classes.txt) or built-in name"),
    split: str = typer.Option("val", "--split", help="split to evaluate: train, val or test"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: val/ beside the weights' run)"),
    batch: int = typer.Option(4, "--batch", help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    workers: int = typer.Option(2, "--workers", help="data-loading worker processes"),
    tile: Optional[bool] = typer.Option(None, "--tile/--no-tile", help=TILE_HELP, show_default=False),
    hd95: bool = typer.Option(True, "--hd95/--no-hd95", help="measure the 95th-percentile Hausdorff distance per class"),
    conf: float = typer.Option(0.001, "--conf", help="maskrcnn: keep instances scoring at least this (low, so that mAP sees "
                               "the whole precision-recall curve)"),
    max_det: int = typer.Option(100, "--max-det", help="maskrcnn: at most this many instances per image"),
) -> None:
    """miou, dice, pixel accuracy and per-class IoU / Dice / HD95 of weights on a split (on the masks at
    their own size): metrics.json, confusion matrix, overlays and report.html. maskrcnn weights: COCO
    mask and box mAP (pycocotools), predictions.json, PR curves, samples and report.html."""
    from cnnkit import tasks
    from cnnkit.instance_api import InstanceSegmenter

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


@segment_app.command("predict")
@pixel_limited
@takes_sources()
def segment_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images (PNG, JPEG, 16-bit TIFF, DICOM .dcm, "
                                                  "NIfTI .nii.gz), folders or glob patterns (quote globs)"),
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a segment run"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for masks/REL.png and overlays/REL.png, REL being each "
                                       "input's path below the folder or glob it came from "
                                       "(default: runs/segment/predict, predict2, …)"),
    tile: Optional[bool] = typer.Option(None, "--tile/--no-tile", help=TILE_HELP, show_default=False),
    overlap: Optional[float] = typer.Option(None, "--overlap", help="tile overlap, fraction of the side (default: the run's)"),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="also write colour overlays"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file", "size", "classes", "mask", "overlay"}] '
                                             'to this file'),
    conf: float = typer.Option(0.25, "--conf", help="maskrcnn: keep instances scoring at least this"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Segment images: one index PNG per image (uint8 class index, the input's size) and a colour overlay;
    maskrcnn weights add instances.json (every instance's class, score, box and RLE mask)."""
    from rich.console import Console

    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit import tasks
    from cnnkit.instance_api import InstanceSegmenter

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


# ==================================================================== embed
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def _shown(path: str) -> str:
    """A path as the user would type it: relative to the current folder when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _file_table(*columns: str):
    from rich.table import Table

    table = Table(*columns[:-1])
    table.add_column(columns[-1], overflow="fold")  # paths are long; wrapped, never cut
    return table


@config_command(embed_app, "train", EmbedConfig, "Train an embedding model (metric learning) on an ImageFolder whose classes are identities.")
def embed_train(cfg: EmbedConfig, explicit: set[str]) -> None:
    from cnnkit.api import EMBED_RECIPE, train

    train(cfg, explicit, EMBED_RECIPE)


@embed_app.command("val")
@pixel_limited
def embed_val(
    weights: Path = typer.Option(..., "--weights", help="an embed or classify weights file (a classifier embeds with its pooled features)"),
    data: str = typer.Option("digits", "--data", help="dataset root (ImageFolder) or built-in name"),
    query_split: Optional[str] = typer.Option(None, "--query-split", help="split whose images are the queries (default: test, else val)"),
    gallery_split: str = typer.Option("train", "--gallery-split", help="split searched for each query (the same split as the queries: leave-one-out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: val/ beside the weights' run)"),
    batch: int = typer.Option(64, "--batch", min=1, help="batch size"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
) -> None:
    """Retrieval quality: each query image against the gallery split; metrics.json with recall@1, recall@5, map."""
    from cnnkit.api import Embedder

    Embedder.load(weights).val(data, query_split, gallery_split, out, batch=batch, device=device, workers=workers)


@embed_app.command("index")
@takes_sources(required=False)  # --remove alone changes an index
def embed_index(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns "
                                                  "(quote globs)"),
    out: Path = typer.Option(..., "--out", metavar="INDEX_DIR", help="the index folder to build (replaced in one swap) or to change"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="embed or classify weights; needed to build, optional with --add (must be the index's model)"),
    kind: str = typer.Option("flat", "--index", help="flat (exact inner product), ivf (inverted lists) or hnsw (graph) for large galleries"),
    add: bool = typer.Option(False, "--add", help="append the SOURCE images to the existing index (a file already in it is "
                             "re-embedded)"),
    remove: Optional[list[str]] = typer.Option(None, "--remove", metavar="FILE|DIR|GLOB", help="drop these files from the existing index, no re-embedding; repeat for more"),
    nlist: int = typer.Option(0, "--nlist", min=0, help="IVF: number of lists (0 = about 4*sqrt(N))"),
    nprobe: int = typer.Option(8, "--nprobe", min=1, help="IVF: lists visited per query (more = slower, better recall)"),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=4, help="HNSW: links per node"),
    ef_search: int = typer.Option(64, "--ef-search", min=1, help="HNSW: candidates kept per query (more = slower, better recall)"),
    batch: int = typer.Option(64, "--batch", min=1, help="batch size for embedding"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
) -> None:
    """Build a FAISS index of a folder's embeddings (vectors, files and the model are stored with it), or --add / --remove images."""
    from cnnkit.api import build_index
    from cnnkit.retrieval.index import KINDS

    if kind not in KINDS:
        raise CnnkitError(f"--index {kind!r} is not one of {', '.join(KINDS)}")
    build_index(out, sources, weights, kind, add, remove or [], nlist, nprobe, hnsw_m, ef_search, batch, device, workers)


@embed_app.command("search")
@takes_sources("queries", what="a query image, folder or quoted glob pattern")
def embed_search(
    queries: Optional[list[str]] = typer.Argument(None, metavar="QUERY", help="query images, folders or glob patterns"),
    index: Path = typer.Option(..., "--index", metavar="INDEX_DIR", help="an index built by `cnnkit embed index`"),
    k: int = typer.Option(5, "-k", "--k", min=1, help="neighbours per query"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="the model to embed the queries (default: the index's own copy; must match it)"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"query", "neighbors": [{"file", "score"}]}] to this file'),
    sheet: Optional[Path] = typer.Option(None, "--sheet", metavar="FILE.png", help="contact sheet: each query beside its neighbours (default: search.png in --out)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for search.png and results.json (default: runs/embed/search, search2, …)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Nearest gallery images of each query, by cosine similarity: a table, a contact sheet and JSON."""
    from rich.console import Console

    from cnnkit.api import search_index
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit.retrieval.sheets import contact_sheet

    results = search_index(index, queries, k, weights, device=device)
    table = _file_table("query", "rank", "score", "file")
    for r in results:
        for rank, n in enumerate(r["neighbors"], 1):
            table.add_row(_shown(r["query"]) if rank == 1 else "", str(rank), f"{n['score']:.3f}", _shown(n["file"]))
    Console().print(table)  # stdout: results; messages go to stderr
    out_dir = out or next_run_dir("embed", None, prefix="search")
    write_json(out_dir / "results.json", results)
    if save_json:
        write_json(save_json, results)
    rows = [[(r["query"], "query", None)] + [(n["file"], f"{i}: {n['score']:.3f}", None) for i, n in enumerate(r["neighbors"], 1)]
            for r in results[:20]]
    path = contact_sheet(rows, sheet or out_dir / "search.png")
    console.print(f"{len(results)} queries; sheet {path}; results {save_json or out_dir / 'results.json'}", soft_wrap=True, markup=False)


def _group_sheets(groups: list[list[str]], captions: list[list[str]], out_dir: Path, name: str, per_sheet: int = 20) -> list[Path]:
    """One contact sheet per 20 groups (a row each, at most 10 images a row)."""
    from cnnkit.retrieval.sheets import contact_sheet

    paths = []
    for start in range(0, len(groups), per_sheet):
        rows = [[(f, c, None) for f, c in zip(files[:10], caps[:10])] for files, caps in
                zip(groups[start:start + per_sheet], captions[start:start + per_sheet])]
        paths.append(contact_sheet(rows, out_dir / f"{name}_{start // per_sheet:02d}.png"))
    return paths


# dedup and cluster work on an index's stored vectors, or embed a folder on the spot
GALLERY_INDEX = typer.Option(None, "--index", metavar="INDEX_DIR", help="the images of this index (their stored vectors)")
GALLERY_SOURCES = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns (quote globs) to embed "
                                 "with --weights, instead of --index")
GALLERY = dict(required=False, what="an image folder, file or quoted glob pattern (with --weights)")
GALLERY_WEIGHTS = typer.Option(None, "--weights", help="embed or classify weights (with --source)")


@embed_app.command("dedup")
@takes_sources(**GALLERY)
def embed_dedup(
    sources: Optional[list[str]] = GALLERY_SOURCES,
    index: Optional[Path] = GALLERY_INDEX,
    weights: Optional[Path] = GALLERY_WEIGHTS,
    threshold: float = typer.Option(0.95, "--threshold", help="cosine similarity at or above which two images are near-duplicates"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for duplicates.json and sheets (default: runs/embed/dedup, dedup2, …)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Groups of near-duplicate images (linked by similarity >= --threshold), largest first."""
    from rich.console import Console

    from cnnkit.api import dedup
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json

    groups = dedup(index, sources, weights, threshold, device=device)
    table = _file_table("group", "images", "similarity", "files")
    for i, g in enumerate(groups):
        shown = ", ".join(map(_shown, g["files"][:4])) + (f", … (+{len(g['files']) - 4})" if len(g["files"]) > 4 else "")
        table.add_row(str(i), str(len(g["files"])), f"{g['min_score']:.3f}–{g['max_score']:.3f}", shown)
    Console().print(table)
    out_dir = out or next_run_dir("embed", None, prefix="dedup")
    write_json(out_dir / "duplicates.json", {"threshold": threshold, "groups": groups})
    sheets = _group_sheets([g["files"] for g in groups], [[f"group {i}"] * len(g["files"]) for i, g in enumerate(groups)], out_dir, "duplicates")
    duplicates = sum(len(g["files"]) - 1 for g in groups)
    console.print(f"{len(groups)} groups, {duplicates} images are near-duplicates of another; written to {out_dir}"
                  + (f" ({len(sheets)} sheets)" if sheets else ""), soft_wrap=True, markup=False)


@embed_app.command("cluster")
@takes_sources(**GALLERY)
def embed_cluster(
    sources: Optional[list[str]] = GALLERY_SOURCES,
    k: int = typer.Option(..., "-k", "--k", min=1, help="number of clusters"),
    index: Optional[Path] = GALLERY_INDEX,
    weights: Optional[Path] = GALLERY_WEIGHTS,
    seed: int = typer.Option(0, "--seed", help="k-means initialisation seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for clusters.json and one sheet per cluster (default: runs/embed/cluster, …)"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
) -> None:
    """Group images with spherical k-means on their embeddings; a contact sheet per cluster (most typical first)."""
    from rich.console import Console

    from cnnkit.api import cluster
    from cnnkit.console import console
    from cnnkit.engine.rundir import next_run_dir, write_json
    from cnnkit.retrieval.sheets import contact_sheet

    result = cluster(k, index, sources, weights, seed, device=device)
    out_dir = out or next_run_dir("embed", None, prefix="cluster")
    table = _file_table("cluster", "images", "sheet", "most typical")
    for c in result["clusters"]:
        sheet = out_dir / f"cluster_{c['id']:02d}.png"
        if c["files"]:
            cells = [(f, f"{s:.2f}", None) for f, s in zip(c["files"][:30], c["scores"][:30])]
            contact_sheet([cells[i:i + 10] for i in range(0, len(cells), 10)], sheet)
        table.add_row(str(c["id"]), str(c["size"]), str(sheet) if c["files"] else "", _shown(c["files"][0]) if c["files"] else "")
    Console().print(table)
    write_json(out_dir / "clusters.json", result)
    console.print(f"{k} clusters of {len(result['assignment'])} images written to {out_dir}", soft_wrap=True, markup=False)


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
    kind: str = typer.Argument(..., help="what to generate: shapes or cells"),
    task: Optional[str] = typer.Option(None, "--task", help="shapes: detect (COCO + YOLO layouts, the default) or segment "
                                       "(masks + classes.txt); cells always writes segmentation labels"),
    n: int = typer.Option(500, "--n", help="number of images (train + val)"),
    imgsz: int = typer.Option(320, "--imgsz", help="square image side in pixels (32 to 4096)"),
    out: Path = typer.Option(..., "--out", help="folder to create; must be new or empty unless --force"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes byte-identical files"),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="share of the images in the val split"),
    force: bool = typer.Option(False, "--force", help="replace a non-empty --out folder"),
) -> None:
    """Generate a synthetic dataset: shapes (circle, square, triangle, star, cross) on real photos, with occlusion,
    uneven illumination and noise; or cells, 16-bit fluorescence-microscopy-like images with semantic and instance labels."""
    from cnnkit.console import console
    from cnnkit.data.synth import synth_dataset

    summary = synth_dataset(kind, out, task=task, n=n, imgsz=imgsz, seed=seed, val_fraction=val_fraction, force=force)
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
                                 "COCO instances or a masks layout with colour masks"),
    to: str = typer.Option(..., "--to", help="target layout: coco, yolo or voc (detection), or masks (segmentation: "
                           "images/SPLIT, masks/SPLIT index PNGs, classes.txt)"),
    out: Path = typer.Option(..., "--out", help="new folder to write (must not exist or be empty)"),
    copy: bool = typer.Option(False, "--copy", help="copy images instead of hard-linking them"),
    strict: bool = typer.Option(False, "--strict", help="boxes outside the image are errors instead of being clipped"),
    palette: Optional[str] = typer.Option(None, "--palette", metavar="voc|FILE", help="--to masks from colour masks: map each "
                                          "colour to its class index by Pascal VOC's colours (voc; its boundary colour -> 255) "
                                          "or a file: lines `NAME R G B` in class-index order, or JSON "
                                          "{\"name\": [r, g, b], ...}"),
    unknown: str = typer.Option("error", "--unknown", metavar="error|ignore", help="--to masks --palette: a colour not in the "
                                "palette is an error (error), or set to 255 = ignore with a warning (ignore)"),
) -> None:
    """Convert a detection dataset between COCO, YOLO and Pascal VOC (boxes, category names and,
    where the target can hold them, the dataset's own ids); or make segmentation index masks
    (--to masks) from COCO instance polygons / RLE or from colour masks (--palette)."""
    target = to.lower()
    if target not in ("coco", "yolo", "voc", "masks"):
        raise CnnkitError(f"--to {to}: unknown target layout",
                          "choose one of coco, yolo, voc (detection) or masks (segmentation)")
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


def _comma_list(option: str, text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None stays None (everything)."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CnnkitError(f"{option} is empty", "pass comma-separated names, or leave it out for all")
    return items


def _severity_list(text: str) -> list[int]:
    try:
        return [int(item) for item in _comma_list("--severities", text)]
    except ValueError:
        raise CnnkitError(f"--severities '{text}': not a comma-separated list of integers", "e.g. --severities 1,3,5") from None


@config_command(app, "distill", DistillConfig,
                "Knowledge distillation: train a --student classifier from a frozen --teacher's soft targets (KL at "
                "--temperature, weighted --alpha, plus the labels) and optionally one teacher layer's features. Every "
                "training option applies; the result is an ordinary classifier's weights under runs/distill/. Segmenters: "
                "`cnnkit segment distill`.")
def distill_command(cfg: DistillConfig, explicit: set[str]) -> None:
    from cnnkit.distill_api import run_distillation

    run_distillation(cfg, explicit)


@app.command("robustness")
def robustness(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    data: str = typer.Option("digits", "--data", help="dataset root or built-in name"),
    split: str = typer.Option("val", "--split", help="split to evaluate: train, val or test"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="output folder (default: robustness/ beside the weights' run)"),
    families: Optional[str] = typer.Option(None, "--families", metavar="A,B", help="only these corruption families: occlusion, illumination, noise, blur (default: all)"),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", metavar="A,B", help="only these corruptions, e.g. occlusion_solid,dark,gaussian_blur (default: all)"),
    severities: str = typer.Option("1,2,3,4,5", "--severities", metavar="1,3,5", help="severities to evaluate, each 1 to 5"),
    seed: int = typer.Option(0, "--seed", help="seed of the corruptions' randomness (occluder places, noise): same seed, same images"),
    batch: int = typer.Option(64, "--batch", min=1, help="batch size"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
    occlusion_map: Optional[Path] = typer.Option(None, "--occlusion-map", metavar="IMAGE", help="instead of the corruption benchmark: "
                                                 "map where hiding part of IMAGE (a sliding square of its mean colour) costs the class its probability"),
    target: Optional[str] = typer.Option(None, "--target", metavar="CLASS", help="--occlusion-map: class to map, by name or index (default: the predicted class)"),
    patch: float = typer.Option(0.2, "--patch", help="--occlusion-map: side of the square, as a fraction of the image side"),
    stride: Optional[float] = typer.Option(None, "--stride", help="--occlusion-map: step of the square, as a fraction of the image side (default: a quarter of --patch)"),
) -> None:
    """Accuracy under occlusion, illumination changes, noise and blur at severities 1-5: robustness.json,
    severity curves, example images and report.html. With --occlusion-map IMAGE: an occlusion-sensitivity map of one image."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.api import Classifier
    from cnnkit.console import console

    severity_list = _severity_list(severities)
    family_list, corruption_list = _comma_list("--families", families), _comma_list("--corruptions", corruptions)
    clf = Classifier.load(weights)
    if occlusion_map is not None:
        r = clf.occlusion_map(occlusion_map, out, target, patch, stride, batch, device)
        console.print(f"{r['file']}: predicted {r['label']} ({r['score']:.3f}); map of {r['target']} ({r['target_score']:.3f}) "
                      f"in {r['png']} and {r['npz']}", soft_wrap=True, markup=False)
        return
    result = clf.robustness(data, split, out, family_list, corruption_list, severity_list, seed, batch, device, workers)
    metric = result["metric"]
    drops = ", ".join(f"{family} {'-' if drop is None else f'{drop:.3f}'}" for family, drop in result["relative_drop"].items())
    table = Table(title=f"{metric} by severity (clean {result['clean'][metric]:.3f})", caption=f"relative drop: {drops}")
    for column in ("family", "corruption"):
        table.add_column(column, no_wrap=True)
    for severity in result["severities"]:
        table.add_column(f"s{severity}", justify="right", no_wrap=True)
    for family, names in result["corruptions"].items():
        for row, (name, values) in enumerate(names.items()):
            table.add_row(family if row == 0 else "", name, *(f"{v:.3f}" for v in values))
    Console().print(table)  # stdout: results; messages go to stderr


@app.command("export")
def export_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, embed, detect or segment "
                                 "(semantic) run"),
    format: str = typer.Option("onnx", "--format", help="onnx (ONNX Runtime, any ONNX runtime), torchscript (.ts) or pt2 (torch.export)"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="output file (default: beside the weights, "
                                       "NAME.onnx / NAME.ts / NAME.pt2)"),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch/--fixed-batch", help="accept any batch size (default: batch 1)"),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18 or newer)"),
    data: Optional[str] = typer.Option(None, "--data", help="images for the parity check: this dataset's val split "
                                       "(default: photos shipped with scikit-learn and scikit-image)"),
    images: Optional[list[Path]] = typer.Option(None, "--images", help="image files for the parity check (repeatable)"),
    rtol: float = typer.Option(1e-3, "--rtol", help="parity tolerance: largest output difference allowed, relative to the largest output"),
    iou: float = typer.Option(0.5, "--iou", help="detectors: IoU threshold of the NMS inside the exported graph"),
    max_det: int = typer.Option(100, "--max-det", min=1, help="detectors: detection slots per image in the exported graph's outputs"),
) -> None:
    """Export a trained model to ONNX, TorchScript or a torch.export program, then run it beside eager PyTorch
    on real images: prints the largest output difference (and top-1 agreement for classifiers, matched
    detections for detectors); a mismatch beyond --rtol fails. Detectors export with their decoding and
    NMS inside the graph. The file carries the model's metadata, so `val`, `predict` and `bench` load it directly."""
    from cnnkit.compress.export import FORMATS
    from cnnkit.tasks import export_weights

    if format not in FORMATS:
        raise CnnkitError(f"--format {format!r} is not one of {', '.join(FORMATS)}")
    path, _ = export_weights(weights, format, out, dynamic_batch, opset, data, [str(p) for p in images or []], rtol,
                             iou=iou, max_det=max_det)
    typer.echo(str(path))


@app.command("quantize")
def quantize_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, segment (semantic) or YOLO-style detect run (Faster R-CNN, SSD: --backend onnx)"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset root or built-in name: calibration images (its train split) "
                                       "and the fp32-vs-int8 comparison (its val split)"),
    method: str = typer.Option("ptq", "--method", help="ptq: static post-training int8; qat: quantization-aware fine-tuning "
                               "for --epochs, then int8 (classifiers); dynamic: int8 Linear layers, no calibration"),
    backend: str = typer.Option("torch", "--backend", help="torch: PyTorch int8 (FX, x86 kernels) -> NAME.int8.pt; "
                                "onnx: ONNX Runtime static QDQ int8 of the exported model -> NAME.int8.onnx"),
    calib_images: int = typer.Option(256, "--calib-images", help="calibration images (ptq, qat)"),
    epochs: int = typer.Option(1, "--epochs", help="--method qat: fine-tuning epochs"),
    lr: float = typer.Option(1e-4, "--lr", help="--method qat: learning rate"),
    batch: int = typer.Option(32, "--batch", min=1, help="--method qat: batch size"),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="output file (default: beside the weights)"),
) -> None:
    """Quantize a trained model to int8 for x86 CPUs and report the task metric of fp32 and int8 side by side.
    The file loads directly in `val`, `predict` and `bench`."""
    from cnnkit.console import console
    from cnnkit.tasks import quantize_weights

    path, report = quantize_weights(weights, data, method, backend, calib_images, epochs, out, lr, batch, workers)
    size = f"{report['size_mb_fp32']:.1f} MB -> {report['size_mb_int8']:.1f} MB ({report['size_mb_fp32'] / report['size_mb_int8']:.1f}x smaller)"
    if "metric" in report:
        console.print(f"{report['metric']} on {data} ({report['split']}): fp32 {report['fp32']:.4f}, int8 {report['int8']:.4f} "
                      f"({report['change_points']:+.2f} points); {size}")
    else:
        console.print(size)
    typer.echo(str(path))


@app.command("bench")
def bench_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, segment (semantic) or detect run"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset root or built-in name: the task metric on its val split "
                                       "and the int8 calibration (its train split)"),
    formats: str = typer.Option("eager,bf16,int8,onnx,onnx-int8", "--formats", metavar="A,B",
                                help="variants to measure: eager, bf16, int8, onnx, onnx-int8, pt2, torchscript"),
    batch: str = typer.Option("1,32", "--batch", metavar="1,32", help="batch sizes"),
    runs: int = typer.Option(30, "--runs", help="timed calls per variant and batch size (median and p90 of these)"),
    warmup: int = typer.Option(5, "--warmup", help="untimed calls first"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads for PyTorch and ONNX Runtime (default: PyTorch's)"),
    calib_images: int = typer.Option(256, "--calib-images", help="calibration images for the int8 variants"),
    out: Path = typer.Option(Path("runs/bench"), "--out", metavar="DIR", help="where the variants' files, bench.json and bench.md go"),
    no_metric: bool = typer.Option(False, "--no-metric", help="latency only: skip the task metric"),
) -> None:
    """Size, latency (p50/p90), throughput and the task metric of each deployment variant of a model, as a
    table; bench.json and bench.md in --out."""
    from cnnkit.compress.bench import FORMATS, parse_list
    from cnnkit.tasks import bench

    format_list = parse_list(formats, "formats", FORMATS)
    try:
        batches = [int(b) for b in parse_list(batch, "batch")]
    except ValueError:
        raise CnnkitError(f"--batch {batch!r}: give whole numbers separated by commas, e.g. 1,32") from None
    needs_data = {"int8", "onnx-int8"} & set(format_list)
    if needs_data and not data:
        raise CnnkitError(f"--formats {','.join(sorted(needs_data))} need calibration images: pass --data ROOT")
    bench(weights, data, format_list, batches, out, runs, warmup, threads, calib_images, metric=not no_metric)


@app.command("models")
def list_models(
    pattern: str = typer.Argument("", help="only names containing this text"),
    task: Optional[str] = typer.Option(None, "--task", help="only models for this task: classify (also embed and distill "
                                       "backbones), detect, segment or instance (segment train --model maskrcnn)"),
) -> None:
    """List model names, one a line with the task that builds it and where it comes from: cnnkit's own
    (classify, detect, segment, instance), then timm's and torchvision's (as tv:NAME) classifiers."""
    import cnnkit.models  # noqa: F401  (every family registers when imported)
    from cnnkit import registry

    if task is not None and task not in registry.TASKS:
        raise CnnkitError(f"--task {task!r} is not a task", f"choose one of {', '.join(registry.TASKS)}")
    rows = registry.listing(pattern, task)
    width = max((len(r[0]) for r in rows), default=0)
    for name, task_, source, about in rows:
        typer.echo(f"{name:<{width}}  {task_:<8}  {source:<11}  {about}".rstrip())


@app.command("demo")
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/classify/demo, then demo2, …)"),
    epochs: int = typer.Option(15, "--epochs", help="training epochs"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
) -> None:
    """Train tiny_cnn on the built-in digits (1,797 real handwritten digits) and write the report."""
    from cnnkit.api import train
    from cnnkit.engine.rundir import next_run_dir

    run_dir = out or next_run_dir("classify", None, prefix="demo")
    cfg = TrainConfig(data="digits", model="tiny_cnn", epochs=epochs, imgsz=32, batch=64, lr=0.003,
                      fliplr=0.0, workers=0, device=device, out=str(run_dir)).validate()
    train(cfg)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a != "--debug"]]
    try:
        if debug:  # Python's own warnings, whole
            app()
        else:
            with routed_warnings():  # pydicom's, PyTorch's, … as one cnnkit line each, naming the file
                app()
    except CnnkitError as exc:
        if debug:
            raise
        print(f"cnnkit: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("cnnkit: interrupted (a training run continues with --resume)", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if debug:
            raise
        print(f"cnnkit: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
