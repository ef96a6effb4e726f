"""`cnnkit distill`: a student classifier trained from a frozen teacher, on the one training run.

    from cnnkit import distill
    run = distill(teacher="runs/classify/exp/weights/best.safetensors", student="tiny_cnn", data="digits",
                  temperature=4, alpha=0.9, epochs=30)
    # run.dir/weights/best.safetensors is an ordinary classifier: Classifier.load, val, predict, export

The run is classification's recipe with the task wrapped (tasks/distill.py): the same data, augmentation,
metrics, report, --resume and torchrun. Runs go under runs/distill/.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.api import CLASSIFY, Classifier, Run, resolve_run, train
from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.config import DistillConfig
from cnnkit.engine.checkpoint import read_metadata
from cnnkit.errors import CnnkitError
from cnnkit.tasks.distill import DistillTask, Hint, TeacherInput

RUNS_UNDER = "distill"  # runs/distill/NAME


def distill(teacher: str | Path, student: str = "tiny_cnn", data: str = "digits", **options: Any) -> Run:
    """Train ``student`` on ``data`` from ``teacher``'s soft targets; options are DistillConfig fields."""
    known = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CnnkitError(f"unknown distillation option '{unknown[0]}'", "see `cnnkit distill --help`")
    cfg = DistillConfig(data=data, model=student, teacher=str(teacher), **options).validate()
    return run_distillation(cfg, {"data", "model", "teacher", *options})


def run_distillation(cfg: DistillConfig, explicit: set[str]) -> Run:
    if cfg.resume:  # the teacher and every other option come from the interrupted run's config.yaml
        cfg, _ = resolve_run(cfg, explicit, RUNS_UNDER)
    teacher = load_teacher(cfg.teacher)
    made: dict[str, DistillTask] = {}

    def build_model(cfg: DistillConfig, dataset) -> nn.Module:
        columns = teacher_columns(teacher.class_names, dataset.classes, cfg.teacher, cfg.data)
        student = CLASSIFY.build_model(cfg, dataset)
        task = DistillTask(CLASSIFY.make_task(cfg, dataset), teacher.model, TeacherInput(
            IMAGENET_MEAN, IMAGENET_STD, cfg.imgsz, teacher.mean, teacher.std, teacher.imgsz),
            cfg.temperature, cfg.alpha, columns,
            Hint(cfg.hint_layer, cfg.student_layer, cfg.hint_weight) if cfg.hint_layer else None)
        task.attach_hint(student, cfg.imgsz, teacher.imgsz)
        made["task"] = task
        return student

    def metadata(cfg: DistillConfig, dataset, model: nn.Module) -> dict[str, Any]:
        return {**CLASSIFY.metadata(cfg, dataset, model),
                "distilled_from": {"teacher": str(cfg.teacher), "teacher_model": teacher.model_name,
                                   "temperature": cfg.temperature, "alpha": cfg.alpha, "hint_layer": cfg.hint_layer,
                                   "student_layer": cfg.student_layer}}

    recipe = replace(CLASSIFY, build_model=build_model, make_task=lambda cfg, dataset: made["task"], metadata=metadata,
                     train_on_features=None, runs_under=RUNS_UNDER)
    return train(cfg, explicit, recipe)


def load_teacher(path: str | Path) -> Classifier:
    """The teacher classifier, frozen in eval mode; a weights file of another task is one line."""
    task = read_metadata(path).get("task")
    if task != "classify":
        raise CnnkitError(f"{path}: weights of a '{task}' model; --teacher needs a classifier's weights",
                          "train a teacher with `cnnkit classify train --model resnet18 …` and pass its weights/best.safetensors")
    teacher = Classifier.load(path)
    teacher.model.eval().requires_grad_(False)
    return teacher


def teacher_columns(teacher_classes: list[str], data_classes: list[str], teacher: str, data: str) -> torch.Tensor | None:
    """The teacher's output column of each of the data's classes (None when they already line up);
    classes on one side only are a one-line error."""
    if list(teacher_classes) == list(data_classes):
        return None
    missing = [c for c in data_classes if c not in teacher_classes]
    extra = [c for c in teacher_classes if c not in data_classes]
    if missing or extra:
        detail = "; ".join(part for part in (
            f"the data has {', '.join(missing[:5])} that the teacher does not" if missing else "",
            f"the teacher has {', '.join(extra[:5])} that the data does not" if extra else "") if part)
        raise CnnkitError(f"{teacher}: the teacher's classes differ from {data}'s: {detail}",
                          "distil on data with the teacher's classes, or train a teacher on this data")
    return torch.tensor([teacher_classes.index(c) for c in data_classes])
