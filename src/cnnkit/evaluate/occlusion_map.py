"""Occlusion sensitivity (Zeiler & Fergus, ECCV 2014): where hiding the image costs the class its score.

    result = occlusion_map(model, x, target=None, patch=0.2, stride=0.05)   # x: normalised [3, S, S]
    result["map"]     # [S, S] float32: drop of the class probability when that pixel is hidden
    draw_occlusion_map("out/a.png", seen, result, class_names, title="a.png")

A square of the image's mean colour slides over the image the model sees (a fixed grey would
be a bright blob on a dark picture, something the model could read as a stroke rather than as
nothing); every position is one copy of the image, the copies run in batches, and the drop
p(class | clean) - p(class | occluded) is recorded per position. A pixel's value is the mean drop over
the positions whose square covers it. Unlike Grad-CAM it needs no gradients and no layer: only the
model's outputs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from cnnkit.engine.rundir import write_bytes
from cnnkit.errors import CnnkitError

DPI = 100


def check_fraction(name: str, value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise CnnkitError(f"{name} must be a fraction of the image side in (0, 1], got {value}")
    return value


def _starts(side: int, patch: int, step: int) -> list[int]:
    """Square positions along one axis: every ``step`` pixels, and always flush with the far edge."""
    starts = list(range(0, side - patch + 1, step))
    if starts[-1] != side - patch:
        starts.append(side - patch)
    return starts


@torch.no_grad()
def occlusion_map(model: nn.Module, x: torch.Tensor, target: int | None = None, patch: float = 0.2,
                  stride: float | None = None, batch: int = 64) -> dict[str, Any]:
    """Occlusion sensitivity of one normalised image ``x`` [3, H, W] for class ``target`` (None: the
    predicted class). ``patch`` and ``stride`` are fractions of the image side (stride default: a
    quarter of the patch). {"map" [H, W] float32, "grid" [rows, cols] float32 (drop per position),
    "tops" [rows], "lefts" [cols] (pixels), "patch", "stride" (pixels), "probs" [C], "predicted", "target"}."""
    check_fraction("--patch", patch)
    _, height, width = x.shape
    size = max(1, round(patch * min(height, width)))
    step = max(1, round(check_fraction("--stride", stride) * min(height, width)) if stride is not None else round(size / 4))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(model(x[None].to(device)).float(), dim=1)[0].cpu()
        fill = x.mean(dim=(1, 2), keepdim=True)  # [3, 1, 1]
        target = int(probs.argmax()) if target is None else int(target)
        tops, lefts = _starts(height, size, step), _starts(width, size, step)
        positions = [(top, left) for top in tops for left in lefts]
        scores = []
        for start in range(0, len(positions), batch):
            chunk = positions[start:start + batch]
            copies = x[None].repeat(len(chunk), 1, 1, 1)
            for i, (top, left) in enumerate(chunk):
                copies[i, :, top:top + size, left:left + size] = fill
            scores.append(torch.softmax(model(copies.to(device)).float(), dim=1)[:, target].cpu())
    finally:
        model.train(was_training)
    grid = (probs[target] - torch.cat(scores)).reshape(len(tops), len(lefts)).numpy().astype(np.float32)
    # each pixel: the mean drop over the squares that covered it
    total, count = np.zeros((height, width), np.float64), np.zeros((height, width), np.float64)
    for r, top in enumerate(tops):
        for c, left in enumerate(lefts):
            total[top:top + size, left:left + size] += grid[r, c]
            count[top:top + size, left:left + size] += 1
    return {"map": (total / np.maximum(count, 1)).astype(np.float32), "grid": grid, "tops": np.array(tops),
            "lefts": np.array(lefts), "patch": size, "stride": step, "probs": probs.numpy(),
            "predicted": int(probs.argmax()), "target": target}


def draw_occlusion_map(path: str | Path, seen: np.ndarray, result: dict[str, Any], class_names: Sequence[str],
                       title: str) -> Path:
    """The figure: the image as the model saw it, the drop map over it, and the drop map alone
    (red: hiding this part lowers the class's probability; blue: raises it). ``seen`` [H, W, 3] in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drop = result["map"]
    limit = max(float(np.abs(drop).max()), 1e-6)  # symmetric, so white is "no change"
    target, predicted, probs = result["target"], result["predicted"], result["probs"]
    fig = Figure(figsize=(9.6, 3.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].imshow(seen, interpolation="nearest")
    axes[0].set_title(f"predicted {class_names[predicted]} (p {probs[predicted]:.2f})", fontsize=9)
    axes[1].imshow(seen, interpolation="nearest")
    axes[1].imshow(drop, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.5, interpolation="nearest")
    axes[1].set_title(f"drop of p({class_names[target]}) = {probs[target]:.2f}", fontsize=9)
    image = axes[2].imshow(drop, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[2].set_title(f"square {result['patch']} px, stride {result['stride']} px", fontsize=9)
    fig.colorbar(image, ax=axes[2], shrink=0.8, label="probability drop")
    fig.suptitle(f"{title}: occlusion sensitivity for {class_names[target]}", fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return write_bytes(path, buffer.getvalue())

