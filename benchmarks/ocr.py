"""cnnkit's CRNN text-line recogniser against Tesseract 5 and RapidOCR (PP-OCR's recogniser), in one run.

    python benchmarks/ocr.py --peer-python .venv-ocr/bin/python                 # data, training, the table
    python benchmarks/ocr.py --weights runs/bench_ocr/run/weights/best.safetensors --peer-python .venv-ocr/bin/python

1) data (in --work, reused when there): `cnnkit data synth text` lines for training in every installed family
   but the held-out ones (--held-out, shell patterns of family names), and test lines drawn only in the
   held-out families with another seed: fonts the recogniser never saw.
2) training (unless --weights): `TextRecognizer(--model).train`, i.e. the one runner, timed; from scratch, or
   with --init from a recogniser (fine-tuning, its charset kept).
3) every recogniser reads every test line, one line at a time, on the same machine in the same run:
   - cnnkit: greedy CTC decoding, --threads torch threads;
   - Tesseract (Debian's tesseract-ocr, `--psm 7`: the image is one text line), one process per line as its
     command line runs it (the process start is in its time: it is how Tesseract is called from Python);
   - RapidOCR (pip rapidocr-onnxruntime: PP-OCR's recognition model inside the wheel, ONNX Runtime),
     recognition only (no detection, no angle classifier), in --peer-python: it pulls the GUI build of
     OpenCV, so it lives in its own venv (``python3 -m venv .venv-ocr && .venv-ocr/bin/pip install
     rapidocr-onnxruntime``). This script runs itself there with --peer-run.
   CER, WER and line accuracy (cnnkit.evaluate.text, jiwer's definitions) and milliseconds per line.

The issue's targets: cnnkit's CER <= 2 % on the held-out fonts, lower than both peers', at less time per line
than RapidOCR's. Results are appended to --results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


# ------------------------------------------------------------------------------ peer mode: RapidOCR only

def peer_run(lines_file: Path) -> dict:
    import cv2
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    rows = [line.split("\t", 1) for line in lines_file.read_text(encoding="utf-8").splitlines() if line]
    readings, seconds = [], 0.0
    for path, _ in rows:
        image = cv2.imread(path)
        started = time.perf_counter()
        result, _ = engine(image, use_det=False, use_cls=False, use_rec=True)
        seconds += time.perf_counter() - started
        readings.append(result[0][0] if result else "")
    return {"readings": readings, "seconds": seconds}


# ------------------------------------------------------------------------------ the benchmark

def test_lines(root: Path) -> list[tuple[Path, str]]:
    from cnnkit.tasks.ocr.data import read_labels

    return [(line.path, line.text) for split in ("train", "val") for line in read_labels(root / split / "labels.tsv")]


def run_cnnkit(weights: Path, lines, threads: int) -> dict:
    import torch

    from cnnkit.tasks.ocr.api import TextRecognizer
    from cnnkit.tasks.ocr.data import read_line

    torch.set_num_threads(threads)
    rec = TextRecognizer.load(weights)
    readings, seconds = [], 0.0
    for path, _ in lines:
        image = read_line(path, rec.imgsz, rec.max_width)
        started = time.perf_counter()
        text, _ = rec.read([image], device="cpu")[0]
        seconds += time.perf_counter() - started
        readings.append(text)
    return {"readings": readings, "seconds": seconds}


def run_tesseract(lines) -> dict:
    if shutil.which("tesseract") is None:
        return {"error": "tesseract is not installed (apt-get install tesseract-ocr)"}
    readings, seconds = [], 0.0
    for path, _ in lines:
        started = time.perf_counter()
        done = subprocess.run(["tesseract", str(path), "stdout", "--psm", "7", "-l", "eng"], capture_output=True, text=True)
        seconds += time.perf_counter() - started
        readings.append(done.stdout.strip())
    return {"readings": readings, "seconds": seconds}


def run_rapidocr(peer_python: str | None, lines, work: Path) -> dict:
    if not peer_python:
        return {"error": "no --peer-python with rapidocr-onnxruntime"}
    listing = work / "test_lines.tsv"
    listing.write_text("\n".join(f"{p.resolve()}\t{t}" for p, t in lines) + "\n", encoding="utf-8")
    done = subprocess.run([peer_python, __file__, "--peer-run", str(listing)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"RapidOCR run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/bench_ocr", help="data, the training run and the results (reused)")
    parser.add_argument("--train-lines", type=int, default=20000)
    parser.add_argument("--test-lines", type=int, default=500)
    parser.add_argument("--held-out", default="Liberation*,Nimbus*", help="font families kept out of training (patterns)")
    parser.add_argument("--model", default="crnn_conv")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-amp", action="store_true", help="train in float32 (default: bf16 autocast and channels_last, "
                        "2.4x the float32 speed on a CPU with AVX-512 bf16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and reading")
    parser.add_argument("--weights", help="a trained recogniser: skip the training")
    parser.add_argument("--init", help="start the training from this recogniser (fine-tuning; its charset is kept)")
    parser.add_argument("--peer-python", help="an interpreter with rapidocr-onnxruntime installed")
    parser.add_argument("--peer-run", help=argparse.SUPPRESS)
    parser.add_argument("--results", default="benchmarks/results/ocr.jsonl")
    args = parser.parse_args()
    if args.peer_run:
        print(json.dumps(peer_run(Path(args.peer_run))))
        return

    import torch

    from cnnkit.data.synth_text import synth_text_lines
    from cnnkit.engine.trainer import cpu_runs_bf16  # --amp trains in bf16 only where this is true
    from cnnkit.evaluate.text import text_scores

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    excluded = ",".join("!" + p.strip() for p in args.held_out.split(",") if p.strip())
    train_root, test_root = work / "train_lines", work / "test_lines"
    weights = Path(args.weights) if args.weights else work / "run" / "weights" / "best.safetensors"
    if not weights.is_file() and not (train_root / "val" / "labels.tsv").is_file():
        synth_text_lines(train_root, n=args.train_lines, fonts=excluded, val_fraction=0.05, seed=0, force=True)
    if not (test_root / "val" / "labels.tsv").is_file():
        synth_text_lines(test_root, n=args.test_lines, fonts=args.held_out, val_fraction=0.5, seed=1, force=True)
    train_seconds = None
    if not args.weights and not weights.is_file():
        from cnnkit.tasks.ocr.api import TextRecognizer

        start = {}
        if args.init:  # the charset file keeps the head's classes in the order the weights have them
            charset = work / "charset.txt"
            charset.write_text("".join(TextRecognizer.load(args.init).class_names), encoding="utf-8")
            # the same task on new data: every layer at --lr (the transfer default keeps a backbone at 0.1 x)
            start = {"weights": args.init, "charset": str(charset), "backbone_lr_mult": 1.0}
        started = time.perf_counter()
        TextRecognizer(args.model).train(str(train_root), epochs=args.epochs, batch=args.batch, lr=args.lr,
                                         workers=args.workers, out=str(work / "run"), amp=not args.no_amp,
                                         channels_last=not args.no_amp, **start)
        train_seconds = time.perf_counter() - started
    lines = test_lines(test_root)
    truths = [t for _, t in lines]
    runs = {"cnnkit": run_cnnkit(weights, lines, args.threads), "tesseract": run_tesseract(lines),
            "rapidocr": run_rapidocr(args.peer_python, lines, work)}
    table = {}
    print(f"\n{len(lines)} test lines in the held-out families ({args.held_out}); one line at a time")
    print(f"{'recogniser':12s} {'CER':>7s} {'WER':>7s} {'lines':>7s} {'ms/line':>8s}")
    for name, run in runs.items():
        if "error" in run:
            print(f"{name:12s} skipped: {run['error']}")
            continue
        scores = text_scores(run["readings"], truths)
        table[name] = {**scores, "ms_per_line": 1000 * run["seconds"] / len(lines)}
        print(f"{name:12s} {scores['cer']:7.4f} {scores['wer']:7.4f} {scores['line_accuracy']:7.3f} {table[name]['ms_per_line']:8.2f}")
    ratios = {}
    for peer in ("tesseract", "rapidocr"):
        if peer in table:
            ratios[f"cer_vs_{peer}"] = table["cnnkit"]["cer"] / max(table[peer]["cer"], 1e-9)
    if "rapidocr" in table:
        ratios["time_vs_rapidocr"] = table["cnnkit"]["ms_per_line"] / table["rapidocr"]["ms_per_line"]
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    row = {"date": datetime.date.today().isoformat(), "held_out": args.held_out, "test_lines": len(lines),
           "train_lines": args.train_lines, "model": args.model, "epochs": args.epochs, "amp": not args.no_amp, "cpu_bf16": cpu_runs_bf16(), "threads": args.threads,
           "train_seconds": train_seconds, "weights": args.weights or ("fine-tuned by the script from " + args.init if args.init else "trained by the script"), "table": table, "ratios": ratios,
           "python": sys.version.split()[0]}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
