"""The Python API; the CLI is a thin layer over it.

    from cnnkit import Classifier
    clf = Classifier("resnet18")                                   # or Classifier.load("runs/classify/exp/weights/best.safetensors")
    run = clf.train(data="digits", epochs=5, imgsz=32)           # run.dir, run.metrics
    preds = clf.predict(["a.png", "b.png"])                        # [{"file", "label", "score", "topk"}]
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from cnnkit import __version__
from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, classify_transforms
from cnnkit.config import TrainConfig, read_yaml_options, write_yaml
from cnnkit.console import console, warn
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import is_image_file, load_image
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.callbacks import read_history
from cnnkit.engine.checkpoint import load_matching, load_weights, read_state_dict, recorded_model
from cnnkit.engine.transfer import load_backbone, plan_transfer
from cnnkit.engine.rundir import latest_run_dir, next_run_dir, write_json
from cnnkit.engine.trainer import evaluate, fit, make_loader, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.report import write_report
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks import classify

TASK = "classify"


@dataclass
class Run:
    dir: Path
    metrics: dict[str, Any]
    best_epoch: int = 0


class Classifier:
    """An image classifier: any timm/torchvision CNN or cnnkit's own, with a head for your classes."""

    def __init__(self, model: str = "tiny_cnn", class_names: list[str] | None = None, imgsz: int = 224,
                 pretrained: bool = False, num_classes: int | None = None):
        self.model_name = model
        self.class_names = class_names or ([str(i) for i in range(num_classes)] if num_classes else None)
        self.imgsz = imgsz
        self.pretrained = pretrained
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.model: nn.Module | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        if self.class_names:
            self.model = build_classifier(model, len(self.class_names), pretrained)

    @classmethod
    def load(cls, weights: str | Path) -> "Classifier":
        """Rebuild the model from a cnnkit weights file alone (architecture, classes, size, normalisation)."""
        state, meta = load_weights(weights, task=TASK)
        clf = cls(meta["model"], class_names=meta["class_names"], imgsz=meta["imgsz"])
        clf.mean, clf.std = tuple(meta["mean"]), tuple(meta["std"])
        # how the training run cut val from train, so `val` on such a dataset sees the same held-out images
        clf.val_split, clf.split_seed = meta.get("val_split", 0.2), meta.get("split_seed", 0)
        clf.model.load_state_dict(state)
        clf.weights_path = Path(weights)
        return clf

    # ---------------------------------------------------------------- train
    def train(self, data: str = "digits", **options: Any) -> Run:
        """Train on an ImageFolder dataset (or 'digits'); options are TrainConfig fields."""
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise CnnkitError(f"unknown training option '{unknown[0]}'", "see `cnnkit classify train --help`")
        cfg = TrainConfig(data=data, model=self.model_name, pretrained=self.pretrained, **options)
        if "imgsz" not in options:
            cfg.imgsz = self.imgsz
        if self.weights_path is not None and not cfg.weights:
            cfg.weights = str(self.weights_path)  # fine-tune from the loaded weights
        run = train(cfg, explicit=set(options))
        if run.dir and (run.dir / "weights" / "best.safetensors").is_file():
            loaded = Classifier.load(run.dir / "weights" / "best.safetensors")
            self.__dict__.update(loaded.__dict__)
        return run

    # ---------------------------------------------------------------- val
    def val(self, data: str, split: str = "val", out: str | Path | None = None, batch: int = 64,
            device: str = "auto", workers: int = 2) -> dict[str, Any]:
        """Metrics, plots and report.html of the model on one split of a dataset, written into ``out``."""
        model = self._require_model()
        dataset = load_imagefolder(resolve_data(data), val_split=self.val_split, seed=self.split_seed)
        if split not in dataset.splits:
            raise CnnkitError(f"{data}: no '{split}' split", f"available: {', '.join(dataset.splits)}")
        samples = _remap_labels(dataset.splits[split], dataset.classes, self.class_names, data)
        out_dir = Path(out) if out else (self.weights_path.parent.parent / "val" if self.weights_path else Path("runs/classify/val"))
        dev = dist_utils.select_device(device)
        metrics, outputs = _evaluate_split(model, self, samples, batch, workers, dev)
        paths = classify.draw(outputs, self.class_names, [p for p, _ in samples], out_dir / "plots", prefix=split)
        metrics = {"split": split, **metrics}
        write_json(out_dir / "metrics.json", metrics)
        write_report(out_dir / "report.html", f"cnnkit classify val: {self.model_name} on {data} ({split})",
                     {"weights": str(self.weights_path), "data": str(data), "split": split}, metrics, paths,
                     per_class=metrics["per_class"])
        console.print(f"{split}: top1 {metrics['top1']:.4f}  macro_f1 {metrics['macro_f1']:.4f}  report {out_dir / 'report.html'}")
        return metrics

    # ---------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(self, sources: Iterable[str | Path] | str | Path, topk: int = 5, batch: int = 32,
                device: str = "auto") -> list[dict[str, Any]]:
        """[{"file", "label", "score", "topk": [[label, score], …]}] for images, folders and globs."""
        model = self._require_model()
        files = expand_sources([sources] if isinstance(sources, (str, Path)) else list(sources))
        dev = dist_utils.select_device(device)
        model.to(dev).eval()
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        k = min(topk, len(self.class_names))
        results: list[dict[str, Any]] = []
        for start in range(0, len(files), batch):
            chunk = []
            for path, named in files[start:start + batch]:
                try:
                    chunk.append((path, transform(load_image(path))))
                except CnnkitError as exc:
                    if named:
                        raise
                    warn(f"{exc.message} (skipped)")
            if not chunk:
                continue
            probs = torch.softmax(model(torch.stack([t for _, t in chunk]).to(dev)).float(), dim=1).cpu()
            scores, indices = probs.topk(k, dim=1)
            for (path, _), s, idx in zip(chunk, scores.tolist(), indices.tolist()):
                results.append({"file": str(path), "label": self.class_names[idx[0]], "score": s[0],
                                "topk": [[self.class_names[i], v] for i, v in zip(idx, s)]})
        return results

    def features(self, sources: Iterable[str | Path] | str | Path, out: str | Path | None = None,
                 layers: list[str] | None = None, batch: int = 64, device: str = "auto", workers: int = 2) -> dict[str, np.ndarray]:
        """Pooled features [N, D] (the classifier's input) of every image, with ``files`` [N], ``labels``
        [N] and ``class_names`` when the folders name the classes, and ``layer:NAME`` maps for
        ``layers``; written to ``out`` (.npz) when given. Unreadable images are skipped with a warning."""
        from cnnkit.tasks import features as feat

        model = self._require_model()
        names = feat.check_layers(model, layers or [])
        source_list = [sources] if isinstance(sources, (str, Path)) else list(sources)
        files = [path for path, _ in expand_sources(source_list)]
        labels = feat.folder_labels(files, [str(s) for s in source_list], self.class_names)
        transform = classify_transforms(self.imgsz, train=False, mean=self.mean, std=self.std)
        arrays = feat.extract_features(model, files, labels, transform, batch, workers, dist_utils.select_device(device), names)
        if "labels" in arrays:
            arrays["class_names"] = np.array(self.class_names)
        if out is not None:
            feat.save_npz(out, arrays)
        return arrays

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise CnnkitError("this Classifier has no weights yet", "train it first or use Classifier.load(FILE)")
        return self.model


