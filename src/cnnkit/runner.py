"""The one training run every task shares: the run directory (or --resume), data, model, transfer, the engine,
then the task's finish (evaluate the best weights, metrics.json, plots, report.html). A task brings a Recipe:
its model builder, engine task, weights metadata and finish, and where it has its own data, how to read it.

    run = train(cfg, explicit={"epochs"}, recipe=CLASSIFY)      # run.dir, run.metrics, run.best_epoch
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
import torch.nn as nn

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD, classify_transforms, spec_from_config
from cnnkit.config import TrainOptions, read_yaml_options, write_yaml
from cnnkit.console import Skips, console, progress_bar, warn
from cnnkit.data.builtin import resolve_data
from cnnkit.data.images import pixel_limit
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.intensity import spec_of
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.data.shards import ShardSet, is_shard_source, load_shards, open_shards, stream_train_set, train_count
from cnnkit.engine import distributed as dist_utils
from cnnkit.engine.callbacks import read_history
from cnnkit.engine.checkpoint import load_exact, load_matching, load_weights, read_metadata, read_state_dict, recorded_model
from cnnkit.engine.diagnose import underfit_warning
from cnnkit.engine.rundir import latest_run_dir, next_run_dir, write_json
from cnnkit.engine.transfer import load_backbone, plan_transfer
from cnnkit.engine.trainer import fit, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.report import write_report
from cnnkit.version import __version__

T = TypeVar("T")


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
    if not cfg.resume and "resume" not in explicit and dist_utils.launched_by_torchrun():
        # elastic: a group torchrun restarts (or a job requeued after preemption) continues from the run's checkpoint
        restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
        found = Path(cfg.out) if cfg.out else (Path("runs") / task / cfg.name if cfg.name else
                                               latest_run_dir(task) if restarted else None)
        if found is not None and (found / "checkpoint.pt").is_file():
            cfg = replace(cfg, resume=True, out=str(found))
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
    shards = open_shards(cfg.data) if is_shard_source(cfg.data) else None
    if shards is not None:
        dataset = _load_shards(cfg, shards, recipe)
    else:
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
        n_params = sum(p.numel() for p in model.parameters())
        counts = ", ".join(f"{name} {len(s)}" for name, s in dataset.splits.items())
        console.print(f"cnnkit {__version__}  {recipe.task} {cfg.model} ({n_params / 1e6:.2f}M params)  {len(dataset.classes)} classes  "
                      f"images: {counts}  device {device}" + (f" x{dist_utils.world_size()}" if dist_utils.world_size() > 1 else ""))
    if cfg.lr == "auto":  # config.yaml keeps the rate found, so --resume trains on with it
        cfg = replace(cfg, lr=find_learning_rate(cfg, task, model, train_set, recipe.collate, device, plan, run_dir))
    if main:
        write_yaml(run_dir / "config.yaml", cfg.to_dict())
    if main and plan.mode != "scratch":
        console.print(f"transfer: {plan.mode}" + (f", backbone lr x{plan.backbone_lr_mult:g}" if plan.mode in ("finetune", "gradual") else ""))
    if shards is not None:
        train_set = stream_train_set(train_set, shards, cfg.seed)
    sampler = recipe.train_sampler(cfg, dataset.splits["train"]) if recipe.train_sampler else None
    if shards is not None and (sampler is not None or getattr(cfg, "balance", "none") == "smote"):
        raise CnnkitError(f"{cfg.data}: streamed shards are read in their own order", "balance classes with --balance weights, "
                          "or train from a folder for samplers and SMOTE")
    on_features = recipe.train_on_features(cfg, dataset, model, task, device, run_dir) if recipe.train_on_features else None
    if on_features is not None:
        task, train_set = on_features
    result = fit(task, model, train_set, val_set, cfg, run_dir, metadata, recipe.collate, device, plan, sampler)
    dist_utils.cleanup()
    if not main:
        return Run(run_dir, result.metrics, result.best_epoch)
    metrics = recipe.finish(cfg, run_dir, dataset, device)
    return Run(run_dir, metrics, result.best_epoch)


def _load_shards(cfg: TrainOptions, shards: ShardSet, recipe: "Recipe") -> Any:
    """The dataset of a shard folder (data/shards.py): rank 0 unpacks val and test into the cache, the others wait."""
    if shards.task != recipe.task:
        raise CnnkitError(f"{cfg.data}: shards of a {shards.task} dataset", f"`cnnkit {shards.task} train` trains them")
    dataset = load_shards(shards) if dist_utils.is_main() else None
    dist_utils.barrier()
    dataset = dataset or load_shards(shards, unpack=False)
    if dist_utils.is_main():
        console.print(f"streaming {len(shards.train_urls)} train shard{'s' if len(shards.train_urls) > 1 else ''} "
                      f"({train_count(shards)} images) from {shards.base}")
    return dataset


def find_learning_rate(cfg: TrainOptions, task: Any, model: nn.Module, train_set: Any, collate: Callable, device: torch.device,
                       plan: Any, run_dir: Path) -> float:
    """--lr auto: engine.lr_find's range test on the training data with the run's optimizer (and transfer plan),
    on rank 0; its plot goes to plots/lr_find.png and every rank trains with its suggestion."""
    from cnnkit.engine.lr_find import broadcast_lr, plot_range_test, range_test
    from cnnkit.engine.optim import build_optimizer
    from cnnkit.engine.trainer import make_loader, to_device
    from cnnkit.engine.transfer import freeze_for_run

    lr = float("nan")
    if dist_utils.is_main():
        loader = make_loader(train_set, cfg.batch, cfg.workers, True, cfg.seed, collate, device)
        model.to(device)
        freeze_for_run(model, plan)
        result = range_test(task, model, loader, lambda start: build_optimizer(
            model, cfg.optimizer, start, cfg.momentum, cfg.weight_decay, head=set(plan.head), backbone_lr_mult=plan.backbone_lr_mult),
            device, to_device=lambda batch: to_device(batch, device, cfg.channels_last))
        path = plot_range_test(result, run_dir / "plots" / "lr_find.png")
        console.print(f"lr range test: --lr {result.suggestion:.2e} (loss lowest at {result.minimum:.2e}, falling fastest at "
                      f"{result.steepest:.2e}); plot {path}")
        lr = result.suggestion
    return broadcast_lr(lr) if dist_utils.world_size() > 1 else lr


def evaluate_run_splits(run_dir: Path, splits: dict[str, Any],
                        evaluate_split: Callable[[str, Any], tuple[dict[str, Any], list[Path]]]) -> tuple[dict[str, Any], list[Path]]:
    """The end of a training run, for every task: the history plot, then ``evaluate_split(split, samples)``
    on val (its metrics at the top level) and test (under "test") where the dataset has them."""
    paths = [plots.plot_history(read_history(run_dir / "history.csv"), run_dir / "plots" / "history.png")]
    if (run_dir / "plots" / "lr_find.png").is_file():  # --lr auto's range test
        paths.append(run_dir / "plots" / "lr_find.png")
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


def finish_best_run(cfg: TrainOptions, run_dir: Path, splits: dict[str, Any],
                    evaluate_split: Callable[[str, Any], tuple[dict[str, Any], list[Path]]], title: str,
                    headline: Callable[[dict[str, Any]], str],
                    cost: tuple[int | None, float | None] | None = None) -> dict[str, Any]:
    """A recipe's finish once it has loaded the best weights: evaluate_run_splits, the model's ``cost``
    (parameters, GFLOPs) as metrics where the task records it, then publish_run with ``headline(metrics)``."""
    metrics, paths = evaluate_run_splits(run_dir, splits, evaluate_split)
    if cost is not None:
        metrics["params"], metrics["gflops"] = cost
    warning = run_diagnosis(run_dir, metrics)
    if warning:
        metrics["warnings"] = [warning]
    publish_run(run_dir, title, cfg, metrics, paths, headline(metrics))
    if warning:
        warn(warning)
    return metrics


def run_diagnosis(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """engine.diagnose on the run's history, the best epoch being the one best.safetensors holds."""
    best = run_dir / "weights" / "best.safetensors"
    if not best.is_file():
        return None
    meta = read_metadata(best)
    return underfit_warning(read_history(run_dir / "history.csv"), meta.get("primary_metric", "metric"),
                            best_epoch=int(meta.get("epoch", 0)) or None)


