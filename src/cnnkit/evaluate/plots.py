"""PNG plots for runs: training history, confusion matrix, precision-recall curves, image grids.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas rather than pyplot, so there is
no global figure state (safe from threads and headless machines), and every file is written atomically.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnkit.engine.rundir import write_bytes

DPI = 100
# History columns that are neither losses nor metrics.
_NOT_METRICS = {"epoch", "lr", "images_per_s", "time"}
MAX_ANNOTATED_CLASSES = 20
MAX_LABELLED_CLASSES = 100
MAX_PR_CURVES = 20


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return write_bytes(path, buffer.getvalue())


def _to_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_history(history: list[dict[str, float]], path: Path) -> Path:
    """Losses, metrics and learning rate against epoch, one panel each (metrics and lr when present)."""
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    # Values may still be strings straight from csv.DictReader; blanks become NaN (gaps in the line).
    series = {key: np.array([_to_float(row.get(key)) for row in history]) for key in columns}
    series = {key: values for key, values in series.items() if np.isfinite(values).any()}
    epochs = series.pop("epoch", None)
    if epochs is None or not np.isfinite(epochs).all():
        epochs = np.arange(1, len(history) + 1, dtype=float)

    losses = [key for key in series if "loss" in key]
    metrics = [key for key in series if key not in losses and key not in _NOT_METRICS and "time" not in key]
    panels: list[tuple[str, list[str]]] = [("loss", losses)]
    if metrics:
        panels.append(("metric", metrics))
    if "lr" in series:
        panels.append(("learning rate", ["lr"]))

    fig = _new_figure(4.2 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    marker = "o" if len(history) <= 30 else None  # a single epoch must still show a point
    for ax, (label, keys) in zip(axes, panels):
        if not keys:
            _no_data(ax)
        for key in keys:
            ax.plot(epochs, series[key], marker=marker, markersize=3, label=key)
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if keys:
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        if label == "learning rate" and np.nanmin(series["lr"]) > 0:
            ax.set_yscale("log")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: list[str], path: Path, normalize: bool = True, title: str | None = None
) -> Path:
    """Rows are true classes, columns predicted; row-normalised (recall per cell) when ``normalize``."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    n = matrix.shape[0]
    names = [str(name) for name in class_names[:n]] + [str(i) for i in range(len(class_names), n)]
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)

    size = min(max(5.0, 2.5 + 0.22 * n), 26.0)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)

    if n <= MAX_LABELLED_CLASSES:
        fontsize = max(4.0, min(10.0, 220.0 / max(n, 1)))
        short = [name if len(name) <= 24 else name[:23] + "…" for name in names]
        ax.set_xticks(range(n), short, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), short, fontsize=fontsize)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(f"predicted ({n} classes)")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix" + (" (row-normalised)" if normalize else ""), fontsize=9 if title else None)

    if n <= MAX_ANNOTATED_CLASSES:
        fontsize = 9 if n <= 10 else 7
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                text = f"{value:.2f}" if normalize else f"{value:.0f}"
                colour = "white" if value > 0.5 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    return _save(fig, path)


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, mean_label: str = "mAP") -> Path:
    """One precision-recall curve per class with its AP in the legend; the first 20 classes are drawn.
    ``mean_label`` names the mean of the APs in the title (detection's APs at IoU 0.5 average to map50)."""
    fig = _new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    items = list(curves.items())
    if not items:
        _no_data(ax, "no curves")
        ax.set_title("precision-recall")
        return _save(fig, path)

    # tab10 repeats after ten lines; tab20 keeps all drawn curves distinguishable.
    palette = colormaps["tab10" if len(items) <= 10 else "tab20"]
    for index, (name, (recall, precision, ap)) in enumerate(items[:MAX_PR_CURVES]):
        ax.plot(np.asarray(recall), np.asarray(precision), drawstyle="steps-post", color=palette(index),
                label=f"{name} (AP {float(ap):.3f})")
    mean_ap = float(np.mean([float(ap) for _, (_, _, ap) in items]))
    title = f"precision-recall, {mean_label} {mean_ap:.3f}"
    if len(items) > MAX_PR_CURVES:
        title += f"\n{MAX_PR_CURVES} of {len(items)} classes drawn"
    ax.set_title(title)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="lower left", ncol=2 if len(items) > 10 else 1)
    return _save(fig, path)


def plot_image_grid(
    images: list[np.ndarray],
    titles: list[str],
    path: Path,
    wrong: list[bool] | None = None,
    columns: int = 8,
) -> Path:
    """Images in a grid with a caption under each; ``wrong`` ones get a red caption and a red border."""
    if not images:
        fig = _new_figure(3.0, 1.0)
        _no_data(fig.add_subplot(), "no images")
        return _save(fig, path)

    n = len(images)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig = _new_figure(1.9 * columns, 2.3 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for index, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= n:
            ax.set_axis_off()
            continue
        image = np.asarray(images[index])
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else None)
        else:
            ax.imshow(image)
        is_wrong = bool(wrong[index]) if wrong is not None and index < len(wrong) else False
        title = titles[index] if index < len(titles) else ""
        ax.set_xlabel(title, fontsize=8, color="red" if is_wrong else "black")
        for spine in ax.spines.values():
            spine.set_visible(is_wrong)
            spine.set_edgecolor("red")
            spine.set_linewidth(3)
    return _save(fig, path)