def expand_sources(sources: list[str | Path]) -> list[tuple[Path, bool]]:
    """(image path, named directly) for files, folders (recursive) and glob patterns, in order."""
    files: list[tuple[Path, bool]] = []
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            files += [(p, False) for p in sorted(path.rglob("*")) if p.is_file() and is_image_file(p)]
        elif path.is_file():
            files.append((path, True))
        elif any(ch in text for ch in "*?["):
            matched = sorted(Path(p) for p in glob.glob(text, recursive=True))
            files += [(p, False) for p in matched if p.is_file() and is_image_file(p)]
            if not matched:
                raise CnnkitError(f"{text}: the pattern matches no files")
        else:
            raise CnnkitError(f"{text}: no such file or folder")
    if not files:
        raise CnnkitError(f"no images found in {', '.join(map(str, sources))}", "expected .jpg/.png/… files")
    return files


def _remap_labels(samples, data_classes: list[str], model_classes: list[str], data: str):
    """Dataset label ids -> the model's ids, by class name (folders may list classes in another order)."""
    index = {name: i for i, name in enumerate(model_classes)}
    missing = [name for name in data_classes if name not in index]
    if missing:
        raise CnnkitError(f"{data}: class '{missing[0]}' is unknown to the model",
                          f"the model knows {', '.join(model_classes[:10])}")
    return [(path, index[data_classes[label]]) for path, label in samples]


