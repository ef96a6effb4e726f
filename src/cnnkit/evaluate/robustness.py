"""Robustness: a model's metric on clean images and under every corruption at severities 1..5.

    target = engine_target(ClassifyTask(class_names), model, samples, transform, batch=64, workers=2, device=dev)
    result = evaluate_robustness(target, select_corruptions(["occlusion", "illumination"]), seed=0)
    write_robustness(result, target, "runs/classify/exp/robustness", title="…", config={…})
    result["clean"]["top1"], result["corruptions"]["occlusion"]["occlusion_solid"]   # [top1 at severity 1..5]
    result["relative_drop"]["occlusion"]   # mean of (clean - corrupted) / clean over its corruptions and severities

A task takes part through a ``RobustnessTarget``: a ``score`` function that evaluates the model on
its split with every image passed through a corruption first, and returns the metrics. Corruptions
hit each image at its native size, before resizing and normalisation, with a generator seeded by
(seed, corruption, image index): a run reproduces exactly, whatever the batch size or workers, and a
higher severity is the same corruption of the same image, only stronger. ``engine_target`` makes
one for any task whose samples are (path, label) pairs; detection and segmentation will pass their
objects' boxes so that occluders land on the objects (``corrupt(..., boxes=)``).
"""

from __future__ import annotations

import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from torchvision.transforms.v2.functional import pil_to_tensor

from cnnkit.augment.corruptions import SEVERITIES, Boxes, corrupt, level
from cnnkit.data.images import load_image
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine.callbacks import progress_bar
from cnnkit.engine.rundir import write_json
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import plots
from cnnkit.evaluate.report import format_value, write_report

EXAMPLE_SEVERITIES = (1, 3, 5)


