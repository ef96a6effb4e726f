"""`cnnkit classify train|val|predict|features|explain`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnkit.cli.options import (Batch, Device, Split, ValOut, Workers, config_command, missing_sources,
                                pixel_limited, takes_sources, weights_option)
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.errors import CnnkitError

app = typer.Typer(help="Image classification: train, val, predict.", no_args_is_help=True)

Weights = weights_option("classify")
Tta = Annotated[str, typer.Option("--tta", help="test-time augmentation: auto (what the weights record: flip when "
                                  "training mirrored images, d8 where it scored higher on val), flip (the mean of the logits "
                                  "of each image and its mirror image), d8 (of its 8 symmetries: quarter turns and mirrors), none")]


@config_command(app, "train", TrainConfig, "Train a classifier on an ImageFolder dataset (or --data digits).")
def classify_train(cfg: TrainConfig, explicit: set[str]) -> None:
    from cnnkit.tasks.classify.api import train

    train(cfg, explicit)


@app.command("val")
@pixel_limited
def classify_val(
    weights: Weights = ...,
    data: str = typer.Option("digits", "--data", help="dataset root or built-in name"),
    split: Split = "val",
    out: ValOut = None,
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
    tta: Tta = "auto",
) -> None:
    """Evaluate weights on a dataset split: metrics.json, plots and report.html."""
    from cnnkit.tasks.classify.api import Classifier

    Classifier.load(weights).val(data, split=split, out=out, batch=batch, device=device, workers=workers, tta=tta)


@app.command("predict")
@pixel_limited
@takes_sources()
def classify_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="images, folders or glob patterns (quote globs)"),
    weights: Weights = ...,
    topk: int = typer.Option(5, "--topk", help="how many classes to list per image"),
    batch: Batch = 32,
    device: Device = "auto",
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file","label","score","topk"}] to this file'),
    tta: Tta = "auto",
) -> None:
    """Classify images and print a table (and JSON with --save-json)."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.tasks.classify.api import Classifier
    from cnnkit.console import console
    from cnnkit.engine.rundir import write_json

    results = Classifier.load(weights).predict(sources, topk=topk, batch=batch, device=device, tta=tta)
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

    from cnnkit.tasks.classify.features import list_layers

    table = Table("layer", "type", "output (C, H, W)")
    for name, kind, shape in list_layers(clf.model, clf.imgsz):
        table.add_row(name, kind, " x ".join(map(str, shape)))
    Console().print(table)  # stdout: results; messages go to stderr


@app.command("features")
@pixel_limited
@takes_sources(required=False)  # --layers list needs none
def classify_features(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="image folders, files or glob patterns "
                                                  "(quote globs)"),
    weights: Weights = ...,
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE.npz", help="the .npz to write: features [N, D], files [N], labels [N] when the folders name the classes"),
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
    layers: Optional[str] = typer.Option(None, "--layers", metavar="A,B|list", help="comma-separated module names whose outputs are also saved, "
                                         "as layer:NAME [N, C, H, W] float16; 'list' prints the usable names"),
) -> None:
    """Pooled features (the classifier's input) of every image, saved as an .npz for search, clustering or probes."""
    from cnnkit.tasks.classify.api import Classifier
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


@app.command("explain")
@pixel_limited
@takes_sources(required=False)  # --layers list needs none
def classify_explain(
    sources: Optional[list[str]] = typer.Argument(None, metavar="IMAGE", help="images, folders or glob patterns (quote globs)"),
    weights: Weights = ...,
    target: Optional[str] = typer.Option(None, "--target", metavar="CLASS", help="class to explain, by name or index (default: the predicted class)"),
    out: Path = typer.Option(Path("runs/classify/explain"), "--out", metavar="DIR", help="folder for a PNG per image, at the "
                             "image's path below the folder or glob it came from (created)"),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="A,B,C|list", help="comma-separated module names whose strongest "
                                         "channels are shown (default: an early, a middle and the last conv stage); 'list' prints the usable names"),
    device: Device = "auto",
) -> None:
    """Explain predictions: per image a PNG with the input, the Grad-CAM heatmap of the predicted (or --target)
    class and the strongest feature maps of an early, a middle and a late layer."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.tasks.classify.api import Classifier
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
