"""`extract_features` against a bare ``torch.no_grad()`` loop: same model, images, loader settings.

    python benchmarks/features.py [--model tiny_cnn|resnet18] [--imgsz 32] [--batch 64] [--workers 0]
                                  [--repeat-data 2] [--repeats 5] [--device cpu] [--bar]

Both read the built-in digits (all 1,797 PNGs, listed ``--repeat-data`` times) through the same
ImageDataset, transform and DataLoader settings, from the files on disk, so decoding is part of both
times. The bare loop is what a person would write: forward to the pooled features, copy to the CPU,
concatenate. ``extract_features`` adds its row bookkeeping, preallocated arrays and progress bar;
the bar draws only on a terminal (``--bar`` forces it on, to measure its cost). The model is built
untrained (the weights do not change the cost). Runs alternate after one warm-up each; the best of
``--repeats`` is compared (noise only slows a run down), with the median of the paired ratios beside
it. Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from cnnkit.augment.presets import classify_transforms
from cnnkit.console import console
from cnnkit.data.builtin import resolve_data
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine.distributed import select_device
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks.classify.features import extract_features, pooled_features


def bare_loop(model, samples, transform, batch, workers, device) -> tuple[float, np.ndarray]:
    """(images/s, features [N, D]) of the plain loop."""
    start = time.perf_counter()
    loader = DataLoader(ImageDataset(samples, transform), batch_size=batch, shuffle=False, num_workers=workers,
                        collate_fn=collate_skipping_none, pin_memory=device.type == "cuda")
    chunks = []
    with torch.no_grad():
        for images, _, _ in loader:
            chunks.append(pooled_features(model, images.to(device, non_blocking=True)).float().cpu())
    feats = torch.cat(chunks).numpy()
    return len(samples) / (time.perf_counter() - start), feats


def cnnkit_loop(model, samples, transform, batch, workers, device, bar) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    arrays = extract_features(model, [p for p, _ in samples], [y for _, y in samples], transform, batch, workers,
                              device, progress=bar)
    return len(samples) / (time.perf_counter() - start), arrays["features"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_cnn")
    parser.add_argument("--imgsz", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeat-data", type=int, default=2, help="list the 1,797 digits this many times")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bar", action="store_true", help="draw the progress bar even when stdout/stderr is no terminal")
    args = parser.parse_args()
    if args.bar:
        console._force_terminal = True  # rich's own switch; progress_bar() disables itself off a terminal otherwise
    data = load_imagefolder(resolve_data("digits"))
    samples = [s for split in data.splits.values() for s in split] * args.repeat_data
    device = select_device(args.device)
    torch.manual_seed(0)
    model = build_classifier(args.model, len(data.classes)).to(device).eval()
    transform = classify_transforms(args.imgsz, train=False)
    loader_args = (model, samples, transform, args.batch, args.workers, device)
    _, ref = bare_loop(*loader_args)  # warm-up (allocator, caches) for both, and the reference output
    _, ours = cnnkit_loop(*loader_args, args.bar)
    assert np.allclose(ref, ours, rtol=1e-4, atol=1e-5), "extract_features disagrees with the bare loop"
    bare, mine = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(*loader_args)[0])
        mine.append(cnnkit_loop(*loader_args, args.bar)[0])
    b, m = max(bare), max(mine)
    print(f"\nmodel {args.model}  imgsz {args.imgsz}  batch {args.batch}  workers {args.workers}  images {len(samples)}  "
          f"features {ref.shape[1]}  device {device}  threads {torch.get_num_threads()}  bar {'on' if args.bar else 'off'}  "
          f"repeats {args.repeats} (alternating)")
    print(f"bare no_grad loop      {b:8.1f} img/s   runs: {', '.join(f'{x:.0f}' for x in bare)}")
    print(f"extract_features       {m:8.1f} img/s   runs: {', '.join(f'{x:.0f}' for x in mine)}")
    print(f"median of paired ratios {statistics.median(x / y for x, y in zip(mine, bare)):7.3f}")
    print(f"ratio cnnkit/bare       {m / b:7.3f}   target >= 0.95: {'PASS' if m / b >= 0.95 else 'FAIL'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
