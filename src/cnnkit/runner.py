"""The one training run every task shares: the run directory (or --resume), data, model, transfer, the engine,
then the task's finish (evaluate the best weights, metrics.json, plots, report.html). A task brings a Recipe:
its model builder, engine task, weights metadata and finish, and where it has its own data, how to read it.

    run = train(cfg, explicit={"epochs"}, recipe=CLASSIFY)      # run.dir, run.metrics, run.best_epoch
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, classify_transforms, spec_from_config
from cnnkit.config import TrainOptions, read_yaml_options, write_yaml
from cnnkit.console import console
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import pixel_limit
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.intensity import spec_of
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.callbacks import read_history
from cnnkit.engine.checkpoint import load_matching, read_state_dict, recorded_model
from cnnkit.engine.rundir import latest_run_dir, next_run_dir, write_json
from cnnkit.engine.transfer import load_backbone, plan_transfer
from cnnkit.engine.trainer import fit, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.report import write_report
from cnnkit.version import __version__


@dataclass
class Run:
    dir: Path
    metrics: dict[str, Any]
    best_epoch: int = 0


@dataclass
class Built:
    """A recipe's model, and what building it found that the weights file records (fitted anchors, parameters,
    GFLOPs): returned with the model instead of riding on it as attributes."""

    model: nn.Module
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """What a task brings to a training run; everything else (run directory, resume, data, transfer,
    the engine, DDP) is shared. Plain functions of (cfg, class names)."""

    task: str
    build_model: Callable[[Any, Any], Built]  # (cfg, dataset) -> the model and what its weights record of the build
    make_task: Callable[[Any, Any, nn.Module], Any]  # (cfg, dataset with .classes and .splits, model) -> the engine's task
    metadata: Callable[[Any, Any, nn.Module], dict[str, Any]]  # (cfg, dataset, model) -> what the weights file records
    finish: Callable[[Any, Path, Any, torch.device], dict[str, Any]]
    train_sampler: Callable[[Any, list], Any] | None = None  # (cfg, train samples) -> Sampler; None = shuffled
    # (cfg, dataset, model, task, device, run dir) -> (task, train set) that replace the images (--balance smote), or None
    train_on_features: Callable[..., tuple[Any, Any] | None] | None = None
    # (cfg, dataset root) -> dataset with .classes and .splits; ImageFolder unless the task reads another layout
    load_data: Callable[[Any, Path], Any] = lambda cfg, root: load_imagefolder(root, cfg.val_split, cfg.seed)
    # (cfg, dataset) -> (train set, val set) for the engine, and the collate function of their batches
    make_sets: Callable[[Any, Any], tuple[Any, Any]] = lambda cfg, dataset: (
        ImageDataset(dataset.splits["train"], classify_transforms(cfg.imgsz, True, spec_from_config(cfg)), spec_of(cfg)),
        ImageDataset(dataset.splits["val"], classify_transforms(cfg.imgsz, False), spec_of(cfg)))
    collate: Callable[[list], Any] = collate_skipping_none
    # --backbone-from checks that the file's recorded model has this name (None: only the tensor shapes)
    backbone_name: Callable[[Any], str | None] = lambda cfg: cfg.model
    runs_under: str | None = None  # the folder under runs/ (default: the task; distillation's runs/distill)


def resolve_run(cfg: TrainOptions, explicit: set[str] = frozenset(), task: str = "classify") -> tuple[TrainOptions, Path]:
    """The run directory and, for --resume, the saved configuration of the interrupted run
    (``explicit``: the options the user typed; of these only device, workers and max_pixels may change)."""
    if cfg.resume:
        run_dir = Path(cfg.out) if cfg.out else (Path("runs") / task / cfg.name if cfg.name else latest_run_dir(task))
        if run_dir is None or not (run_dir / "checkpoint.pt").is_file():
            raise CnnkitError(f"{run_dir or 'runs/' + task}: no checkpoint.pt to resume", "pass --out RUN_DIR of an interrupted run")
        saved = read_yaml_options(run_dir / "config.yaml", type(cfg))
        # a resumed run keeps its math; only where and how fast it runs, and which images it may open, may change
        keep = {k: getattr(cfg, k) for k in ("device", "workers", "max_pixels") if k in explicit}
        cfg = replace(type(cfg)(**saved), **keep, resume=True, out=str(run_dir))
        return cfg.validate(), run_dir
    run_dir = Path(cfg.out) if cfg.out else next_run_dir(task, cfg.name)
    if (run_dir / "checkpoint.pt").is_file():
        raise CnnkitError(f"{run_dir}: already holds a run", "pass --resume to continue it, or another --out/--name")
    return replace(cfg, out=str(run_dir)).validate(), run_dir


def train(cfg: TrainOptions, explicit: set[str], recipe: Recipe) -> Run:
    """One training run of ``recipe``'s task: data -> model -> engine -> metrics.json, plots, report.html.
    ``explicit`` names the options the user set (the rest are defaults), which matters for --resume."""
    cfg, run_dir = resolve_run(cfg, explicit, recipe.runs_under or recipe.task)
    # --max-pixels holds for every image the run reads, here and in its data-loader workers
    with pixel_limit(getattr(cfg, "max_pixels", None)):
        return _train_run(cfg, run_dir, recipe)


def _train_run(cfg: TrainOptions, run_dir: Path, recipe: "Recipe") -> Run:
    device = dist_utils.select_device(cfg.device)
    dist_utils.setup(device)
    # ranks may have picked different free names (exp, exp2) before joining: rank 0's wins
    run_dir = Path(dist_utils.broadcast(str(run_dir)))
    cfg = replace(cfg, out=str(run_dir))
    main = dist_utils.is_main()
    seed_everything(cfg.seed + dist_utils.rank(), cfg.deterministic)
    # rank 0 materialises a built-in dataset; the others wait so they never read half of it
    data_root = resolve_data(cfg.data, recipe.task) if main else None
    dist_utils.barrier()
    data_root = data_root or resolve_data(cfg.data, recipe.task)
    dataset = recipe.load_data(cfg, data_root)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    built = recipe.build_model(cfg, dataset)
    model = built.model
    if cfg.weights and not cfg.resume:
        copied, skipped = load_matching(model, read_state_dict(cfg.weights), cfg.weights)
        if main:
            console.print(f"initialised {copied} tensors from {cfg.weights}" + (f" ({len(skipped)} new, e.g. {skipped[0]})" if skipped else ""))
    if cfg.backbone_from and not cfg.resume:
        name = recipe.backbone_name(cfg)
        copied = load_backbone(model, read_state_dict(cfg.backbone_from), cfg.backbone_from, name or cfg.model,
                               recorded_model(cfg.backbone_from) if name else None)
        if main:
            console.print(f"backbone: {copied} tensors from {cfg.backbone_from}")
    # SMOTE's features need a frozen backbone
    transfer = "linear" if getattr(cfg, "balance", "none") == "smote" else cfg.transfer
    plan = plan_transfer(model, transfer, bool(cfg.pretrained or cfg.weights or cfg.backbone_from), cfg.backbone_lr_mult)
    metadata = {"task": recipe.task, "model": cfg.model, "imgsz": cfg.imgsz, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "intensity": spec_of(cfg).to_dict(),  # how predict and val read images deeper than 8 bits, as training did
                "cnnkit_version": __version__, "val_split": cfg.val_split, "split_seed": cfg.seed,
                **built.record, **recipe.metadata(cfg, dataset, model)}
    task = recipe.make_task(cfg, dataset, model)
    train_set, val_set = recipe.make_sets(cfg, dataset)
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
        n_params = sum(p.numel() for p in model.parameters())
        counts = ", ".join(f"{name} {len(s)}" for name, s in dataset.splits.items())
        console.print(f"cnnkit {__version__}  {recipe.task} {cfg.model} ({n_params / 1e6:.2f}M params)  {len(dataset.classes)} classes  "
                      f"images: {counts}  device {device}" + (f" x{dist_utils.world_size()}" if dist_utils.world_size() > 1 else ""))
    if main and plan.mode != "scratch":
        console.print(f"transfer: {plan.mode}" + (f", backbone lr x{plan.backbone_lr_mult:g}" if plan.mode in ("finetune", "gradual") else ""))
    sampler = recipe.train_sampler(cfg, dataset.splits["train"]) if recipe.train_sampler else None
    on_features = recipe.train_on_features(cfg, dataset, model, task, device, run_dir) if recipe.train_on_features else None
    if on_features is not None:
        task, train_set = on_features
    result = fit(task, model, train_set, val_set, cfg, run_dir, metadata, recipe.collate, device, plan, sampler)
    dist_utils.cleanup()
    if not main:
        return Run(run_dir, result.metrics, result.best_epoch)
    metrics = recipe.finish(cfg, run_dir, dataset, device)
    return Run(run_dir, metrics, result.best_epoch)


def evaluate_run_splits(run_dir: Path, splits: dict[str, Any],
                        evaluate_split: Callable[[str, Any], tuple[dict[str, Any], list[Path]]]) -> tuple[dict[str, Any], list[Path]]:
    """The end of a training run, for every task: the history plot, then ``evaluate_split(split, samples)``
    on val (its metrics at the top level) and test (under "test") where the dataset has them."""
    paths = [plots.plot_history(read_history(run_dir / "history.csv"), run_dir / "plots" / "history.png")]
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if not splits.get(split):
            continue
        split_metrics, split_paths = evaluate_split(split, splits[split])
        paths += split_paths
        if split == "val":
            metrics.update(split_metrics)
        else:
            metrics["test"] = split_metrics
    return metrics, paths


def publish_run(run_dir: Path, title: str, cfg: TrainOptions, metrics: dict[str, Any], paths: list[Path], headline: str) -> None:
    """metrics.json and report.html of a finished run, and its one-line result on the console."""
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir / "report.html", title, cfg.to_dict(), report_summary(metrics), paths, per_class=metrics.get("per_class"))
    console.print(f"{headline}\nresults in {run_dir}  report: {run_dir / 'report.html'}")


def report_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics shown at the top of report.html (a test split's as test_NAME)."""
    summary = {k: v for k, v in metrics.items() if isinstance(v, (float, int, str))}
    if isinstance(metrics.get("test"), dict):
        summary.update({f"test_{k}": v for k, v in metrics["test"].items() if isinstance(v, float)})
    return summary


def train_and_reload(owner: Any, config_type: type, recipe: "Recipe", data: str, defaults: dict[str, Any],
                      options: dict[str, Any]) -> Run:
    """``owner.train``: options checked against ``config_type``, the owner's settings as defaults, then
    the owner becomes the run's best weights."""
    known = {f.name for f in fields(config_type)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CnnkitError(f"unknown training option '{unknown[0]}'", f"see `cnnkit {recipe.task} train --help`")
    cfg = config_type(data=data, **{**defaults, **options})
    run = train(cfg, explicit=set(options), recipe=recipe)
    if run.dir and (run.dir / "weights" / "best.safetensors").is_file():
        owner.__dict__.update(type(owner).load(run.dir / "weights" / "best.safetensors").__dict__)
    return run