def publish_run(run_dir: Path, title: str, cfg: TrainOptions, metrics: dict[str, Any], paths: list[Path], headline: str) -> None:
    """metrics.json and report.html of a finished run, and its one-line result on the console."""
    publish(run_dir, title, cfg.to_dict(), metrics, paths, headline, where="\nresults in {dir}  report: {report}")


def publish(out_dir: Path, title: str, settings: dict[str, Any], metrics: dict[str, Any], paths: list[Path], headline: str,
            where: str = "  report {report}") -> Path:
    """metrics.json and report.html (the scalar metrics, per-class table, ``paths`` as plots, ``settings``) in
    ``out_dir``, then one line on the console: ``headline`` and ``where`` ({dir} and {report} filled in).
    Every verb that measures a model (val, a training run's finish) ends here; returns report.html's path."""
    write_json(out_dir / "metrics.json", metrics)
    report = out_dir / "report.html"
    write_report(report, title, settings, report_summary(metrics), paths, per_class=metrics.get("per_class"),
                 notes=metrics.get("warnings"))
    console.print(headline + where.format(dir=out_dir, report=report))
    return report


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


# ==================================================================== what the task classes share
@dataclass
class ModelFile:
    """A weights file read for a task's class: a cnnkit weights file's tensors (``state``) or a deployed
    file's runnable model (``deployed``, from `cnnkit export` / `cnnkit quantize`), and its metadata."""

    path: Path | None  # None: metadata alone (Detector.from_metadata)
    meta: dict[str, Any]
    state: dict[str, torch.Tensor] | None = None
    deployed: nn.Module | None = None

    @property
    def split(self) -> tuple[float, int]:
        """(val_split, split_seed): how the training run cut val from train, so `val` on such a dataset sees
        the same held-out images (files written before these were recorded: the defaults)."""
        return self.meta.get("val_split", 0.2), self.meta.get("split_seed", 0)

    @property
    def cost(self) -> tuple[int | None, float | None]:
        """(parameters, GFLOPs at imgsz) counted when the run built the model; None where not recorded."""
        return self.meta.get("params"), self.meta.get("gflops")


