"""Which test-time views help a trained classifier? Val and test top-1 of saved runs under several view sets.

    python benchmarks/tta_views.py RUN_DIR [RUN_DIR …]        # e.g. the runs of benchmarks/recipes.py --runs DIR

For every run (its config.yaml names the data; its weights/best.safetensors is scored) and both the val and the
test split: one view (none), the image and its mirror image (flip, cnnkit's default when training mirrors),
flip plus one- and two-pixel translations of both (airbench's translate TTA, reflect padding), flip plus the
vertical mirror (flip_vflip), and the eight symmetries of the square (d8). The same weights are scored under
every view set, so the differences between the columns are free of the seed-to-seed noise of training. Then
per dataset (the run name up to `_s<seed>`): the mean of each column, and what `--tta auto` gives (d8 where
its val top-1 is higher than flip's, else flip).
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    pad = max(abs(dx), abs(dy))
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    height, width = x.shape[-2:]
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def translated(model, x: torch.Tensor, step: int) -> torch.Tensor:
    views = [x, x.flip(-1)]
    return (sum(model(v) for v in views) * 0.25 + sum(model(shift(v, d, d)) for v in views for d in (-step, step)) * 0.125)


def view_sets():
    from cnnkit.tasks.classify.task import predict_logits

    return {
        "none": lambda m, x: predict_logits(m, x, "none"),
        "flip": lambda m, x: predict_logits(m, x, "flip"),
        "flip_t1": lambda m, x: translated(m, x, 1),
        "flip_t2": lambda m, x: translated(m, x, 2),
        "flip_vflip": lambda m, x: (predict_logits(m, x, "flip") + predict_logits(m, x.flip(-2), "flip")) / 2,
        "d8": lambda m, x: predict_logits(m, x, "d8"),
    }


def score_run(run: Path, views) -> dict[str, dict[str, float]]:
    from cnnkit.augment.presets import classify_transforms
    from cnnkit.data.imagefolder import load_imagefolder
    from cnnkit.data.loaders import ImageDataset
    from cnnkit.tasks.classify.api import Classifier

    config = yaml.safe_load((run / "config.yaml").read_text())
    clf = Classifier.load(run / "weights" / "best.safetensors")
    model = clf.model.eval()
    dataset = load_imagefolder(config["data"], val_split=clf.val_split, seed=clf.split_seed)
    scores = {}
    for split in ("val", "test"):
        data = ImageDataset(dataset.splits[split], classify_transforms(clf.imgsz, train=False, mean=clf.mean, std=clf.std), clf.intensity)
        hits = {name: 0 for name in views}
        with torch.no_grad():
            for start in range(0, len(data), 64):
                items = [data[j] for j in range(start, min(start + 64, len(data)))]
                x, y = torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
                for name, predict in views.items():
                    hits[name] += int((predict(model, x).argmax(1) == y).sum())
        scores[split] = {name: n / len(data) for name, n in hits.items()}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    views = view_sets()
    per_dataset = collections.defaultdict(list)
    for run in args.runs:
        scores = score_run(run, views)
        name = re.sub(r"_s\d+(_\d+)?$", "", run.name)
        per_dataset[name].append(scores)
        print(f"{run.name}: " + "  ".join(f"{split} " + " ".join(f"{k}={v:.3f}" for k, v in scores[split].items())
                                           for split in ("val", "test")), flush=True)
    print(f"\n{'dataset':24s} {'runs':>4s} " + " ".join(f"{k:>10s}" for k in views) + f" {'auto':>10s}  (test top-1)")
    for name, runs in per_dataset.items():
        auto = [s["test"]["d8" if s["val"]["d8"] > s["val"]["flip"] else "flip"] for s in runs]
        means = [statistics.mean(s["test"][k] for s in runs) for k in views]
        print(f"{name:24s} {len(runs):4d} " + " ".join(f"{m:10.4f}" for m in means) + f" {statistics.mean(auto):10.4f}")


if __name__ == "__main__":
    main()
