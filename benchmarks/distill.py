"""Does distillation help? A student trained alone against the same student distilled from a teacher,
over several seeds, on the same data, epochs and settings.

    python benchmarks/distill.py [--teacher-model resnet18] [--student tiny_cnn] [--seeds 0 1 2]
                                 [--epochs 10] [--batch 64] [--train-fraction 1.0] [--temperature 4] [--alpha 0.9]

The teacher (resnet18 at 32 px by default) is trained once on `digits`; each student run (tiny_cnn at
16 px) is trained alone (`cnnkit classify train`) and distilled (`cnnkit distill`) with every other
option equal. --train-fraction keeps that share of the training images (per class, fixed seed) for
the students (the teacher learns from all of them, as a larger model trained elsewhere would), the
regime where a teacher's soft targets matter most. Prints a table of test top-1 (mean and
sample standard deviation over seeds), parameters and batch-1 latency (median of 50 on this CPU), and
the ratio distilled / alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch


def latency_ms(model: torch.nn.Module, imgsz: int, runs: int = 50) -> float:
    from cnnkit.compress.bench import time_calls

    return statistics.median(time_calls(model.eval(), torch.rand(1, 3, imgsz, imgsz), runs, warmup=10)) * 1000


def subset(root: Path, fraction: float, out: Path, seed: int = 0) -> Path:
    """A copy of an ImageFolder dataset keeping ``fraction`` of each class's training images."""
    import random

    if fraction >= 1.0:
        return root
    for split_dir in root.iterdir():
        if not split_dir.is_dir():
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())
            if split_dir.name == "train":
                files = random.Random(seed).sample(files, max(1, round(len(files) * fraction)))
            target = out / split_dir.name / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.copy2(f, target / f.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-model", default="resnet18")
    parser.add_argument("--teacher-imgsz", type=int, default=32)
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student", default="tiny_cnn")
    parser.add_argument("--imgsz", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="the students' batch size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    from cnnkit import Classifier, distill
    from cnnkit.data.builtin import resolve_data

    torch.set_num_threads(2)
    work = Path(args.out or tempfile.mkdtemp(prefix="cnnkit_distill_"))
    full = resolve_data("digits")
    data = str(subset(full, args.train_fraction, work / "data"))  # the students' data; the teacher learns from all of it
    common = dict(lr=0.003, fliplr=0.0, workers=0)
    teacher_weights = work / "teacher" / "weights" / "best.safetensors"
    if not teacher_weights.is_file():
        Classifier(args.teacher_model).train(str(full), epochs=args.teacher_epochs, imgsz=args.teacher_imgsz,
                                             out=str(work / "teacher"), batch=64, **common)
    teacher_metrics = json.loads((work / "teacher" / "metrics.json").read_text())
    rows: dict[str, list[float]] = {"alone": [], "distilled": []}
    for seed in args.seeds:
        alone = Classifier(args.student).train(data, epochs=args.epochs, imgsz=args.imgsz, seed=seed, batch=args.batch,
                                               out=str(work / f"alone_{seed}"), **common)
        kd = distill(teacher_weights, student=args.student, data=data, epochs=args.epochs, imgsz=args.imgsz, seed=seed, batch=args.batch,
                     temperature=args.temperature, alpha=args.alpha, out=str(work / f"distilled_{seed}"), **common)
        rows["alone"].append(alone.metrics["test"]["top1"])
        rows["distilled"].append(kd.metrics["test"]["top1"])
        print(f"seed {seed}: alone {rows['alone'][-1]:.4f}  distilled {rows['distilled'][-1]:.4f}", flush=True)

    teacher = Classifier.load(teacher_weights)
    student = Classifier.load(work / f"distilled_{args.seeds[0]}" / "weights" / "best.safetensors")
    params = {name: sum(p.numel() for p in clf.model.parameters()) for name, clf in (("teacher", teacher), ("student", student))}
    latency = {"teacher": latency_ms(teacher.model, args.teacher_imgsz), "student": latency_ms(student.model, args.imgsz)}

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    print(f"\ndigits, {args.train_fraction:.0%} of train, {args.epochs} student epochs at batch {args.batch}, T={args.temperature:g}, alpha={args.alpha:g}, "
          f"seeds {args.seeds}")
    print("| model | test top-1 | parameters | latency, batch 1 |\n| --- | --- | --- | --- |")
    print(f"| teacher {args.teacher_model} @{args.teacher_imgsz}px | {teacher_metrics['test']['top1']:.4f} | "
          f"{params['teacher'] / 1e6:.2f} M | {latency['teacher']:.2f} ms |")
    for name in ("alone", "distilled"):
        print(f"| student {args.student} @{args.imgsz}px, {name} | {spread(rows[name])} | {params['student'] / 1e6:.3f} M | "
              f"{latency['student']:.2f} ms |")
    wins = sum(d > a for a, d in zip(rows["alone"], rows["distilled"]))
    print(f"distilled / alone test top-1: {statistics.mean(rows['distilled']) / statistics.mean(rows['alone']):.4f} "
          f"(distilled better in {wins} of {len(args.seeds)} seeds)")
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
