"""`--lr auto`: the learning-rate range test (Leslie Smith, "Cyclical Learning Rates for Training Neural
Networks", 2017; popularised by fast.ai's lr_find). Before training, the learning rate grows exponentially
from ``start`` to ``end`` over at most ``steps`` optimizer steps on the training data while the loss is
recorded; the test stops once the smoothed loss exceeds four times its minimum. The suggestion is the rate
where the smoothed loss falls fastest (the steepest negative slope of loss over log lr), capped at a tenth
of the rate at the loss minimum, the two rules fast.ai offers. The model's and optimizer's state are
restored afterwards, so training starts from the same initial weights as without the test.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError

SMOOTHING = 0.9  # exponential moving average of the loss, with bias correction
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    suggestion: float = float("nan")
    steepest: float = float("nan")
    minimum: float = float("nan")


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float, float]:
    """(suggested lr, lr of steepest descent, lr at the smoothed minimum) from a range test's curve. The
    suggestion is a tenth of the rate at the minimum (fast.ai's first rule: the minimum is already where
    training starts to fail), never above the steepest-descent rate times three."""
    if len(lrs) < 8:
        raise CnnkitError(f"--lr auto: the range test ran only {len(lrs)} steps, too few to read a curve",
                          "use more training images or a smaller --batch, or set --lr")
    log_lr, loss = np.log10(np.asarray(lrs)), np.asarray(losses)
    lowest = int(np.argmin(loss))
    skip = max(1, len(loss) // 10)  # the first steps' smoothed loss is still noisy
    slopes = np.gradient(loss, log_lr)[skip:max(skip + 1, lowest)]  # before the minimum only
    minimum = float(lrs[lowest])
    steepest = float(lrs[skip + int(np.argmin(slopes))]) if slopes.size else minimum / 10
    return min(minimum / 10, 3 * steepest), steepest, minimum


def range_test(task: Any, model: nn.Module, loader: Any, make_optimizer: Callable[[float], torch.optim.Optimizer],
               device: torch.device, steps: int = 100, start: float = 1e-6, end: float = 1.0,
               to_device: Callable[[Any], Any] = lambda batch: batch) -> RangeTest:
    """Run the test on ``model`` with the optimizer ``make_optimizer(lr)`` builds; leaves the model as it found it."""
    saved = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(start)
    base = [group["lr"] for group in optimizer.param_groups]  # per-group ratios (a backbone at a multiplier)
    total = max(2, min(steps, _length(loader) * 50))
    factor = (end / start) ** (1.0 / (total - 1))
    result = RangeTest()
    average, best = 0.0, math.inf
    model.train()
    step = 0
    from cnnkit.console import progress_bar

    try:
        with progress_bar(transient=True) as bar:
            bar_task = bar.add_task("lr range test", total=total, info="", rate="")
            while step < total:
                ran = step
                for batch in loader:
                    if batch is None:
                        continue
                    lr = start * factor**step
                    for group, first in zip(optimizer.param_groups, base):
                        group["lr"] = lr * first / start
                    optimizer.zero_grad(set_to_none=True)
                    loss = task.train_loss(model, to_device(batch))["loss"]
                    if not torch.isfinite(loss):
                        step = total
                        break
                    loss.backward()
                    optimizer.step()
                    average = SMOOTHING * average + (1 - SMOOTHING) * loss.item()
                    smoothed = average / (1 - SMOOTHING ** (step + 1))
                    result.lrs.append(lr)
                    result.losses.append(smoothed)
                    best = min(best, smoothed)
                    step += 1
                    bar.update(bar_task, completed=step, info=f"lr {lr:.1e} loss {smoothed:.3f}")
                    if step >= total or (step > 10 and smoothed > DIVERGED * best):
                        step = total
                        break
                if step == ran:  # a pass without one usable batch: another pass would loop forever
                    break
    finally:  # also when a step fails (out of memory at a large batch): the caller's weights, untouched
        model.load_state_dict(saved)
    result.suggestion, result.steepest, result.minimum = suggest(result.lrs, result.losses)
    return result


def _length(loader: Any) -> int:
    try:
        return max(1, len(loader))
    except TypeError:
        return 1


def plot_range_test(result: RangeTest, path: Path) -> Path:
    """The loss against the learning rate (log scale) with the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.engine.rundir import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested lr {result.suggestion:.2e}")
    ax.axvline(result.minimum, color="tab:grey", linestyle=":", label=f"loss minimum at {result.minimum:.2e}")
    top = min(max(result.losses), 2.5 * min(result.losses[: max(1, len(result.losses) // 2)] or result.losses))
    ax.set_ylim(min(result.losses) * 0.95, max(top, min(result.losses) * 1.2))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def broadcast_lr(lr: float) -> float:
    """Rank 0's suggestion on every rank, so all processes train with one rate."""
    return float(dist_utils.broadcast(repr(lr)))