@dataclass(frozen=True)
class SeededCorruption:
    """One corruption at one severity, applied to sample ``index`` with its own seeded generator.
    A dataclass rather than a closure so that DataLoader workers can receive it."""

    name: str
    severity: int
    seed: int = 0

    def __call__(self, image: torch.Tensor, index: int, boxes: Boxes = None) -> torch.Tensor:
        """uint8 [3, H, W] -> corrupted uint8 [3, H, W]; ``boxes`` xyxy pixels (occluders go on them)."""
        # the severity is left out of the seed on purpose: severity 5 is severity 1's corruption, stronger
        state = np.random.SeedSequence([self.seed, zlib.crc32(self.name.encode()), index]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return corrupt(image, self.name, self.severity, generator, boxes)


SampleCorruption = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class RobustnessTarget:
    """What robustness evaluation needs from a task."""

    score: Callable[[SampleCorruption | None], dict[str, Any]]  # metrics on the split, each image corrupted first (None: clean)
    images: int  # per evaluation: for the throughput shown and the clean-error floor
    example: torch.Tensor  # one uint8 [3, H, W] image of the split, for the example grid
    metric: str = "top1"  # the primary metric, higher is better, in [0, 1]
    example_index: int = 0  # its sample index, so the grid shows exactly what the model saw
    example_boxes: Boxes = None  # its objects (xyxy pixels), for tasks that have them


class CorruptedImages(ImageDataset):
    """ImageDataset whose images are corrupted at their native size (uint8 [3, H, W]) before ``transform``."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable, corruption: SampleCorruption | None = None,
                 intensity: Any = None):
        super().__init__(samples, None, intensity)
        self.final_transform, self.corruption = transform, corruption

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        if item is None:
            return None
        image = pil_to_tensor(item[0])
        if self.corruption is not None:
            image = self.corruption(image, index)
        return self.final_transform(image), item[1], index


def engine_target(task: Any, model: nn.Module, samples: list[tuple[Path, int]], transform: Callable, batch: int,
                  workers: int, device: torch.device, intensity: Any = None) -> RobustnessTarget:
    """A target for any engine task (``task.eval_step``/``metrics``, ``task.primary_metric``) whose samples are
    (path, label): each evaluation is the engine's own ``evaluate`` over a loader of corrupted images."""
    from cnnkit.engine.trainer import evaluate, make_loader

    def score(corruption: SampleCorruption | None) -> dict[str, Any]:
        loader = make_loader(CorruptedImages(samples, transform, corruption, intensity), batch, workers, False, 0,
                             collate_skipping_none, device)
        metrics, _ = evaluate(task, model.to(device), loader, device, show=False)
        return metrics

    index, example = _first_readable(samples, intensity)
    return RobustnessTarget(score, len(samples), example, task.primary_metric, index)


def _first_readable(samples: Sequence[tuple[Path, int]], intensity: Any = None) -> tuple[int, torch.Tensor]:
    for index, (path, _) in enumerate(samples):
        try:
            return index, pil_to_tensor(load_image(path, intensity))
        except CnnkitError:
            continue  # the evaluation warns about it; the example is simply the next image
    raise CnnkitError(f"none of the {len(samples)} images could be read")


def check_severities(severities: Sequence[int]) -> tuple[int, ...]:
    """The severities, sorted and without repeats; CnnkitError for any outside 1..5 or for none."""
    for severity in severities:
        level(SEVERITIES, severity)
    if not severities:
        raise CnnkitError("no severities to evaluate", "pass some of 1,2,3,4,5")
    return tuple(sorted(set(severities)))


# ------------------------------------------------------------------ evaluation
def evaluate_robustness(target: RobustnessTarget, corruptions: dict[str, list[str]], severities: Sequence[int] = SEVERITIES,
                        seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """The content of robustness.json: the clean metrics, ``target.metric`` under each corruption
    (``{family: {corruption: [value per severity]}}``) and the per-family summaries of ``summarise``.
    One progress bar runs over all 1 + corruptions x severities evaluations."""
    severities = check_severities(severities)
    runs = [(family, name, severity) for family, names in corruptions.items() for name in names for severity in severities]
    values: dict[str, dict[str, list[float]]] = {family: {name: [] for name in names} for family, names in corruptions.items()}
    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    started = time.perf_counter()

    def show(done: int) -> None:  # redrawn from this loop: a refresh thread would compete for the CPU
        if bar is not None:
            rate = done * target.images / max(time.perf_counter() - started, 1e-9)
            upcoming = f"{runs[done - 1][1]} s{runs[done - 1][2]}" if done <= len(runs) else ""
            bar.update(task_id, completed=done, rate=f"{rate:.0f} img/s", info=upcoming)
            bar.refresh()

    with bar if bar is not None else nullcontext():
        task_id = bar.add_task("robustness", total=1 + len(runs), info="clean", rate="") if bar is not None else None
        clean = target.score(None)
        if target.metric not in clean:
            raise CnnkitError(f"the task reports no '{target.metric}' metric", f"it reports {', '.join(clean)}")
        show(1)
        for done, (family, name, severity) in enumerate(runs, start=2):
            metrics = target.score(SeededCorruption(name, severity, seed))
            values[family][name].append(float(metrics[target.metric]))
            show(done)
    clean_scalars = {k: float(v) for k, v in clean.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    return {"clean": clean_scalars, "corruptions": values, **summarise(clean_scalars[target.metric], values, target.images),
            "metric": target.metric, "severities": list(severities), "seed": seed, "images": target.images}


def summarise(clean: float, values: dict[str, dict[str, list[float]]], images: int) -> dict[str, dict[str, float | None]]:
    """Per family, over its corruptions and severities, of a metric in [0, 1] (higher is better):

    ``relative_drop`` = mean of (clean - corrupted) / clean: the share of the clean score lost;
    bounded (1 means nothing right) and stable. None when the clean score is 0.
    ``relative_corruption_error`` = (mean corrupted error - clean error) / clean error, error = 1 - metric:
    ImageNet-C's "drop divided by clean error", which grows without bound as the clean error
    shrinks; the clean error is floored at 1 / images, the smallest error the split can measure.
    """
    clean_error = max(1.0 - clean, 1.0 / max(images, 1))
    drop: dict[str, float | None] = {}
    rce: dict[str, float | None] = {}
    for family, table in values.items():
        scores = np.array([v for series in table.values() for v in series], dtype=float)
        drop[family] = float(np.mean((clean - scores) / clean)) if clean > 0 else None
        rce[family] = float((np.mean(1.0 - scores) - clean_error) / clean_error)
    return {"relative_drop": drop, "relative_corruption_error": rce}


# ------------------------------------------------------------------ outputs
def write_robustness(result: dict[str, Any], target: RobustnessTarget, out: str | Path, title: str,
                     config: dict[str, Any]) -> list[Path]:
    """robustness.json, plots/severity_curves.png, plots/examples.png and report.html in ``out``."""
    out = Path(out)
    paths = [write_json(out / "robustness.json", result)]
    figures = [plot_severity_curves(result, out / "plots" / "severity_curves.png"),
               plot_examples(target, result["corruptions"], int(result["seed"]), out / "plots" / "examples.png")]
    notes = ["Every image is corrupted at its native size, before resizing and normalisation, with a generator "
             f"seeded by (seed {result['seed']}, corruption, image): runs reproduce exactly.",
             "relative_drop: mean over a family's corruptions and severities of (clean - corrupted) / clean.",
             "relative_corruption_error: (mean corrupted error - clean error) / clean error, error = 1 - "
             f"{result['metric']}; the clean error is floored at 1 / images."]
    paths.append(write_report(out / "report.html", title, config, report_rows(result), figures, notes=notes))
    return paths + figures


def report_rows(result: dict[str, Any]) -> dict[str, Any]:
    """The report's table: clean metrics, the family summaries, and one row per corruption with its
    values at each severity."""
    metric = result["metric"]
    rows: dict[str, Any] = {f"clean {k}": v for k, v in result["clean"].items()}
    for key in ("relative_drop", "relative_corruption_error"):
        rows.update({f"{key} {family}": value for family, value in result[key].items()})
    severities = ", ".join(f"s{s}" for s in result["severities"])
    for family, table in result["corruptions"].items():
        for name, series in table.items():
            rows[f"{family} / {name}: {metric} at {severities}"] = "   ".join(format_value(float(v)) for v in series)
    return rows


def plot_severity_curves(result: dict[str, Any], path: Path) -> Path:
    """One panel per family: the metric against severity, a line per corruption, the clean score dashed."""
    families = result["corruptions"]
    clean, metric, severities = result["clean"][result["metric"]], result["metric"], result["severities"]
    fig = plots._new_figure(3.6 * len(families), 3.4)
    axes = fig.subplots(1, len(families), squeeze=False)[0]
    everything = [clean] + [v for table in families.values() for series in table.values() for v in series]
    for ax, (family, table) in zip(axes, families.items()):
        ax.axhline(clean, color="0.3", linestyle="--", linewidth=1, label="clean")
        for name, series in table.items():
            ax.plot(severities, series, marker="o", markersize=4, label=name)
        ax.set_title(f"{family} (drop {format_value(result['relative_drop'][family])})")
        ax.set_xlabel("severity")
        ax.set_xticks(severities)
        ax.set_ylabel(metric)
        if 0.0 <= min(everything) and max(everything) <= 1.0:
            ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    return plots._save(fig, path)


def plot_examples(target: RobustnessTarget, corruptions: dict[str, dict[str, Any]], seed: int, path: Path) -> Path:
    """A row per corruption: the example image clean and at severities 1, 3 and 5, corrupted exactly as
    in the evaluation."""
    images, titles = [], []
    for names in corruptions.values():
        for name in names:
            images.append(target.example)
            titles.append(f"{name}: clean")
            for severity in EXAMPLE_SEVERITIES:
                corrupted = SeededCorruption(name, severity, seed)(target.example, target.example_index, target.example_boxes)
                images.append(corrupted)
                titles.append(f"severity {severity}")
    arrays = [image.permute(1, 2, 0).numpy() for image in images]
    return plots.plot_image_grid(arrays, titles, path, columns=1 + len(EXAMPLE_SEVERITIES))

