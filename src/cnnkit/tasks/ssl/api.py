"""Self-supervised pretraining: the Pretrainer (train / val / load) and the SSL_RECIPE the runner trains.

    from cnnkit.tasks.ssl.api import Pretrainer
    run = Pretrainer("small_cnn", "simclr").train(data="photos/", epochs=100, eval_data="labelled/")
    Pretrainer.load(run.dir / "weights/best.safetensors").val("labelled/", "test")   # knn_top1, linear_top1
    # then: cnnkit classify train --data labelled/ --model small_cnn --backbone-from runs/ssl/exp/weights/best.safetensors

The weights file (task ``ssl``) holds the backbone under ``backbone.`` (the classifier's own tensor names) and the
method's heads; BYOL's teacher stays in checkpoint.pt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, classify_transforms
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import is_image_file
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.intensity import BEFORE_RECORD, IntensitySpec, spec_of
from cnnkit.data.loaders import collate_skipping_none
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError
from cnnkit.runner import Built, Recipe, Run, adopt_model_file, beside_run, publish, publish_run, read_model_file, train_and_reload
from cnnkit.tasks.ssl import task as ssl_task

SSL = "ssl"


@dataclass
class SSLData:
    """What the runner needs of a dataset: the unlabelled training images and the validation images (an
    --eval-data set's train images as the kNN bank and its val images as queries, or held-out unlabelled ones)."""

    root: Path
    classes: list[str] = field(default_factory=list)  # --eval-data's classes; empty without it
    splits: dict[str, list[tuple[Path, int, int]]] = field(default_factory=dict)
    labelled: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)  # --eval-data's own splits


def unlabelled_images(root: Path) -> list[Path]:
    """Every image below ``root`` (recursively, sorted); a folder without one is a one-line error that says what
    was there instead."""
    from cnnkit.data.sources import walk_files

    if not root.is_dir():
        raise CnnkitError(f"{root}: no such folder", "ssl train --data takes a folder of images (searched recursively)")
    files = walk_files(root)
    images = [p for p in files if is_image_file(p)]
    if not images:
        others = len(files)
        raise CnnkitError(f"{root}: no images" + (f" ({others} files skipped: none is a .jpg/.png/.bmp/.tif/… image)" if others
                                                  else " (the folder and its subfolders are empty)"),
                          "point --data at a folder with images in it or in its subfolders")
    return images


def load_ssl_data(cfg, root: Path) -> SSLData:
    """--data's images for training; validation from --eval-data (labelled) or a held-out share of --data."""
    images = unlabelled_images(root)
    data = SSLData(root)
    if cfg.eval_data:
        labelled = load_eval_data(cfg.eval_data, cfg.seed)
        data.classes, data.labelled = labelled.classes, labelled.splits
        data.splits["train"] = [(p, -1, ssl_task.ROLE_HELD_OUT) for p in images]
        data.splits["val"] = ([(p, label, ssl_task.ROLE_BANK) for p, label in labelled.splits["train"]]
                              + [(p, label, ssl_task.ROLE_QUERY) for p, label in labelled.splits["val"]])
        return data
    order = np.random.default_rng(cfg.seed).permutation(len(images))
    held = min(len(images) - 1, max(1, round(cfg.val_split * len(images)))) if len(images) > 1 else 0
    val = sorted(int(i) for i in order[:held]) if held else [0]  # one image: it is its own validation
    train = sorted(int(i) for i in order[held:]) if held else [0]
    data.splits["train"] = [(images[i], -1, ssl_task.ROLE_HELD_OUT) for i in train]
    data.splits["val"] = [(images[i], -1, ssl_task.ROLE_HELD_OUT) for i in val]
    return data


def load_eval_data(path: str, seed: int = 0):
    """--eval-data: a labelled ImageFolder with train and val (val cut from train when it has none)."""
    root = resolve_data(path)
    try:
        data = load_imagefolder(root, val_split=0.2, seed=seed)
    except CnnkitError as exc:
        raise CnnkitError(f"--eval-data {path}: needs labels ({exc.message})",
                          "a labelled ImageFolder: ROOT/train/CLASS/*.png and ROOT/val/CLASS/… (or ROOT/CLASS/…)") from None
    if len(data.classes) < 2:
        raise CnnkitError(f"--eval-data {path}: one class ({data.classes[0]}), nothing for kNN top-1 to tell apart",
                          "a labelled ImageFolder with two classes or more: ROOT/train/CLASS/*.png")
    if not data.splits.get("train") or not data.splits.get("val"):
        raise CnnkitError(f"--eval-data {path}: needs labelled train and val images", "ROOT/train/CLASS/*.png and ROOT/val/CLASS/…")
    return data


