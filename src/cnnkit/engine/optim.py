"""Optimizers (SGD, AdamW) and the learning-rate schedule (linear warm-up, then cosine or constant)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn


# --warmup-epochs none: the warm-up takes this share of the run, as one-cycle's does (Smith & Topin 2017;
# PyTorch's OneCycleLR pct_start): a long climb to a high peak rate was what a small CNN trained from
# scratch needed on the quality suite (docs/recipes.md)
WARMUP_SHARE = 0.3

def param_groups(params: nn.Module | Iterable[tuple[str, nn.Parameter]], weight_decay: float, lr: float | None = None) -> list[dict]:
    """Decay conv/linear weights only: decaying biases and norm scales hurts accuracy for no gain.
    ``params`` is a model or (name, parameter) pairs; ``lr`` sets the groups' own rate."""
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:  # frozen for the whole run (--transfer linear)
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    extra = {} if lr is None else {"lr": lr}
    return [{"params": decay, "weight_decay": weight_decay, **extra}, {"params": no_decay, "weight_decay": 0.0, **extra}]


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
                    head: set[str] | None = None, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW. With ``head`` (parameter names) and ``backbone_lr_mult``, every other
    parameter trains at ``lr * backbone_lr_mult``: the fine-tuning recipe of transfer learning.
    Parameters frozen for a while (gradual unfreezing) keep requires_grad and stay in: they get no
    gradient while frozen, and optimizers skip those."""
    if head is not None and backbone_lr_mult != 1.0:
        backbone = [(n, p) for n, p in model.named_parameters() if n not in head]
        top = [(n, p) for n, p in model.named_parameters() if n in head]
        groups = param_groups(backbone, weight_decay, lr * backbone_lr_mult) + param_groups(top, weight_decay, lr)
    else:
        groups = param_groups(model, weight_decay)
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    # 1) linear warm-up from a small fraction of the peak
    if step < warmup_steps:
        return max(step + 1, 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    # 2) cosine decay from the peak down to min_ratio at the last step
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule, min_ratio)
    )
