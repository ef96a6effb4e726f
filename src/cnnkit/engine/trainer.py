"""The one training loop. Every task plugs in through three functions (see ``Task``); the loop owns
device placement, mixed precision, channels_last, torch.compile, gradient accumulation and
clipping, the optimizer and schedule, EMA, DDP, early stopping, checkpoints and resume.

    state = resume or fresh
    for epoch in range(start, epochs):
        for step, batch in enumerate(train_loader):          # 1) forward under autocast
            losses = task.train_loss(model, batch)           # 2) backward (scaled for fp16)
            ...                                              # 3) every `accumulate` steps: clip, step, schedule, EMA
        metrics = evaluate(task, ema or model, val_loader)   # 4) gathered over ranks
        history.csv, weights/{last,best}.safetensors, checkpoint.pt   (rank 0, atomic)
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from cnnkit.config import TrainOptions
from cnnkit.console import console
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError
from cnnkit.engine.callbacks import EpochProgress, progress_bar, write_history
from cnnkit.engine.rundir import copy_file
from cnnkit.engine.transfer import TransferPlan, apply_freeze, freeze_for_run
from cnnkit.engine.checkpoint import (
    FORMAT,
    deployable_state,
    load_checkpoint,
    save_checkpoint,
    save_state_dict,
    unwrap,
)
from cnnkit.engine.optim import WARMUP_SHARE, build_optimizer, build_scheduler


class Task(Protocol):
    """What a task gives the engine. Batches are whatever the task's collate function returns. A task that
    adds submodules to the model for training only (distillation's hint regressor) names them in an
    optional ``training_only`` tuple: checkpoints keep them, weights files leave them out."""

    primary_metric: str  # higher is better; picks best.safetensors and drives early stopping

    def train_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """{"loss": scalar to backprop, other detached parts to log}."""

    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Per-sample outputs (first dim = batch), concatenated over batches and processes."""

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Metrics from all outputs of the validation set."""


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int
    best_metric: float
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, … in order: every sample evaluated exactly once across ranks
    (DistributedSampler pads with repeats, which would bias metrics)."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset, batch_size: int, workers: int, train: bool, seed: int,
                collate_fn: Callable | None = None, device: torch.device | None = None,
                sampler: Sampler | None = None) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): ``set_epoch`` reseeds the shuffle and the
    workers' base seed, which is what makes --resume land on the same weights."""
    world, rank = dist_utils.world_size(), dist_utils.rank()
    if isinstance(dataset, IterableDataset):  # streamed shards (data/shards.py): the stream deals samples to ranks itself
        per_rank = max(1, batch_size // world)
        dataset.plan(per_rank, rank, world, workers)
        if workers > 0:
            _no_opencv_pool()
        return DataLoader(dataset, batch_size=per_rank, num_workers=workers, collate_fn=collate_fn,
                          pin_memory=device is not None and device.type == "cuda", generator=torch.Generator().manual_seed(seed),
                          worker_init_fn=_single_threaded_worker if workers > 0 else None)
    # a sampler passed in is the task's own order (already sharded per rank), e.g. class-balanced batches
    if sampler is None and train:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    elif sampler is None:
        sampler = ShardSampler(len(dataset), rank, world)
    per_rank = max(1, batch_size // world) if train else batch_size
    if workers > 0:
        _no_opencv_pool()
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=device is not None and device.type == "cuda",
        # BatchNorm cannot train on a final batch of one image; keep at least one batch though
        drop_last=train and len(sampler) > per_rank,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=_single_threaded_worker if workers > 0 else None,
    )


def _no_opencv_pool() -> None:
    """OpenCV's thread pool must not exist when the loader forks its workers: a worker inherits the pool's
    state without its threads, and its first OpenCV call that touches the pool (setNumThreads in
    _single_threaded_worker, or any parallel function) waits forever on a lock (seen: text detection, whose
    validation post-processing runs OpenCV in the main process between epochs). With one thread, OpenCV
    stops its pool threads in this process, so the forks that follow start clean."""
    import cv2

    cv2.setNumThreads(1)


def _single_threaded_worker(worker_id: int) -> None:
    """A loader worker is one process per core (PyTorch already sets its torch threads to 1);
    OpenCV's own thread pool, used by the augmentations, would otherwise oversubscribe the cores."""
    import cv2

    cv2.setNumThreads(1)


def set_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    if callable(getattr(loader.sampler, "set_epoch", None)):
        loader.sampler.set_epoch(epoch)
    if callable(getattr(loader.dataset, "set_epoch", None)):  # e.g. detection's mosaic, off for the last epochs
        loader.dataset.set_epoch(epoch)
    loader.generator.manual_seed(seed * 1000 + epoch)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def batch_images(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(first)


def cpu_runs_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (oneDNN's check: AVX-512 or AMX on x86, BF16 on Arm). Without it
    bf16 is emulated: a DBNet training step under bf16 autocast took 11 s against 1.2 s in float32 on an AVX2 EPYC."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: let autocast decide
        return True


def autocast_dtype(device: torch.device, amp: bool, amp_dtype: str) -> torch.dtype | None:
    """None when mixed precision is off; fp16 by default on CUDA; bf16 on CPU, but with ``amp_dtype`` "auto" only
    where the CPU has bf16 instructions (elsewhere float32, with a warning: emulated bf16 is ten times slower)."""
    if not amp:
        return None
    if device.type == "cpu" and amp_dtype == "auto" and not cpu_runs_bf16():
        from cnnkit.console import warn

        warn("--amp: this CPU has no bf16 instructions (AVX-512 or AMX), where bf16 runs about ten times slower "
             "than float32; training in float32 (--amp-dtype bf16 forces it)", once_key="amp-cpu-bf16")
        return None
    if amp_dtype == "bf16" or device.type == "cpu":
        return torch.bfloat16
    return torch.float16 if amp_dtype in ("auto", "fp16") else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False, show: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metrics, outputs) over the whole loader, outputs gathered from every process."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    show = show and dist_utils.is_main()
    with progress_bar(transient=True) if show else contextlib.nullcontext() as bar:
        task_id = bar.add_task("evaluate", total=len(loader), info="", rate="") if show else None
        started, seen = time.perf_counter(), 0
        for batch in loader:
            if batch is None:
                continue
            batch = to_device(batch, device, channels_last)
            with autocast(device, amp_dtype):
                out = task.eval_step(model, batch)
            for key, value in out.items():
                chunks.setdefault(key, []).append(value.detach().float().cpu() if value.is_floating_point() else value.detach().cpu())
            seen += batch_images(batch)
            if show:
                bar.update(task_id, advance=1, rate=f"{seen / max(time.perf_counter() - started, 1e-9):.0f} img/s")
    local = {k: torch.cat(v).numpy() for k, v in chunks.items()}
    parts = [p for p in dist_utils.gather(local) if p]
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    return task.metrics(outputs), outputs


@torch.no_grad()
def recalibrate_batchnorm(task: Task, model: nn.Module, loader: DataLoader, batches: int, device: torch.device,
                          amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> int:
    """PreciseBN (as in Detectron2): recompute the running statistics of every BatchNorm layer that
    trains, as a plain average over ``batches`` training batches with the current weights.

    Why: running statistics are an exponential average over past steps, while the weights under them
    keep moving. Early in a run from scratch, with a high learning rate, the two drift apart so far
    that a detector in eval mode found nothing on the very images it had just fitted (measured on
    the shapes data: best score 0.007 in eval mode, 0.99 with batch statistics or after this).
    Frozen layers (already in eval mode) keep their statistics. Returns the batches used."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if not layers or batches <= 0:
        return 0
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average
    used = 0
    for batch in loader:
        if batch is None:
            continue
        batch = to_device(batch, device, channels_last)
        with autocast(device, amp_dtype):
            task.train_loss(model, batch)
        used += 1
        if used >= batches:
            break
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    if dist_utils.world_size() > 1:  # every rank saw its own shard: average the statistics
        import torch.distributed as dist

        for layer in layers:
            for buffer in (layer.running_mean, layer.running_var):
                dist.all_reduce(buffer)
                buffer /= dist_utils.world_size()
    return used


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), np_state[2], np_state[3], np_state[4]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Preempted(CnnkitError):
    """The run stopped on SIGTERM after writing its checkpoint."""


class StopRequest:
    """SIGTERM (what a scheduler sends before it preempts a job, and torchrun before it restarts a group) asks the
    loop to write a checkpoint at its next optimizer step and stop. Under DDP the ranks agree first (a max over one
    number every ``every`` steps), so that all of them save at the same step; alone, the check is a flag read."""

    def __init__(self, every: int = 10):
        self.flag, self.every, self.previous = False, every, None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (a training run inside a server or a notebook worker): no handler
            self.previous = None

    def _handle(self, signum, frame) -> None:
        self.flag = True

    def requested(self, step: int, world: int, device: torch.device) -> bool:
        if world == 1:
            return self.flag
        if step % self.every:
            return False
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.flag else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


@dataclass
class WithinEpoch:
    """Where a checkpoint written inside an epoch left it: batches done, the epoch's loss sums so far, and what changed."""

    step: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    counted: int = 0
    message: str = ""


def resume_within_epoch(state: dict[str, Any], steps_now: int, world: int, batch: int) -> WithinEpoch:
    """The position inside the epoch a checkpoint records, for this many processes. A run resumed on another number
    of processes keeps --batch as the global batch (each process takes its share), but the data order and the
    steps per epoch change with the world size: it is said, and an epoch begun is resumed at the same fraction."""
    step, saved_world = int(state.get("step", 0)), int(state.get("world", world))
    within = WithinEpoch(step, dict(state.get("loss_sums") or {}), int(state.get("counted", 0)))
    if saved_world != world:
        before, now = int(state.get("global_batch", dist_utils.global_batch(batch, saved_world))), dist_utils.global_batch(batch, world)
        within.message = (f"the checkpoint was written by {saved_world} process{'es' if saved_world > 1 else ''}, this run has "
                          f"{world}: global batch {now} (was {before}), {max(1, batch // world)} per process; the data order "
                          "differs from here on, so the result will not match an uninterrupted run bit for bit")
        if step:
            within.step = min(steps_now - 1, round(step * steps_now / max(1, int(state.get("steps_in_epoch", step)))))
    return within


def check_ranks_agree(model: nn.Module, loader: DataLoader, samples: int, main: bool) -> None:
    """Under DDP, after the first epoch a run trains: every rank holds the same weights (a float64 sum and a sum of
    squares of every parameter, compared exactly), and the ranks' shards of the epoch cover the training set with
    no image on two ranks but DistributedSampler's padding. A rank out of step is a warning naming it."""
    with torch.no_grad():
        params = [p.detach().double() for p in model.parameters()]
        checksum = (float(sum(p.sum() for p in params)), float(sum((p * p).sum() for p in params)))
    streamed = isinstance(loader.dataset, IterableDataset)  # its sampler is endless; the stream deals shards itself
    sampler = None if streamed else loader.sampler
    seen = list(iter(sampler))[: len(loader) * (loader.batch_size or 1)] if sampler is not None else []
    reports = dist_utils.gather({"checksum": checksum, "seen": seen})
    if not main:
        return
    from cnnkit.console import warn

    differ = [k for k, r in enumerate(reports) if r["checksum"] != reports[0]["checksum"]]
    if differ:
        warn(f"DDP: the weights of rank{'s' if len(differ) > 1 else ''} {', '.join(map(str, differ))} differ from rank 0's after "
             "the first epoch: the processes are out of step (a model whose parameters change outside the optimizer?)")
    counts = np.bincount(np.concatenate([np.asarray(r["seen"], dtype=np.int64) for r in reports]), minlength=samples)
    padding = (-samples) % len(reports)  # DistributedSampler repeats this many images so every rank gets as many
    state = f"weights identical on {len(reports)} ranks" if not differ else "weights differ"
    if streamed:
        console.print(f"DDP check: {state}; each rank streamed {len(loader)} batches from its own shards")
        return
    console.print(f"DDP check: {state}; {int((counts == 1).sum())} of {samples} training images seen once this epoch, "
                  f"{int((counts > 1).sum())} twice (the sampler's padding: at most {padding}), {int((counts == 0).sum())} not "
                  "(the last partial batches)")


def _write_epoch(run_dir: Path, weights: dict, checkpoint: dict, meta: dict, best: bool, history: list[dict]) -> None:
    """An epoch's files, in an order that keeps the run consistent wherever a kill lands: weights,
    history, and the checkpoint last (if we die before it, resume redoes this epoch)."""
    save_state_dict(weights, run_dir / "weights" / "last.safetensors", meta)
    if best:
        copy_file(run_dir / "weights" / "last.safetensors", run_dir / "weights" / "best.safetensors")
    write_history(run_dir / "history.csv", history)
    save_checkpoint(run_dir / "checkpoint.pt", checkpoint)


def fit(task: Task, model: nn.Module, train_set: Dataset, val_set: Dataset, cfg: TrainOptions, run_dir: Path,
        metadata: dict[str, Any], collate_fn: Callable | None = None, device: torch.device | None = None,
        transfer: TransferPlan | None = None, train_sampler: Sampler | None = None) -> FitResult:
    """Train ``model`` on ``train_set``; evaluate on ``val_set`` after every epoch; write the run directory.
    ``transfer`` says which parameters train when, and the backbone's learning-rate multiplier;
    ``train_sampler`` (with ``set_epoch``, sharded per rank) replaces the shuffled DistributedSampler."""
    device = device or dist_utils.select_device(cfg.device)
    main = dist_utils.is_main()
    world = dist_utils.world_size()
    raw_model = unwrap(model).to(device)
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)

    train_loader = make_loader(train_set, cfg.batch, cfg.workers, True, cfg.seed, collate_fn, device, train_sampler)
    val_loader = make_loader(val_set, cfg.batch, cfg.workers, False, cfg.seed, collate_fn, device)
    steps_per_epoch = max(1, len(train_loader) // cfg.accumulate)
    total_steps = steps_per_epoch * cfg.epochs
    if transfer is not None:
        freeze_for_run(raw_model, transfer)
    optimizer = build_optimizer(raw_model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                                head=set(transfer.head) if transfer else None,
                                backbone_lr_mult=transfer.backbone_lr_mult if transfer else 1.0)
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else WARMUP_SHARE * cfg.epochs
    scheduler = build_scheduler(optimizer, total_steps, int(warmup_epochs * steps_per_epoch), cfg.scheduler, cfg.min_lr_ratio)
    amp_dtype = autocast_dtype(device, cfg.amp, cfg.amp_dtype)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device.type == "cuda")
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(raw_model, decay=cfg.ema_decay, use_warmup=True)

    start_epoch, best_metric, best_epoch, bad_epochs, history = 0, -float("inf"), -1, 0, []
    checkpoint_path = run_dir / "checkpoint.pt"
    within, resumed_rng = WithinEpoch(), None
    if cfg.resume:
        state = load_checkpoint(checkpoint_path)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, best_metric, best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
        bad_epochs, history = state["bad_epochs"], list(state["history"])
        rng = state["rng"]
        resumed_rng = rng[dist_utils.rank()] if dist_utils.rank() < len(rng) else rng[0]
        within = resume_within_epoch(state, len(train_loader), world, cfg.batch)
        if within.step == 0:  # an epoch boundary; inside an epoch the state is set once the loader is back at the step
            _set_rng_state(resumed_rng)
        if main:
            where = f"epoch {start_epoch + 1}/{cfg.epochs}" + (f", step {within.step + 1}/{len(train_loader)}" if within.step else "")
            console.print(f"resuming {run_dir} from {where}" if start_epoch < cfg.epochs
                          else f"{run_dir}: all {cfg.epochs} epochs are done; writing its results again")
            if within.message:
                console.print(within.message)

    train_model: nn.Module = raw_model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    def state_now(epoch_done: int, step: int, loss_sums: dict[str, Any], counted: int) -> dict[str, Any]:
        """The checkpoint: ``epoch_done`` whole epochs and ``step`` batches of the next (0 at an epoch's end)."""
        return {"format": FORMAT, "epoch": epoch_done, "step": step, "steps_in_epoch": len(train_loader), "world": world,
                "global_batch": dist_utils.global_batch(cfg.batch, world), "loss_sums": {k: float(v) for k, v in loss_sums.items()},
                "counted": counted, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None, "best_metric": best_metric, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history, "rng": dist_utils.gather(_rng_state())}

    def save_within_epoch(epoch: int, step: int, loss_sums: dict[str, Any], counted: int) -> None:
        state = state_now(epoch, step, loss_sums, counted)  # every rank: the RNG states are gathered
        if main:
            save_checkpoint(checkpoint_path, state)
        dist_utils.barrier()

    progress = EpochProgress(enabled=main, epochs=cfg.epochs)
    metrics: dict[str, Any] = {}
    stopped_early = False
    stop = StopRequest()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            set_epoch(train_loader, cfg.seed, epoch)
            train_model.train()
            frozen = apply_freeze(raw_model, transfer.frozen(epoch)) if transfer is not None else []
            skip = within.step if epoch == start_epoch else 0
            progress.start_epoch(epoch, len(train_loader) - skip)
            loss_sums: dict[str, torch.Tensor] = {k: torch.tensor(v) for k, v in within.loss_sums.items()} if skip else {}
            counted = within.counted if skip else 0
            optimizer.zero_grad(set_to_none=True)
            for step, batch in enumerate(train_loader):
                if step < skip:  # resuming inside the epoch: the loader goes through the batches already trained on, so its
                    if step == skip - 1:  # workers' random streams stay where they were; then the saved state takes over
                        _set_rng_state(resumed_rng)
                    continue
                if batch is None:  # every image of the batch was unreadable (already warned)
                    continue
                batch = to_device(batch, device, cfg.channels_last)
                do_step = (step + 1) % cfg.accumulate == 0 or step + 1 == len(train_loader)
                sync = contextlib.nullcontext() if do_step or world == 1 else train_model.no_sync()
                with sync:
                    with autocast(device, amp_dtype):
                        losses = task.train_loss(train_model, batch)
                    loss = losses["loss"] / cfg.accumulate if cfg.accumulate > 1 else losses["loss"]
                    scaler.scale(loss).backward()
                if do_step:
                    for param in frozen:  # gradual unfreezing: not yet this part of the backbone
                        param.grad = None
                    if cfg.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    if ema is not None:
                        ema.update(raw_model, step=scheduler.last_epoch)
                for key, value in losses.items():
                    loss_sums[key] = loss_sums.get(key, 0.0) + value.detach().float()
                counted += 1
                # reading the loss forces a device sync: only when the bar is redrawn
                progress.advance(batch_images(batch), (loss_sums["loss"] / counted).item() if progress.due() else None)
                if do_step and step + 1 < len(train_loader):
                    if stop.requested(step, world, device):
                        save_within_epoch(epoch, step + 1, loss_sums, counted)
                        progress.close()
                        raise Preempted(f"{run_dir}: stopped by SIGTERM at epoch {epoch + 1}, step {step + 1}/{len(train_loader)}; "
                                        "checkpoint.pt holds the run", "continue it with --resume (under torchrun it continues by itself)")
                    if cfg.save_every_steps and scheduler.last_epoch % cfg.save_every_steps == 0:
                        save_within_epoch(epoch, step + 1, loss_sums, counted)

            images_per_s = progress.images_per_s() * world
            eval_model = ema.module if ema is not None else raw_model
            if getattr(cfg, "precise_bn", 0) > 0:
                eval_model.train()
                apply_freeze(eval_model, transfer.frozen(epoch) if transfer is not None else set())
                recalibrate_batchnorm(task, eval_model, train_loader, cfg.precise_bn, device, amp_dtype, cfg.channels_last)
            metrics, _ = evaluate(task, eval_model, val_loader, device, amp_dtype, cfg.channels_last)
            train_losses = {f"train_{k}": (v / max(counted, 1)) for k, v in loss_sums.items()}
            reduced = dist_utils.gather({k: float(v) for k, v in train_losses.items()})
            row: dict[str, float] = {"epoch": epoch + 1}
            row.update({k: float(np.mean([r[k] for r in reduced if k in r])) for k in train_losses})
            row.update({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            row.update({"lr": optimizer.param_groups[0]["lr"], "images_per_s": images_per_s,
                        "time": time.perf_counter() - progress.started})
            history.append(row)
            current = float(metrics[task.primary_metric])
            improved = current > best_metric
            if improved:
                best_metric, best_epoch, bad_epochs = current, epoch + 1, 0
            else:
                bad_epochs += 1
            if world > 1 and epoch == start_epoch:
                check_ranks_agree(raw_model, train_loader, len(train_set), main)
            state = state_now(epoch + 1, 0, {}, 0)
            if main:
                epoch_meta = {**metadata, "epoch": epoch + 1, "primary_metric": task.primary_metric,
                              "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
                # written synchronously: on a 2-core CPU a writer thread slowed the next epoch more
                # than the write itself costs (measured with benchmarks/train_overhead.py)
                _write_epoch(run_dir, deployable_state(eval_model, getattr(task, "training_only", ())), state, epoch_meta, improved,
                             history)
            progress.end_epoch(row, improved, task.primary_metric)
            dist_utils.barrier()
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
                if main:
                    console.print(f"early stop: no {task.primary_metric} improvement for {cfg.patience} epochs (best {best_metric:.4f} at epoch {best_epoch})")
                break
    finally:
        stop.restore()
    return FitResult(run_dir, best_epoch, best_metric, metrics, history, stopped_early)