def _steps_per_epoch(cfg, train_images: int) -> int:
    per_rank = max(1, cfg.batch // dist_utils.world_size())
    batches = train_images // dist_utils.world_size() // per_rank if train_images // dist_utils.world_size() > per_rank else 1
    return max(1, batches // cfg.accumulate)


def _build_ssl_model(cfg, dataset: SSLData) -> Built:
    from cnnkit.models.ssl import build_ssl_net

    total = _steps_per_epoch(cfg, len(dataset.splits["train"])) * cfg.epochs
    net = build_ssl_net(cfg.model, cfg.method, cfg.imgsz, cfg.pretrained, proj_dim=cfg.proj_dim, hidden=cfg.hidden_dim,
                        temperature=cfg.temperature, mask_ratio=cfg.mask_ratio, momentum=cfg.teacher_momentum, total_steps=total)
    return Built(net, {"feature_dim": int(net.backbone.num_features)})


def _make_ssl_sets(cfg, dataset: SSLData):
    from cnnkit.models.ssl import VIEWS

    views = classify_transforms(cfg.imgsz, True, ssl_task.view_spec(cfg, cfg.method))
    plain = classify_transforms(cfg.imgsz, False)
    intensity = spec_of(cfg)
    return (ssl_task.ViewsDataset(dataset.splits["train"], views, VIEWS[cfg.method], intensity=intensity),
            ssl_task.ViewsDataset(dataset.splits["val"], views, VIEWS[cfg.method], plain, intensity, fixed=True))


def _make_ssl_task(cfg, dataset: SSLData, model: nn.Module) -> ssl_task.SSLTask:
    return ssl_task.SSLTask(cfg.method, cfg.knn_k, labelled=bool(cfg.eval_data))


class Pretrainer:
    """A self-supervised backbone: ``train`` on a folder of unlabelled images, ``val`` its frozen features on a
    labelled ImageFolder (kNN and linear top-1), ``load`` a weights file of task ssl."""

    def __init__(self, model: str = "small_cnn", method: str = "simclr", imgsz: int = 64, pretrained: bool = False):
        self.model_name, self.method, self.imgsz, self.pretrained = model, method, imgsz, pretrained
        self.class_names: list[str] | None = None  # an SSL backbone knows no classes
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.intensity = IntensitySpec()
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)

    @classmethod
    def load(cls, weights: str | Path) -> "Pretrainer":
        from cnnkit.models.ssl import build_ssl_net

        file = read_model_file(weights, SSL)
        if file.state is None:
            raise CnnkitError(f"{weights}: an exported file; ssl val needs the .safetensors weights of `ssl train`")
        meta = file.meta
        owner = cls(meta["model"], meta["method"], int(meta["imgsz"]))
        net = build_ssl_net(meta["model"], meta["method"], int(meta["imgsz"]), proj_dim=int(meta.get("proj_dim", 128)),
                            hidden=int(meta.get("hidden_dim", 512)))
        if meta["method"] == "byol":
            net.teacher = None  # the teacher trains with the student; the weights file holds the student alone
        owner.model = net
        owner.mean, owner.std = tuple(meta["mean"]), tuple(meta["std"])
        owner.intensity = IntensitySpec.from_dict(meta.get("intensity"), missing=BEFORE_RECORD)
        adopt_model_file(owner, file)
        owner.model.eval()
        return owner

    def train(self, data: str, **options: Any) -> Run:
        """Pretraining on a folder of images; options are SSLConfig fields (epochs, batch, eval_data, …)."""
        from cnnkit.tasks.ssl.config import SSLConfig

        defaults = {"model": self.model_name, "method": self.method, "imgsz": self.imgsz, "pretrained": self.pretrained}
        return train_and_reload(self, SSLConfig, SSL_RECIPE, data, defaults, options)

    def features(self, files: list[Path], labels: list[int] | None, batch: int = 64, device: str = "auto",
                 workers: int = 2) -> dict[str, np.ndarray]:
        """{"features" [N, D], "files", "labels"} of the backbone's pooled features (the readable files)."""
        from cnnkit.tasks.classify.features import extract_features

        if self.model is None:
            raise CnnkitError("this Pretrainer has no weights yet", "train it first or use Pretrainer.load(FILE)")
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        return extract_features(self.model.backbone, files, labels, transform, batch, workers, dist_utils.select_device(device),
                                intensity=self.intensity)

    def measure(self, labelled, split: str, batch: int = 64, device: str = "auto", workers: int = 2,
                knn_k: int = 20) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """kNN and linear top-1 of ``split``'s images with ``labelled``'s train images as the bank and the probe's
        training set (an ImageFolderData); and the features of ``split`` for drawing."""
        from cnnkit.runner import split_samples

        queries = split_samples(labelled.root, labelled.splits, split)
        bank = self.features(*zip(*labelled.splits["train"]), batch=batch, device=device, workers=workers)
        query = self.features(*zip(*queries), batch=batch, device=device, workers=workers)
        metrics = {"split": split, "bank": len(bank["files"]), "queries": len(query["files"]),
                   "knn_top1": ssl_task.knn_top1(bank["features"], bank["labels"], query["features"], query["labels"], knn_k),
                   "linear_top1": ssl_task.linear_top1(bank["features"], bank["labels"], query["features"], query["labels"]),
                   "feature_std": ssl_task.feature_spread(query["features"])}
        return metrics, query

    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 64, device: str = "auto",
            workers: int = 2, knn_k: int = 20) -> dict[str, Any]:
        """knn_top1 and linear_top1 of the frozen features on a labelled ImageFolder: ``split``'s images against
        its train images; metrics.json, an embedding map and report.html into ``out``."""
        from cnnkit.tasks.embed.task import draw

        labelled = load_eval_data(data, self.split_seed)
        metrics, query = self.measure(labelled, split, batch, device, workers, knn_k)
        out_dir = beside_run(out, self.weights_path, SSL)
        paths = draw({"embeddings": query["features"], "labels": query["labels"]}, labelled.classes,
                     [Path(f) for f in query["files"]], out_dir / "plots", prefix=split)
        publish(out_dir, f"cnnkit ssl val: {self.model_name} ({self.method}) on {data} ({split})",
                {"weights": str(self.weights_path), "data": str(data), "split": split, "knn_k": knn_k}, metrics, paths,
                f"{split}: knn_top1 {metrics['knn_top1']:.4f}  linear_top1 {metrics['linear_top1']:.4f}")
        return metrics