def _evaluate_split(model, clf: Classifier, samples, batch: int, workers: int, device: torch.device):
    dataset = ImageDataset(samples, classify_transforms(clf.imgsz, train=False, mean=clf.mean, std=clf.std))
    loader = make_loader(dataset, batch, workers, False, 0, collate_skipping_none, device)
    task = classify.ClassifyTask(clf.class_names)
    return evaluate(task, model.to(device), loader, device)


# ==================================================================== training run
def resolve_run(cfg: TrainConfig, explicit: set[str] = frozenset()) -> tuple[TrainConfig, Path]:
    """The run directory and, for --resume, the saved configuration of the interrupted run
    (``explicit``: the options the user typed; of these only device and workers may change)."""
    if cfg.resume:
        run_dir = Path(cfg.out) if cfg.out else (Path("runs") / TASK / cfg.name if cfg.name else latest_run_dir(TASK))
        if run_dir is None or not (run_dir / "checkpoint.pt").is_file():
            raise CnnkitError(f"{run_dir or 'runs/' + TASK}: no checkpoint.pt to resume", "pass --out RUN_DIR of an interrupted run")
        saved = read_yaml_options(run_dir / "config.yaml")
        # a resumed run keeps its math; only where and how fast it runs may change
        keep = {k: getattr(cfg, k) for k in ("device", "workers") if k in explicit}
        cfg = replace(TrainConfig(**saved), **keep, resume=True, out=str(run_dir))
        return cfg.validate(), run_dir
    run_dir = Path(cfg.out) if cfg.out else next_run_dir(TASK, cfg.name)
    if (run_dir / "checkpoint.pt").is_file():
        raise CnnkitError(f"{run_dir}: already holds a run", "pass --resume to continue it, or another --out/--name")
    return replace(cfg, out=str(run_dir)).validate(), run_dir