def read_model_file(path: str | Path, task: str) -> ModelFile:
    """A ``task`` model's file: deployed (.onnx, .pt2, .ts, .int8.pt) or a cnnkit weights file; a file of
    another task is refused in one line (load_deployed_for, load_weights)."""
    from cnnkit.compress.runtime import is_deployed, load_deployed_for  # onnxruntime and friends: only when asked

    if is_deployed(path):
        model, meta = load_deployed_for(path, task)
        return ModelFile(Path(path), meta, deployed=model)
    state, meta = load_weights(path, task=task)
    return ModelFile(Path(path), meta, state=state)


def adopt_model_file(owner: Any, file: ModelFile, wrap_deployed: Callable[[nn.Module], nn.Module] | None = None) -> Any:
    """``owner`` (a task class, built from ``file.meta``) takes the file: its network gets the tensors, or
    becomes the deployed model (through ``wrap_deployed`` where the class runs it behind an adapter); and
    records the file's path, split and cost. A file with neither (read for its metadata) leaves the model."""
    if file.deployed is not None:
        owner.model = wrap_deployed(file.deployed) if wrap_deployed else file.deployed
    elif file.state is not None:
        load_exact(owner.model, file.state, file.path, file.meta.get("model"))
    owner.val_split, owner.split_seed = file.split
    owner.cost = file.cost
    owner.weights_path = file.path
    return owner


def split_samples(data: str | Path, splits: dict[str, Any], split: str) -> Any:
    """The samples of ``split``, or the one-line error naming the data, the split and those it has."""
    if split not in splits:
        raise CnnkitError(f"{data}: no '{split}' split", f"available: {', '.join(splits)}")
    return splits[split]


def beside_run(out: str | Path | None, weights_path: Path | None, task: str, name: str = "val") -> Path:
    """Where a verb on a loaded model writes: ``out``, else NAME/ beside the weights' run directory
    (runs/TASK/NAME for weights never saved)."""
    if out is not None and str(out) != "":
        return Path(out)
    return weights_path.parent.parent / name if weights_path else Path("runs") / task / name


def write_predictions(out_dir: Path, results: list[dict[str, Any]], split: str = "val") -> Path:
    """COCO results (detections, instances) of a split: predictions.json for val, predictions_SPLIT.json
    for the others of a training run (`val` passes none: its one split writes predictions.json)."""
    return write_json(out_dir / ("predictions.json" if split == "val" else f"predictions_{split}.json"), results)


def read_in_batches(files: Sequence[tuple], batch: int, read: Callable[[Path], T], label: str,
                    what: str = "files") -> Iterator[list[tuple[int, T]]]:
    """``files`` ((path, named, …) rows) read by ``read(path)`` under one progress bar, ``batch`` at a time:
    each batch as [(index in files, what was read)]. A file found in a folder or glob that cannot be read is
    skipped with a warning, one named directly stops with its one-line error (console.Skips); how many were
    skipped is said at the end."""
    skips = Skips()
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(files), info="", rate="", visible=bool(files))  # none: predict read videos only
        for start in range(0, len(files), batch):
            chunk = []
            for k in range(start, min(start + batch, len(files))):
                path, named = files[k][0], files[k][1]
                value = skips.read(path, named, lambda: read(path))
                if value is not None:
                    chunk.append((k, value))
            yield chunk
            bar.update(task, advance=min(batch, len(files) - start))
    skips.report(len(files), what)
