"""Self-supervised pretraining: do unlabelled images make a few labels go further? (issue: self-supervised learning;
the issue names it benchmarks/ssl.py, but a script named ssl.py in this folder is the standard library's ssl for every
script beside it, and asyncio, which torch imports, needs the real one)

    python benchmarks/ssl_transfer.py --work W [--unlabelled 5000] [--imgsz 32] [--epochs 50] [--methods simclr,byol,vicreg,masked,ae]
                             [--labels 1,10,100] [--seeds 0,1,2] [--finetune-epochs 30] [--only pretrain,source,downstream,throughput]

1. The domain: `cnnkit data synth shapes --task classify` (six shapes on crops of real photos among clutter, uneven light,
   64 px): 100 labelled training images per class, 100 val and 100 test images per class (600 test images), and
   --unlabelled more without labels; a supervised source of six other classes of the same domain (pentagon, hexagon,
   arrow, crescent, ellipse, semicircle), 300 per class.
2. Pretraining: `cnnkit ssl train --data W/objects/unlabelled --method M --epochs E --imgsz S --eval-data W/objects`
   for every method (kNN on val picks the best epoch), timed; the supervised source: `cnnkit classify train
   --data W/source --epochs E --imgsz S`.
3. Downstream, for every backbone (random initialisation, the supervised source, each method), labelled images per
   class L and seed (which L images of each class):
   - knn: top-1 of a 20-nearest-neighbour vote (cosine) of the test images among the L-per-class images' features;
   - linear: logistic regression on the frozen features of the L per class, scored on test;
   - finetune: `cnnkit classify train --data SUBSET --epochs F --imgsz S --backbone-from FILE --seed K` (every other
     option its default; SUBSET = the L per class, with the domain's val and test), test top-1 of its best weights;
     the random row is the same command without --backbone-from (training from scratch).
4. Throughput: one SimCLR epoch through cnnkit against lightly's own minimal loop (its SimCLRTransform, LightlyDataset,
   the same backbone, projection head, NT-Xent, AdamW, batch and worker count), in the same run.

Every measurement is a line of --results (JSON), skipped when the script runs again, so the table can be filled in
pieces; the table and the targets are printed at the end from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SOURCE_CLASSES = ("pentagon", "hexagon", "arrow", "crescent", "ellipse", "semicircle")
MODEL = "small_cnn"


def cnnkit(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cnnkit {' '.join(args)} failed:\n{done.stderr[-2000:]}")


def make_data(work: Path, unlabelled: int) -> tuple[Path, Path]:
    from cnnkit.data.synth_classify import synth_classification

    target, source = work / "objects", work / "source"
    if not (target / "unlabelled").is_dir() or len(list((target / "unlabelled").iterdir())) != unlabelled:
        synth_classification("shapes", target, n=100, eval_n=100, unlabelled=unlabelled, force=True)
    if not (source / "test").is_dir():
        synth_classification("shapes", source, n=300, eval_n=50, classes=list(SOURCE_CLASSES), seed=1, force=True)
    return target, source


def subset(target: Path, per_class: int, seed: int, work: Path) -> Path:
    """An ImageFolder with ``per_class`` training images of every class (chosen by ``seed``) and the domain's val and
    test, as links."""
    root = work / "subsets" / f"L{per_class}_s{seed}"
    if (root / "test").exists():
        return root
    rng = np.random.default_rng(seed)
    for class_dir in sorted((target / "train").iterdir()):
        files = sorted(class_dir.iterdir())
        chosen = [files[i] for i in sorted(rng.choice(len(files), per_class, replace=False))]
        (root / "train" / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in chosen:
            os.symlink(f.resolve(), root / "train" / class_dir.name / f.name)
    for split in ("val", "test"):
        os.symlink((target / split).resolve(), root / split)
    return root


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def features(weights: Path | None, files: list[Path], imgsz: int, seed: int = 0) -> np.ndarray:
    """The pooled features of small_cnn's backbone: from an ssl or classify weights file (--backbone-from's copy), or
    freshly initialised with ``seed``."""
    import torch

    from cnnkit.augment.presets import classify_transforms
    from cnnkit.engine.checkpoint import read_state_dict
    from cnnkit.engine.transfer import load_backbone
    from cnnkit.models.backbones import build_classifier
    from cnnkit.tasks.classify.features import extract_features

    torch.manual_seed(seed)
    net = build_classifier(MODEL, 2)  # with a head for load_backbone to tell apart; the features are its input
    if weights is not None:
        load_backbone(net, read_state_dict(weights), str(weights), MODEL)
    arrays = extract_features(net, files, None, classify_transforms(imgsz, False), 128, 2, torch.device("cpu"), progress=False)
    return arrays["features"]


def labelled(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    classes = sorted(p.name for p in (root / split).iterdir())
    files, labels = [], []
    for k, name in enumerate(classes):
        for f in sorted((root / split / name).iterdir()):
            files.append(f)
            labels.append(k)
    return files, np.array(labels)


def downstream(backbone: str, weights: Path | None, target: Path, args, rows: list[dict], results: Path) -> None:
    from cnnkit.tasks.ssl.task import knn_top1, linear_top1

    test_files, test_labels = labelled(target, "test")
    test_features = None
    for per_class in args.labels:
        for seed in args.seeds:
            done = {r["measure"] for r in rows if r.get("backbone") == backbone and r.get("labels") == per_class
                    and r.get("seed") == seed and r.get("imgsz") == args.imgsz and r.get("kind") == "downstream"}
            root = subset(target, per_class, seed, args.work)
            base = {"kind": "downstream", "backbone": backbone, "labels": per_class, "seed": seed, "imgsz": args.imgsz,
                    "pretrain_epochs": args.epochs, "date": time.strftime("%Y-%m-%d")}
            if not {"knn", "linear"} <= done:
                if test_features is None:
                    test_features = features(weights, test_files, args.imgsz)
                train_files, train_labels = labelled(root, "train")
                train_features = features(weights, train_files, args.imgsz)
                append(results, {**base, "measure": "knn", "top1": knn_top1(train_features, train_labels, test_features, test_labels)})
                append(results, {**base, "measure": "linear", "top1": linear_top1(train_features, train_labels, test_features, test_labels)})
            if "finetune" not in done:
                out = args.work / "runs" / f"ft_{backbone}_L{per_class}_s{seed}_{args.imgsz}"
                started = time.perf_counter()
                if (out / "checkpoint.pt").is_file():  # an interrupted run of this cell: finish it
                    cnnkit("classify", "train", "--resume", "--out", str(out))
                else:
                    cnnkit("classify", "train", "--data", str(root), "--model", MODEL, "--epochs", str(args.finetune_epochs),
                           "--imgsz", str(args.imgsz), "--seed", str(seed), "--out", str(out), "--workers", "2",
                           *(["--backbone-from", str(weights)] if weights is not None else []), *args.finetune_set)
                metrics = json.loads((out / "metrics.json").read_text())
                append(results, {**base, "measure": "finetune", "top1": metrics["test"]["top1"], "val_top1": metrics["top1"],
                                 "minutes": (time.perf_counter() - started) / 60, "options": args.finetune_set})


def pretrain(method: str, target: Path, args, rows: list[dict], results: Path) -> Path:
    out = args.work / "runs" / f"ssl_{method}_{args.imgsz}_e{args.epochs}"
    weights = out / "weights" / "best.safetensors"
    if any(r.get("kind") == "pretrain" and r.get("method") == method and r.get("imgsz") == args.imgsz and r.get("epochs") == args.epochs
           for r in rows) and weights.is_file():
        return weights
    started = time.perf_counter()
    resume = ["--resume"] if (out / "checkpoint.pt").is_file() else []
    cnnkit("ssl", "train", "--data", str(target / "unlabelled"), "--method", method, "--epochs", str(args.epochs), "--imgsz",
           str(args.imgsz), "--eval-data", str(target), "--out", str(out), *resume, *args.ssl_set)
    metrics = json.loads((out / "metrics.json").read_text())
    history = (out / "history.csv").read_text().splitlines()
    seconds = sum(float(line.split(",")[-1]) for line in history[1:]) if history[0].endswith(",time") else None
    append(results, {"kind": "pretrain", "method": method, "imgsz": args.imgsz, "epochs": args.epochs,
                     "unlabelled": args.unlabelled, "knn_top1": metrics["knn_top1"], "linear_top1": metrics["linear_top1"],
                     "feature_std": metrics["feature_std"], "minutes": (time.perf_counter() - started) / 60,
                     "train_minutes": seconds / 60 if seconds else None, "options": args.ssl_set,
                     "date": time.strftime("%Y-%m-%d")})
    return weights


def throughput(target: Path, args, results: Path) -> None:
    """Images per second of a SimCLR epoch (the second of two): cnnkit's engine against lightly's minimal loop."""
    import torch
    from torch.utils.data import DataLoader

    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    from cnnkit.models.backbones import build_classifier

    images = args.work / "throughput"
    if not images.is_dir():
        images.mkdir(parents=True)
        for f in sorted((target / "unlabelled").iterdir())[:args.throughput_images]:
            os.symlink(f.resolve(), images / f.name)
    batch = 128
    out = args.work / "runs" / f"throughput_{time.time():.0f}"
    cnnkit("ssl", "train", "--data", str(images), "--method", "simclr", "--epochs", "2", "--imgsz", str(args.imgsz),
           "--batch", str(batch), "--workers", "2", "--out", str(out))
    header, *lines = (out / "history.csv").read_text().splitlines()
    ours = float(lines[-1].split(",")[header.split(",").index("images_per_s")])

    torch.manual_seed(0)
    backbone = build_classifier(MODEL, 0)
    head = SimCLRProjectionHead(backbone.num_features, 512, 128)
    model = torch.nn.Sequential(backbone, head)
    criterion = NTXentLoss(temperature=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.05)
    transform = SimCLRTransform(input_size=args.imgsz, cj_strength=0.5, min_scale=0.2, random_gray_scale=0.2,
                                gaussian_blur=0.2, vf_prob=0.0, hf_prob=0.5, rr_prob=0.0)
    loader = DataLoader(LightlyDataset(str(images), transform=transform), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=2)
    rates = []
    for _ in range(2):
        seen, started = 0, time.perf_counter()
        model.train()
        for (first, second), _, _ in loader:
            loss = criterion(model(first), model(second))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen += len(first)
        rates.append(seen / (time.perf_counter() - started))
    append(results, {"kind": "throughput", "imgsz": args.imgsz, "images": args.throughput_images, "batch": batch,
                     "cnnkit_images_per_s": ours, "lightly_images_per_s": rates[-1], "ratio": ours / rates[-1],
                     "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")})


def summary(rows: list[dict], args) -> None:
    def mean(backbone: str, measure: str, per_class: int) -> float | None:
        values = [r["top1"] for r in rows if r.get("kind") == "downstream" and r["backbone"] == backbone and r["measure"] == measure
                  and r["labels"] == per_class and r["imgsz"] == args.imgsz and r["seed"] in args.seeds]
        return statistics.mean(values) if len(values) == len(args.seeds) else None

    backbones = ["random", "source", *args.methods]
    minutes = {r["method"]: r["minutes"] for r in rows if r.get("kind") == "pretrain" and r["imgsz"] == args.imgsz
               and r["epochs"] == args.epochs}
    print(f"\ntest top-1 at {args.imgsz} px, mean of seeds {args.seeds} (which labelled images); pretraining {args.epochs} epochs")
    columns = [(m, L) for m in ("knn", "linear", "finetune") for L in args.labels]
    print(f"{'backbone':10s} " + " ".join(f"{m[:4]}@{L:<4d}" for m, L in columns) + "  minutes")
    for b in backbones:
        cells = [mean(b, m, L) for m, L in columns]
        print(f"{b:10s} " + " ".join(f"{c:9.3f}" if c is not None else f"{'—':>9s}" for c in cells)
              + f"  {minutes.get(b, float('nan')):7.1f}")
    scratch, random_linear = mean("random", "finetune", 10), mean("random", "linear", 10)
    best = max(((mean(m, "finetune", 10) or -1.0, m) for m in args.methods), default=(None, None))
    if scratch is not None and best[0] is not None and best[0] >= 0:
        print(f"fine-tuned from {best[1]} at 10 per class: {best[0]:.3f} against {scratch:.3f} from scratch "
              f"(+{100 * (best[0] - scratch):.1f} points; target +15)")
    linear = max(((mean(m, "linear", 10) or -1.0, m) for m in args.methods), default=(None, None))
    if random_linear is not None and linear[0] is not None and linear[0] >= 0:
        print(f"linear probe on {linear[1]} at 10 per class: {linear[0]:.3f} against {random_linear:.3f} on a random backbone "
              f"(+{100 * (linear[0] - random_linear):.1f} points; target +20)")
    source = mean("source", "finetune", 10)
    if scratch is not None and source is not None:
        print(f"fine-tuned from the supervised source at 10 per class: {source:.3f} (+{100 * (source - scratch):.1f} points; target +10)")
    for r in [r for r in rows if r.get("kind") == "throughput"][-1:]:
        print(f"SimCLR throughput: cnnkit {r['cnnkit_images_per_s']:.1f} img/s, lightly's loop {r['lightly_images_per_s']:.1f} "
              f"img/s: ratio {r['ratio']:.3f} (target 0.9)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--unlabelled", type=int, default=5000)
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=50, help="pretraining epochs (and the supervised source's)")
    parser.add_argument("--methods", default="simclr,byol,vicreg,masked,ae")
    parser.add_argument("--labels", default="1,10,100")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--throughput-images", type=int, default=1024)
    parser.add_argument("--only", default="pretrain,source,downstream,throughput")
    parser.add_argument("--ssl-set", default="", help="more `ssl train` options, e.g. '--batch 256 --lr 0.003'")
    parser.add_argument("--finetune-set", default="", help="more `classify train` options for fine-tuning")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "ssl.jsonl")
    parser.add_argument("--summary", action="store_true", help="print the table from --results and stop")
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.labels = [int(x) for x in args.labels.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.ssl_set, args.finetune_set = args.ssl_set.split(), args.finetune_set.split()
    only = set(args.only.split(","))
    rows = load_rows(args.results)
    if args.summary:
        return summary(rows, args)
    args.work.mkdir(parents=True, exist_ok=True)
    target, source = make_data(args.work, args.unlabelled)
    weights: dict[str, Path | None] = {"random": None}
    if "source" in only or "downstream" in only:
        out = args.work / "runs" / f"source_{args.imgsz}_e{args.epochs}"
        if not (out / "weights" / "best.safetensors").is_file():
            cnnkit("classify", "train", "--data", str(source), "--model", MODEL, "--epochs", str(args.epochs), "--imgsz",
                   str(args.imgsz), "--out", str(out))
        weights["source"] = out / "weights" / "best.safetensors"
    if "pretrain" in only or "downstream" in only:
        for method in args.methods:
            weights[method] = pretrain(method, target, args, rows, args.results)
            rows = load_rows(args.results)
    if "downstream" in only:
        for backbone, file in weights.items():
            downstream(backbone, file, target, args, rows, args.results)
            rows = load_rows(args.results)
    if "throughput" in only:
        throughput(target, args, args.results)
    summary(load_rows(args.results), args)


if __name__ == "__main__":
    main()