def train(cfg: TrainConfig, explicit: set[str] = frozenset()) -> Run:
    """One classification training run: data -> model -> engine -> metrics.json, plots, report.html.
    ``explicit`` names the options the user set (the rest are defaults), which matters for --resume."""
    cfg, run_dir = resolve_run(cfg, explicit)
    device = dist_utils.select_device(cfg.device)
    dist_utils.setup(device)
    # ranks may have picked different free names (exp, exp2) before joining: rank 0's wins
    run_dir = Path(dist_utils.broadcast(str(run_dir)))
    cfg = replace(cfg, out=str(run_dir))
    main = dist_utils.is_main()
    seed_everything(cfg.seed + dist_utils.rank(), cfg.deterministic)
    # rank 0 materialises a built-in dataset; the others wait so they never read half of it
    data_root = resolve_data(cfg.data) if main else None
    dist_utils.barrier()
    data_root = data_root or resolve_data(cfg.data)
    dataset = load_imagefolder(data_root, cfg.val_split, cfg.seed)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_classifier(cfg.model, len(dataset.classes), cfg.pretrained)
    if cfg.weights and not cfg.resume:
        copied, skipped = load_matching(model, read_state_dict(cfg.weights), cfg.weights)
        if main:
            console.print(f"initialised {copied} tensors from {cfg.weights}" + (f" ({len(skipped)} new, e.g. {skipped[0]})" if skipped else ""))
    if cfg.backbone_from and not cfg.resume:
        copied = load_backbone(model, read_state_dict(cfg.backbone_from), cfg.backbone_from, cfg.model,
                               recorded_model(cfg.backbone_from))
        if main:
            console.print(f"backbone: {copied} tensors from {cfg.backbone_from}")
    plan = plan_transfer(model, cfg.transfer, bool(cfg.pretrained or cfg.weights or cfg.backbone_from), cfg.backbone_lr_mult)
    metadata = {"task": TASK, "model": cfg.model, "class_names": dataset.classes, "num_classes": len(dataset.classes),
                "imgsz": cfg.imgsz, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "cnnkit_version": __version__,
                "val_split": cfg.val_split, "split_seed": cfg.seed}
    train_set = ImageDataset(dataset.splits["train"], classify_transforms(cfg.imgsz, True, cfg.augment, cfg.fliplr))
    val_set = ImageDataset(dataset.splits["val"], classify_transforms(cfg.imgsz, False))
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
        n_params = sum(p.numel() for p in model.parameters())
        counts = ", ".join(f"{name} {len(s)}" for name, s in dataset.splits.items())
        console.print(f"cnnkit {__version__}  classify {cfg.model} ({n_params / 1e6:.2f}M params)  {len(dataset.classes)} classes  "
                      f"images: {counts}  device {device}" + (f" x{dist_utils.world_size()}" if dist_utils.world_size() > 1 else ""))
    task = classify.ClassifyTask(dataset.classes, cfg.label_smoothing)
    if main and plan.mode != "scratch":
        console.print(f"transfer: {plan.mode}" + (f", backbone lr x{plan.backbone_lr_mult:g}" if plan.mode in ("finetune", "gradual") else ""))
    result = fit(task, model, train_set, val_set, cfg, run_dir, metadata, collate_skipping_none, device, plan)
    dist_utils.cleanup()
    if not main:
        return Run(run_dir, result.metrics, result.best_epoch)
    metrics = finish_run(cfg, run_dir, dataset, device)
    return Run(run_dir, metrics, result.best_epoch)


def finish_run(cfg: TrainConfig, run_dir: Path, dataset, device: torch.device) -> dict[str, Any]:
    """Evaluate best weights on val (and test), then write metrics.json, plots and report.html."""
    best = Classifier.load(run_dir / "weights" / "best.safetensors")
    plot_dir = run_dir / "plots"
    paths = [plots.plot_history(read_history(run_dir / "history.csv"), plot_dir / "history.png")]
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if split not in dataset.splits:
            continue
        samples = dataset.splits[split]
        split_metrics, outputs = _evaluate_split(best.model, best, samples, cfg.batch, cfg.workers, device)
        paths += classify.draw(outputs, dataset.classes, [p for p, _ in samples], plot_dir, prefix=split)
        if split == "val":
            metrics.update(split_metrics)
        else:
            metrics["test"] = split_metrics
    write_json(run_dir / "metrics.json", metrics)
    summary = {k: v for k, v in metrics.items() if isinstance(v, float)}
    if "test" in metrics:
        summary.update({f"test_{k}": v for k, v in metrics["test"].items() if isinstance(v, float)})
    write_report(run_dir / "report.html", f"cnnkit classify: {cfg.model} on {cfg.data}", cfg.to_dict(), summary, paths,
                 per_class=metrics.get("per_class"))
    line = f"val top1 {metrics['top1']:.4f}" + (f"  test top1 {metrics['test']['top1']:.4f}" if "test" in metrics else "")
    console.print(f"{line}\nresults in {run_dir}  report: {run_dir / 'report.html'}")
    return metrics
