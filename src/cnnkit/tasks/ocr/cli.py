"""`cnnkit ocr train|val|predict`: text-line recognition (CRNN) and text detection on pages (DBNet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cnnkit.cli.options import Batch, Device, Split, ValOut, Workers, config_command, pixel_limited, takes_sources
from cnnkit.errors import CnnkitError
from cnnkit.tasks.ocr.config import OcrConfig

app = typer.Typer(help="Text recognition (OCR): lines (CRNN) and pages (DBNet detection, then recognition): train, val, predict.",
                  no_args_is_help=True)

Beam = Annotated[int, typer.Option("--beam", min=0, help="CTC decoding: beam width of a prefix beam search (0 = greedy)")]
Det = Annotated[Optional[Path], typer.Option("--det", help="weights of an `ocr train --model dbnet` run (the text detector)")]
Rec = Annotated[Optional[Path], typer.Option("--rec", help="weights of an `ocr train --model crnn|crnn_conv` run (the recogniser)")]


@config_command(app, "train", OcrConfig, "Train a CRNN text-line recogniser with CTC on ROOT/train/labels.tsv (PATH<TAB>TEXT), "
                "or with --model dbnet a text detector on ROOT/train/det_labels.tsv.")
def ocr_train(cfg: OcrConfig, explicit: set[str]) -> None:
    from cnnkit.runner import resolve_run, train

    if cfg.resume:  # the interrupted run's config.yaml says which model it trains
        cfg = resolve_run(cfg, explicit, "ocr")[0]
    if cfg.model == "dbnet":
        from cnnkit.tasks.ocr.detector import DET_RECIPE as recipe
    else:
        from cnnkit.tasks.ocr.api import OCR_RECIPE as recipe
    train(cfg, explicit, recipe)


def _load(path: Path) -> Any:
    """A TextRecognizer or a TextDetector, as the file's metadata says."""
    from cnnkit import tasks

    return tasks.load(path, command_task="ocr")


def _is_detector(model: Any) -> bool:
    from cnnkit.tasks.ocr.detector import TextDetector

    return isinstance(model, TextDetector)


def _role(path: Path | None, detector: bool, flag: str) -> Any:
    """The model of ``path`` checked for its role: --det needs a detector, --rec a recogniser."""
    if path is None:
        return None
    model = _load(path)
    if _is_detector(model) != detector:
        want, got = ("a text detector (dbnet)", "a recogniser") if detector else ("a recogniser (crnn)", "a text detector")
        raise CnnkitError(f"{flag} {path}: {got}'s weights, not {want}'s", "--det takes dbnet weights, --rec crnn weights")
    return model


@app.command("val")
@pixel_limited
def ocr_val(
    weights: Path = typer.Option(..., "--weights", help="weights of an ocr run: a recogniser (lines) or a detector (pages)"),
    data: str = typer.Option(..., "--data", help="a folder with SPLIT/labels.tsv (lines) or SPLIT/det_labels.tsv (pages)"),
    split: Split = "val",
    out: ValOut = None,
    batch: Batch = 32,
    device: Device = "auto",
    workers: Workers = 2,
    beam: Beam = 0,
    rec: Rec = None,
) -> None:
    """Lines: character and word error rates and line accuracy (report.html with the worst lines). Pages (detector
    weights): precision, recall and hmean at IoU 0.5, and with --rec the end-to-end CER."""
    model = _load(weights)
    if _is_detector(model):
        model.val(data, split, out, device=device, workers=workers, rec=_role(rec, False, "--rec"))
        return
    if rec is not None:
        raise CnnkitError("--rec goes with detector weights", "give --weights the dbnet run's weights to score pages")
    model.val(data, split, out, batch=batch, device=device, workers=workers, beam=beam)


@app.command("predict")
@pixel_limited
@takes_sources()
def ocr_predict(
    sources: Optional[list[str]] = typer.Argument(None, metavar="SOURCE", help="page or line images, folders or glob patterns (quote globs)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="a recogniser's weights: each image is read as one line "
                                           "(a detector's: the same as --det)"),
    det: Det = None,
    rec: Rec = None,
    lines: bool = typer.Option(False, "--lines", help="each image is one text line: recognise it, no detection"),
    batch: Batch = 32,
    device: Device = "auto",
    beam: Beam = 0,
    out: Optional[Path] = typer.Option(None, "--out", help="pages: write an overlay of boxes and text per page as OUT/overlays/NAME.png"),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help='lines: [{"file","text","score"}]; pages: [{"file", "lines": '
                                             '[{"points","text","score"}]}] in reading order'),
) -> None:
    """Read text. Pages by default: detect the lines, order them, rectify and read each; --lines (or --weights with a
    recogniser) reads each image as one line. Without weights, the detector and recogniser cnnkit ships."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.console import console
    from cnnkit.engine.rundir import write_json
    from cnnkit.tasks.ocr.shipped import shipped_detector, shipped_recognizer

    given = _load(weights) if weights is not None else None
    if given is not None and _is_detector(given):
        if det is not None:
            raise CnnkitError("--weights and --det both name a detector", "give one of them")
        det, given = weights, None
    if given is not None and rec is not None:
        raise CnnkitError("--weights and --rec both name a recogniser", "give one of them")
    recognizer = given or _role(rec, False, "--rec")
    if lines and det is not None:
        raise CnnkitError("--lines reads each image as one line, so a detector has nothing to do", "leave out --lines or the detector")
    if lines or (given is not None and det is None):
        recognizer = recognizer or shipped_recognizer()
        results = recognizer.predict(sources, batch=batch, device=device, beam=beam)
        table = Table("text", "score", "file")
        for r in results:
            table.add_row(r["text"], f"{r['score']:.3f}", r["file"])
    else:
        detector = _role(det, True, "--det") or shipped_detector()
        recognizer = recognizer or shipped_recognizer()
        results = detector.predict(sources, device=device, rec=recognizer, out=out, beam=beam)
        table = Table("file", "line", "text", "score")
        for r in results:
            for k, line in enumerate(r["lines"], start=1):
                table.add_row(r["file"], str(k), line["text"], f"{line['score']:.3f}")
            if not r["lines"]:
                table.add_row(r["file"], "-", "(no text found)", "")
    Console().print(table)  # stdout: results; progress and messages go to stderr
    if save_json:
        write_json(save_json, results)
        console.print(f"{len(results)} results written to {save_json}")
