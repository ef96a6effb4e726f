"""The command line's shared pieces: the typer apps of each task, the option helpers every command uses
(config_command: a config dataclass as a command; takes_sources: positional SOURCE… and --source; pixel_limited:
--max-pixels), and the options hand-written commands share, each declared once (Device, Workers, Batch, Split,
ValOut, weights_option): `device: Device = "auto"`."""

from __future__ import annotations

import enum
import inspect
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, get_args, get_type_hints

import typer

from cnnkit.config import MAX_PIXELS, TrainOptions, read_yaml_options
from cnnkit.errors import CnnkitError
from cnnkit.version import __version__


app = typer.Typer(help="cnnkit: the whole CNN computer-vision workflow in one tool.", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)
# each task's command group (`cnnkit classify …`) is the `app` of its tasks/<task>/cli.py, mounted by cli/__init__.py
data_app = typer.Typer(help="Datasets: check, convert, synth.", no_args_is_help=True)
augment_app = typer.Typer(help="Augmentation: preview a preset or any mix of operations on a dataset.", no_args_is_help=True)


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


# ---------------------------------------------------------------- options the hand-written commands share
# Declared once here, used as `device: Device = "auto"` (the default stays at the use site, as typer's Annotated
# style wants it). Flags, defaults and meaning are those every command had; a command whose option means something
# else (detect predict's --batch of video frames, quantize's --batch for qat) declares its own.

# --device reads as training's --device (a config field, so one text for every command that picks a device)
DEVICE_HELP = next(f for f in fields(TrainOptions) if f.name == "device").metadata["help"]
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Workers = Annotated[int, typer.Option("--workers", min=0, help="data-loading worker processes")]
Batch = Annotated[int, typer.Option("--batch", min=1, help="batch size")]
Split = Annotated[str, typer.Option("--split", help="split to evaluate: train, val or test")]
ValOut = Annotated[Optional[Path], typer.Option("--out", help="output folder (default: val/ beside the weights' run)")]
# tracking's sequences: a MOTChallenge root holds train/ and test/ folders of sequences, no val
SequenceSplit = Annotated[str, typer.Option("--split", help="split of a MOTChallenge root with train/ and test/: train, test, "
                                            "all (every sequence), or auto (test when the root has one, else all)")]


def weights_option(task: str) -> Any:
    """--weights FILE of a `task` run, required (give it the default `...`, which keeps it required when an
    optional parameter comes first): `Weights = weights_option("classify")`, then `weights: Weights = ...`."""
    return Annotated[Path, typer.Option("--weights", help=f"weights/best.safetensors of a {task} run")]


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


def _check_postprocess(conf: float, iou: float, max_det: int) -> None:
    if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0 or max_det < 1:
        raise CnnkitError(f"--conf must be in [0, 1], --iou in (0, 1] and --max-det at least 1; got {conf}, {iou}, {max_det}")
