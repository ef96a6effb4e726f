"""cnnkit's engine against a bare PyTorch loop: same model, data, optimizer, schedule and steps.

    python benchmarks/train_overhead.py [--model tiny_cnn] [--imgsz 32] [--epochs 2] [--repeat-data 5] [--repeats 3]

Both train on the built-in digits (train split repeated 5 times: 84 steps an epoch), decoded once
into memory so that only the loops differ. The
engine's time is the wall clock of the whole ``fit`` (progress bar, per-epoch validation on a
64-image set, history, weights and checkpoint writes included); the bare loop's is its training
loop alone. Runs alternate; the best of ``--repeats`` for each is compared (noise only slows a run
down), and the median of the paired ratios is printed beside it. Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cnnkit.augment.presets import classify_transforms
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.data.builtin import resolve_data
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.images import load_image
from cnnkit.engine.optim import build_optimizer, build_scheduler
from cnnkit.engine.trainer import fit, seed_everything
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks.classify.task import ClassifyTask


def load_tensors(imgsz: int, repeat: int) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """digits train (repeated ``repeat`` times, so an epoch is a realistic ~80 steps) and 64 val images."""
    data = load_imagefolder(resolve_data("digits"))
    transform = classify_transforms(imgsz, train=False)

    def stack(samples):
        return TensorDataset(torch.stack([transform(load_image(p)) for p, _ in samples]), torch.tensor([y for _, y in samples]))

    return stack(data.splits["train"] * repeat), stack(data.splits["val"][:64]), data.classes


def bare_loop(model_name, classes, train_set, cfg) -> float:
    """The 20-line loop a person would write: images/s over all epochs."""
    seed_everything(cfg.seed)
    model = build_classifier(model_name, len(classes))
    loader = DataLoader(train_set, batch_size=cfg.batch, shuffle=True, drop_last=True)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.epochs * len(loader), len(loader), "cosine", 0.01)
    images, start = 0, time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += len(y)
    return images / (time.perf_counter() - start)


def engine_loop(model_name, classes, train_set, val_set, cfg) -> tuple[float, float]:
    """(images/s over the whole fit, images/s of the training phases alone as the engine logs them)."""
    seed_everything(cfg.seed)
    model = build_classifier(model_name, len(classes))
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = fit(ClassifyTask(classes), model, train_set, val_set, cfg, Path(run_dir), {"task": "classify"})
        wall = time.perf_counter() - start
    steps = len(train_set) // cfg.batch
    logged = statistics.mean(row["images_per_s"] for row in result.history)
    return cfg.epochs * steps * cfg.batch / wall, logged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_cnn")
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat-data", type=int, default=5, help="repeat the 1,078 training images this many times")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train_set, val_set, classes = load_tensors(args.imgsz, args.repeat_data)
    cfg = TrainConfig(model=args.model, epochs=args.epochs, batch=args.batch, imgsz=args.imgsz, workers=0, device="cpu")
    bare, engine, logged = [], [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(args.model, classes, train_set, cfg))
        whole, train_only = engine_loop(args.model, classes, train_set, val_set, cfg)
        engine.append(whole)
        logged.append(train_only)
    # best of the repeats: noise on a shared machine only ever slows a run down (as timeit does)
    b, e, t = max(bare), max(engine), max(logged)
    print(f"\nmodel {args.model}  imgsz {args.imgsz}  batch {args.batch}  epochs {args.epochs}  images/epoch {len(train_set)}  "
          f"threads {torch.get_num_threads()}  repeats {args.repeats} (alternating)")
    print(f"bare PyTorch loop      {b:8.1f} img/s   runs: {', '.join(f'{x:.0f}' for x in bare)}")
    print(f"cnnkit engine (fit)    {e:8.1f} img/s   runs: {', '.join(f'{x:.0f}' for x in engine)}")
    print(f"  training phases      {t:8.1f} img/s   runs: {', '.join(f'{x:.0f}' for x in logged)}")
    print(f"median of paired ratios {statistics.median(x / y for x, y in zip(engine, bare)):7.3f}")
    print(f"ratio engine/bare       {e / b:7.3f}   target >= 0.95: {'PASS' if e / b >= 0.95 else 'FAIL'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
