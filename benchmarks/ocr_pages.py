"""Whole pages: cnnkit's DBNet detector + CRNN recogniser against Tesseract 5 and RapidOCR (PP-OCR's detector and
recogniser), in one run, on synthetic pages drawn in font families held out of training.

    python benchmarks/ocr_pages.py --rec runs/bench_ocr/run/weights/best.safetensors --peer-python .venv-ocr/bin/python
    python benchmarks/ocr_pages.py --det D --rec R --peer-python .venv-ocr/bin/python      # no training

1) data (in --work, reused when there): `cnnkit data synth text --task det` pages for training in every installed
   family but the held-out ones, and test pages drawn only in the held-out families, with another seed.
2) training (unless --det): `TextDetector("dbnet").train`, the one runner, timed.
3) every system reads every test page, one page at a time, on the same machine in the same run:
   - cnnkit: detection, reading order, rectified crops read by --rec (greedy CTC);
   - Tesseract (`--psm 3`, automatic page segmentation; its TSV output's words grouped into its lines, each
     line's box the words' bounding box), one process per page;
   - RapidOCR (pip rapidocr-onnxruntime: PP-OCR's detector and recogniser inside the wheel; the angle
     classifier off, as the pages are upright) in --peer-python (see benchmarks/ocr.py).
   Each system's lines are scored by the same function (cnnkit.tasks.ocr.detect_task.score_page): detection
   precision, recall and hmean at IoU 0.5 (ICDAR 2015's one-to-one matching) and the end-to-end CER (a matched
   line's edit distance, all characters of a missed line, all that a false detection reads).

The issue's targets: hmean >= 0.90 and end-to-end CER <= 4 % on the held-out pages. Results are appended to
--results.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


# ------------------------------------------------------------------------------ peer mode: RapidOCR only

def peer_run(pages_file: Path) -> dict:
    import cv2
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    results, seconds = [], 0.0
    for path in pages_file.read_text(encoding="utf-8").splitlines():
        image = cv2.imread(path)
        started = time.perf_counter()
        found, _ = engine(image, use_det=True, use_cls=False, use_rec=True)
        seconds += time.perf_counter() - started
        results.append([{"points": [[float(x), float(y)] for x, y in box], "text": text} for box, text, _ in (found or [])])
    return {"pages": results, "seconds": seconds}


# ------------------------------------------------------------------------------ the benchmark

def run_cnnkit(det_weights: Path, rec_weights: Path, pages, threads: int) -> dict:
    import numpy as np
    import torch

    from cnnkit.tasks.ocr.api import TextRecognizer
    from cnnkit.tasks.ocr.detect_data import read_page
    from cnnkit.tasks.ocr.detect_post import reading_order
    from cnnkit.tasks.ocr.detector import TextDetector
    from cnnkit.tasks.ocr.pages import read_lines

    torch.set_num_threads(threads)
    det, rec = TextDetector.load(det_weights), TextRecognizer.load(rec_weights)
    results, seconds = [], 0.0
    for page in pages:
        image = read_page(page.path)
        started = time.perf_counter()
        quads, _ = det.detect(image, "cpu")
        quads = quads[reading_order(quads)] if len(quads) else quads
        readings = [text for text, _ in read_lines(rec, image, quads, "cpu")]
        seconds += time.perf_counter() - started
        results.append([{"points": np.asarray(q).tolist(), "text": t} for q, t in zip(quads, readings)])
    return {"pages": results, "seconds": seconds}


def run_tesseract(pages) -> dict:
    if shutil.which("tesseract") is None:
        return {"error": "tesseract is not installed (apt-get install tesseract-ocr)"}
    results, seconds = [], 0.0
    for page in pages:
        started = time.perf_counter()
        done = subprocess.run(["tesseract", str(page.path), "stdout", "--psm", "3", "-l", "eng", "tsv"], capture_output=True, text=True)
        seconds += time.perf_counter() - started
        lines: dict[tuple, list] = {}
        for row in csv.DictReader(io.StringIO(done.stdout), delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") == "5" and row.get("text", "").strip():
                key = (row["block_num"], row["par_num"], row["line_num"])
                lines.setdefault(key, []).append(row)
        found = []
        for words in lines.values():
            x0 = min(int(w["left"]) for w in words)
            y0 = min(int(w["top"]) for w in words)
            x1 = max(int(w["left"]) + int(w["width"]) for w in words)
            y1 = max(int(w["top"]) + int(w["height"]) for w in words)
            found.append({"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "text": " ".join(w["text"] for w in words)})
        results.append(found)
    return {"pages": results, "seconds": seconds}


def run_rapidocr(peer_python: str | None, pages, work: Path) -> dict:
    if not peer_python:
        return {"error": "no --peer-python with rapidocr-onnxruntime"}
    listing = work / "test_pages.txt"
    listing.write_text("\n".join(str(p.path.resolve()) for p in pages) + "\n", encoding="utf-8")
    done = subprocess.run([peer_python, __file__, "--peer-run", str(listing)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"RapidOCR run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(run: dict, pages) -> dict:
    import numpy as np

    from cnnkit.tasks.ocr.detect_data import DONT_CARE
    from cnnkit.tasks.ocr.detect_post import detection_scores
    from cnnkit.tasks.ocr.detect_task import score_page

    total = {"tp": 0, "predicted": 0, "truths": 0, "char_errors": 0, "chars": 0}
    for found, page in zip(run["pages"], pages):
        quads = np.asarray([f["points"] for f in found], np.float32).reshape(-1, 4, 2)
        counts = score_page(quads, page.polygons, [t == DONT_CARE for t in page.texts], [f["text"] for f in found], page.texts)
        total = {k: total[k] + counts[k] for k in total}
    return {**detection_scores(total["tp"], total["predicted"], total["truths"]),
            "end_to_end_cer": total["char_errors"] / max(total["chars"], 1), "ms_per_page": 1000 * run["seconds"] / len(pages),
            "lines": total["truths"], "detections": total["predicted"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/bench_ocr_pages", help="data, the training run and the results (reused)")
    parser.add_argument("--train-pages", type=int, default=1000)
    parser.add_argument("--test-pages", type=int, default=200)
    parser.add_argument("--held-out", default="Liberation*,Nimbus*", help="font families kept out of training (patterns)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and reading")
    parser.add_argument("--det", help="a trained text detector: skip the training")
    parser.add_argument("--rec", required=False, help="the recogniser (default: the one cnnkit ships)")
    parser.add_argument("--peer-python", help="an interpreter with rapidocr-onnxruntime installed")
    parser.add_argument("--peer-run", help=argparse.SUPPRESS)
    parser.add_argument("--results", default="benchmarks/results/ocr_pages.jsonl")
    args = parser.parse_args()
    if args.peer_run:
        print(json.dumps(peer_run(Path(args.peer_run))))
        return

    import torch

    from cnnkit.data.synth_text_pages import synth_text_pages
    from cnnkit.engine.trainer import cpu_runs_bf16  # amp=True trains in bf16 only where this is true
    from cnnkit.tasks.ocr.detect_data import read_det_labels
    from cnnkit.tasks.ocr.shipped import RECOGNIZER

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    excluded = ",".join("!" + p.strip() for p in args.held_out.split(",") if p.strip())
    train_root, test_root = work / "train_pages", work / "test_pages"
    det = Path(args.det) if args.det else work / "run" / "weights" / "best.safetensors"
    rec = Path(args.rec) if args.rec else RECOGNIZER
    if not det.is_file() and not (train_root / "val" / "det_labels.tsv").is_file():
        synth_text_pages(train_root, n=args.train_pages, fonts=excluded, val_fraction=0.1, seed=0, force=True)
    if not (test_root / "val" / "det_labels.tsv").is_file():
        synth_text_pages(test_root, n=args.test_pages, fonts=args.held_out, val_fraction=0.5, seed=1, force=True)
    train_seconds = None
    if not args.det and not det.is_file():
        from cnnkit.tasks.ocr.detector import TextDetector

        started = time.perf_counter()
        TextDetector("dbnet").train(str(train_root), epochs=args.epochs, lr=args.lr, workers=args.workers, out=str(work / "run"),
                                    amp=True, channels_last=True)
        train_seconds = time.perf_counter() - started
    pages = [p for split in ("train", "val") for p in read_det_labels(test_root / split / "det_labels.tsv")]
    runs = {"cnnkit": run_cnnkit(det, rec, pages, args.threads), "tesseract": run_tesseract(pages),
            "rapidocr": run_rapidocr(args.peer_python, pages, work)}
    table = {}
    print(f"\n{len(pages)} test pages in the held-out families ({args.held_out}); one page at a time")
    print(f"{'system':10s} {'hmean':>7s} {'prec.':>7s} {'recall':>7s} {'e2e CER':>8s} {'ms/page':>8s}")
    for name, run in runs.items():
        if "error" in run:
            print(f"{name:10s} skipped: {run['error']}")
            continue
        table[name] = score(run, pages)
        t = table[name]
        print(f"{name:10s} {t['hmean']:7.4f} {t['precision']:7.4f} {t['recall']:7.4f} {t['end_to_end_cer']:8.4f} {t['ms_per_page']:8.1f}")
    ratios = {f"e2e_cer_vs_{peer}": table["cnnkit"]["end_to_end_cer"] / max(table[peer]["end_to_end_cer"], 1e-9)
              for peer in ("tesseract", "rapidocr") if peer in table}
    if "rapidocr" in table:
        ratios["time_vs_rapidocr"] = table["cnnkit"]["ms_per_page"] / table["rapidocr"]["ms_per_page"]
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    row = {"date": datetime.date.today().isoformat(), "held_out": args.held_out, "test_pages": len(pages),
           "train_pages": args.train_pages, "epochs": args.epochs, "cpu_bf16": cpu_runs_bf16(), "threads": args.threads, "train_seconds": train_seconds,
           "det": args.det or "trained by the script", "rec": args.rec or "shipped", "table": table, "ratios": ratios,
           "python": sys.version.split()[0]}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
