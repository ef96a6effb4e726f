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
from typing import Any, Callable, Optional, get_type_hints

import typer

from cnnkit import __version__
from cnnkit.config import TrainConfig, read_yaml_options
from cnnkit.errors import CnnkitError

app = typer.Typer(help="cnnkit: the whole CNN computer-vision workflow in one tool.", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)
classify_app = typer.Typer(help="Image classification: train, val, predict.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: check.", no_args_is_help=True)
app.add_typer(classify_app, name="classify")
app.add_typer(data_app, name="data")


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
            annotation = hint if hint in (int, float, str, bool) else Optional[str]
            if choices:  # typer shows and checks the allowed values of an Enum
                annotation = enum.Enum(f"{f.name}_choice", {c: c for c in choices}, type=str)
            if hint is bool:
                option = typer.Option(f.default, f"--{flag}/--no-{flag}", **kwargs)
            else:
                option = typer.Option(f.default, f"--{flag}", **kwargs)
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


@classify_app.command("val")
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
def classify_predict(
    sources: list[str] = typer.Argument(..., help="images, folders or glob patterns (quote globs)"),
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


@classify_app.command("features")
def classify_features(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify run"),
    source: Optional[list[str]] = typer.Option(None, "--source", metavar="DIR|FILE|GLOB", help="image folder, file or glob pattern (quote globs); repeat for more"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE.npz", help="the .npz to write: features [N, D], files [N], labels [N] when the folders name the classes"),
    batch: int = typer.Option(64, "--batch", min=1, help="batch size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps"),
    workers: int = typer.Option(2, "--workers", min=0, help="data-loading worker processes"),
    layers: Optional[str] = typer.Option(None, "--layers", metavar="A,B|list", help="comma-separated module names whose outputs are also saved, "
                                         "as layer:NAME [N, C, H, W] float16; 'list' prints the usable names"),
) -> None:
    """Pooled features (the classifier's input) of every image, saved as an .npz for search, clustering or probes."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.api import Classifier
    from cnnkit.console import console
    from cnnkit.tasks.features import list_layers

    clf = Classifier.load(weights)
    if layers is not None and layers.strip() == "list":
        table = Table("layer", "type", "output (C, H, W)")
        for name, kind, shape in list_layers(clf.model, clf.imgsz):
            table.add_row(name, kind, " x ".join(map(str, shape)))
        Console().print(table)  # stdout: results; messages go to stderr
        return
    if not source:
        raise CnnkitError("missing --source", "pass --source DIR or --source 'GLOB' (repeatable)")
    if out is None or out.is_dir():
        raise CnnkitError(f"--out {out}: is a folder" if out else "missing --out", "pass --out FILE.npz")
    names = [n.strip() for n in (layers or "").split(",") if n.strip()]
    arrays = clf.features(source, out, layers=names, batch=batch, device=device, workers=workers)
    n, dims = arrays["features"].shape
    notes = ["labels from class folders" if "labels" in arrays else "no labels (files are not in class folders)"]
    if names:
        notes.append(f"layers {', '.join(names)}")
    console.print(f"{n} images, {dims} dims, {'; '.join(notes)}: written to {out}", soft_wrap=True, markup=False)


@data_app.command("check")
def data_check(
    root: str = typer.Argument(..., help="dataset root (ImageFolder layout) or built-in name"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout instead of tables"),
) -> None:
    """Check a dataset: counts per split and class, imbalance, sizes and modes, unreadable files,
    duplicates across splits. Exits 2 when it finds errors."""
    from cnnkit.data.builtin import resolve_data
    from cnnkit.data.check import check_imagefolder, print_report

    report = check_imagefolder(resolve_data(root), progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if report.has_errors():
        raise typer.Exit(2)


@app.command("models")
def list_models(pattern: str = typer.Argument("", help="only names containing this text")) -> None:
    """List model names: cnnkit's own, timm's, and torchvision's (as tv:NAME)."""
    from cnnkit import registry

    for name in registry.all_names():
        if pattern in name:
            typer.echo(name)


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
