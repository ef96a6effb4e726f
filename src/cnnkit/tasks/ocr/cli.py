"""`cnnkit ocr train|val|predict`: text-line recognition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnkit.cli.options import (Batch, Device, Split, ValOut, Workers, config_command, pixel_limited, takes_sources,
                                weights_option)
from cnnkit.tasks.ocr.config import OcrConfig

app = typer.Typer(help="Text recognition (OCR) of line images: train, val, predict.", no_args_is_help=True)

Weights = weights_option("ocr")
Beam = Annotated[int, typer.Option("--beam", min=0, help="CTC decoding: beam width of a prefix beam search (0 = greedy)")]


@config_command(app, "train", OcrConfig, "Train a CRNN text-line recogniser with CTC on ROOT/train/labels.tsv (PATH<TAB>TEXT).")
def ocr_train(cfg: OcrConfig, explicit: set[str]) -> None:
    from cnnkit.runner import train
    from cnnkit.tasks.ocr.api import OCR_RECIPE

    train(cfg, explicit, OCR_RECIPE)


@app.command("val")
@pixel_limited
def ocr_val(
    weights: Weights = ...,
    data: str = typer.Option(..., "--data", help="a folder with SPLIT/labels.tsv"),
    split: Split = "val",
    out: ValOut = None,
    batch: Batch = 32,
    device: Device = "auto",
    workers: Workers = 2,
    beam: Beam = 0,
) -> None:
    """Character and word error rates and line accuracy (metrics.json; report.html with the worst lines)."""
    from cnnkit.tasks.ocr.api import TextRecognizer

    TextRecognizer.load(weights).val(data, split, out, batch=batch, device=device, workers=workers, beam=beam)


@app.command("predict")
@pixel_limited
@takes_sources()
def ocr_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="line images, folders or glob patterns (quote globs)"),
    weights: Weights = ...,
    batch: Batch = 32,
    device: Device = "auto",
    beam: Beam = 0,
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='write [{"file","text","score"}] to this file'),
) -> None:
    """Read the text of line images and print a table (and JSON with --save-json)."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.console import console
    from cnnkit.engine.rundir import write_json
    from cnnkit.tasks.ocr.api import TextRecognizer

    results = TextRecognizer.load(weights).predict(sources, batch=batch, device=device, beam=beam)
    table = Table("text", "score", "file")
    for r in results:
        table.add_row(r["text"], f"{r['score']:.3f}", r["file"])
    Console().print(table)  # stdout: results; progress and messages go to stderr
    if save_json:
        write_json(save_json, results)
        console.print(f"{len(results)} readings written to {save_json}")