def finish_ssl_run(cfg, run_dir: Path, dataset: SSLData, device: torch.device) -> dict[str, Any]:
    """The best weights' frozen features: kNN and linear top-1 on --eval-data's val (and test) images, the
    collapse check; the history plot, metrics.json and report.html."""
    from cnnkit.engine.callbacks import read_history
    from cnnkit.evaluate import plots
    from cnnkit.tasks.embed.task import draw

    history = read_history(run_dir / "history.csv")
    paths = [plots.plot_history(history, run_dir / "plots" / "history.png")]
    if (run_dir / "plots" / "lr_find.png").is_file():
        paths.append(run_dir / "plots" / "lr_find.png")
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {"method": cfg.method, "val_loss": last.get("val_loss", math.nan),
                               "feature_std": last.get("feature_std", 0.0)}
    best = Pretrainer.load(run_dir / "weights" / "best.safetensors")
    if cfg.eval_data:
        labelled = load_eval_data(cfg.eval_data, cfg.seed)
        for split in [s for s in ("val", "test") if labelled.splits.get(s)]:
            split_metrics, query = best.measure(labelled, split, cfg.batch, str(device), cfg.workers, cfg.knn_k)
            if split == "val":
                metrics.update(split_metrics)
                paths += draw({"embeddings": query["features"], "labels": query["labels"]}, labelled.classes,
                              [Path(f) for f in query["files"]], run_dir / "plots", prefix="val")
            else:
                metrics["test"] = split_metrics
    warnings = []
    if metrics["feature_std"] < ssl_task.COLLAPSE_BELOW:
        warnings.append(f"the representation collapsed: feature spread {metrics['feature_std']:.3f} (0 = one vector for "
                        "every image); lower --lr, or raise --batch (simclr) or --teacher-momentum (byol)")
        metrics["warnings"] = warnings
    headline = (f"val knn_top1 {metrics['knn_top1']:.4f}  linear_top1 {metrics['linear_top1']:.4f}" if "knn_top1" in metrics
                else f"val loss {metrics['val_loss']:.4f}  feature spread {metrics['feature_std']:.3f}")
    publish_run(run_dir, f"cnnkit ssl: {cfg.model} ({cfg.method}) on {cfg.data}", cfg, metrics, paths, headline)
    return metrics


SSL_RECIPE = Recipe(
    task=SSL,
    build_model=_build_ssl_model,
    make_task=_make_ssl_task,
    metadata=lambda cfg, dataset, model: {"method": cfg.method, "proj_dim": cfg.proj_dim, "hidden_dim": cfg.hidden_dim},
    finish=finish_ssl_run,
    load_data=load_ssl_data,
    make_sets=_make_ssl_sets,
    collate=collate_skipping_none,
)
