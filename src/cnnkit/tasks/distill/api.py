"""`cnnkit distill` and `cnnkit segment distill`: a student trained from a frozen teacher, on the one
training run.

    from cnnkit import distill
    run = distill(teacher="runs/classify/exp/weights/best.safetensors", student="tiny_cnn", data="digits",
                  temperature=4, alpha=0.9, epochs=30)
    # run.dir/weights/best.safetensors is an ordinary classifier: Classifier.load, val, predict, export
    run = distill(teacher="runs/segment/exp/weights/best.safetensors", student="unet", encoder="mobilenet_v3",
                  data="shapes", epochs=30)  # a segmenter teacher: per-pixel soft targets, a Segmenter student

The run is the student task's own recipe (classification's or semantic segmentation's) with the task
wrapped (tasks/distill.py): the same data, augmentation, metrics, report, --resume and torchrun. Runs
go under runs/distill/.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.runner import Run, resolve_run, train
from cnnkit.tasks.classify.api import CLASSIFY, Classifier
from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.compress.runtime import is_deployed
from cnnkit.tasks.distill.config import DistillConfig, SegmentDistillConfig
from cnnkit.engine.checkpoint import read_metadata
from cnnkit.errors import CnnkitError
from cnnkit.tasks import task_of
from cnnkit.tasks.distill.task import DistillTask, Hint, TeacherInput

RUNS_UNDER = "distill"  # runs/distill/NAME


def distill(teacher: str | Path, student: str | None = None, data: str | None = None, **options: Any) -> Run:
    """Train ``student`` on ``data`` from ``teacher``'s soft targets. A classifier teacher gives a
    classifier student (DistillConfig options; student tiny_cnn, data digits by default), a semantic
    segmenter teacher a segmenter student (SegmentDistillConfig options; unet on shapes by default)."""
    segment = not is_deployed(teacher) and read_metadata(teacher).get("task") == "segment"
    config_type = SegmentDistillConfig if segment else DistillConfig
    known = {f.name for f in fields(config_type)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CnnkitError(f"unknown distillation option '{unknown[0]}'",
                          f"see `cnnkit {'segment distill' if segment else 'distill'} --help`")
    given = {k: v for k, v in (("model", student), ("data", data)) if v is not None}
    cfg = config_type(teacher=str(teacher), **given, **options).validate()
    run = run_segment_distillation if segment else run_distillation
    return run(cfg, {"teacher", *given, *options})


def run_distillation(cfg: DistillConfig, explicit: set[str]) -> Run:
    if cfg.resume:  # the teacher and every other option come from the interrupted run's config.yaml
        cfg, _ = resolve_run(cfg, explicit, RUNS_UNDER)
    teacher = load_teacher(cfg.teacher, "classify")
    cfg = _teacher_intensity(cfg, explicit, teacher)

    def make_task(cfg: DistillConfig, dataset, student: nn.Module) -> DistillTask:
        columns = teacher_columns(teacher.class_names, dataset.classes, cfg.teacher, cfg.data)
        task = DistillTask(CLASSIFY.make_task(cfg, dataset, student), teacher.model, TeacherInput(
            IMAGENET_MEAN, IMAGENET_STD, cfg.imgsz, teacher.mean, teacher.std, teacher.imgsz),
            cfg.temperature, cfg.alpha, columns, _hint(cfg))
        task.attach_hint(student, cfg.imgsz, teacher.imgsz)
        return task

    def metadata(cfg: DistillConfig, dataset, model: nn.Module) -> dict[str, Any]:
        return {**CLASSIFY.metadata(cfg, dataset, model), "distilled_from": _provenance(cfg, teacher.model_name)}

    recipe = replace(CLASSIFY, make_task=make_task, metadata=metadata, train_on_features=None, runs_under=RUNS_UNDER)
    return train(cfg, explicit, recipe)


def run_segment_distillation(cfg: SegmentDistillConfig, explicit: set[str]) -> Run:
    """A semantic student segmenter from a frozen semantic teacher: per-pixel KL on the teacher's class
    map (resized to the student's output), pixels at --ignore-index left out, plus the student's own
    --loss on the masks; the weights are an ordinary segmenter's."""
    from cnnkit.tasks.segment.api import SEGMENT

    if cfg.resume:
        cfg, _ = resolve_run(cfg, explicit, RUNS_UNDER)
    teacher = load_teacher(cfg.teacher, "segment")
    _check_same_inputs(cfg, teacher)

    def make_task(cfg: SegmentDistillConfig, dataset, student: nn.Module) -> DistillTask:
        columns = teacher_columns(teacher.class_names, dataset.classes, cfg.teacher, cfg.data)
        # tiled runs see windows at the images' own resolution, as the teacher did: no resizing
        teacher_side = cfg.imgsz if cfg.tile else teacher.imgsz
        task = DistillTask(SEGMENT.make_task(cfg, dataset, student), teacher.model, TeacherInput(
            IMAGENET_MEAN, IMAGENET_STD, cfg.imgsz, IMAGENET_MEAN, IMAGENET_STD, teacher_side),
            cfg.temperature, cfg.alpha, columns, _hint(cfg))
        task.attach_hint(student, cfg.imgsz, teacher_side)
        return task

    def metadata(cfg: SegmentDistillConfig, dataset, model: nn.Module) -> dict[str, Any]:
        return {**SEGMENT.metadata(cfg, dataset, model),
                "distilled_from": _provenance(cfg, f"{teacher.model_name} ({teacher.encoder})")}

    recipe = replace(SEGMENT, make_task=make_task, metadata=metadata, runs_under=RUNS_UNDER)
    return train(cfg, explicit, recipe)


def _hint(cfg: Any) -> Hint | None:
    return Hint(cfg.hint_layer, cfg.student_layer, cfg.hint_weight) if cfg.hint_layer else None


def _provenance(cfg: Any, teacher_model: str) -> dict[str, Any]:
    return {"teacher": str(cfg.teacher), "teacher_model": teacher_model, "temperature": cfg.temperature, "alpha": cfg.alpha,
            "hint_layer": cfg.hint_layer, "student_layer": cfg.student_layer}


def _teacher_intensity(cfg: DistillConfig, explicit: set[str], teacher: Classifier) -> DistillConfig:
    """The student reads images deeper than 8 bits as the teacher learnt to (its --normalize and --window,
    unless given: then they must agree), so the soft targets describe the pictures the student sees."""
    from cnnkit.tasks.classify.api import _intensity_options
    from cnnkit.data.intensity import spec_of

    if not explicit & {"normalize", "window"}:
        return replace(cfg, **_intensity_options(teacher.intensity))
    if spec_of(cfg) != teacher.intensity:
        raise CnnkitError(f"{cfg.teacher}: the teacher was trained with intensity scaling {teacher.intensity.to_dict()}, "
                          f"this run has {spec_of(cfg).to_dict()}",
                          "pass the teacher's --normalize and --window, or leave them out")
    return cfg


def _check_same_inputs(cfg: SegmentDistillConfig, teacher: Any) -> None:
    """The teacher must see the pixels as it was trained to: the same intensity scaling and the same
    whole-image or tiled view (a tiled teacher knows the images' own scale, a resized one --imgsz's)."""
    from cnnkit.tasks.segment.api import _intensity

    if _intensity(cfg) != teacher.intensity:
        raise CnnkitError(f"{cfg.teacher}: the teacher was trained with intensity scaling {teacher.intensity.to_dict()}, "
                          f"this run has {_intensity(cfg).to_dict()}", "pass the teacher's --normalize and --window")
    if bool(cfg.tile) != bool(teacher.tile):
        raise CnnkitError(f"{cfg.teacher}: the teacher was trained {'on --tile windows' if teacher.tile else 'on whole resized images'}, "
                          f"this run {'tiles' if cfg.tile else 'resizes whole images'}",
                          f"{'add' if teacher.tile else 'drop'} --tile so the teacher sees the scale it learnt")


def load_teacher(path: str | Path, task: str = "classify") -> Any:
    """The teacher (a Classifier, or a semantic Segmenter for ``task`` segment), frozen in eval mode;
    weights of another task are a one-line error."""
    if is_deployed(path):
        raise CnnkitError(f"{path}: an exported or quantized model; a teacher is loaded from its fp32 weights",
                          "pass the training run's weights/best.safetensors")
    meta = read_metadata(path)
    found = meta.get("task")
    if task == "classify" and found == "segment":
        raise CnnkitError(f"{path}: weights of a 'segment' model; distil a segmenter with `cnnkit segment distill`")
    if found != task:
        needs = "a classifier's weights" if task == "classify" else "a semantic segmenter's weights"
        command = "cnnkit classify train --model resnet18 …" if task == "classify" else "cnnkit segment train --model unet …"
        raise CnnkitError(f"{path}: weights of a '{found}' model; --teacher needs {needs}",
                          f"train a teacher with `{command}` and pass its weights/best.safetensors")
    owner = task_of(meta, path)
    if owner.name == "instance":
        raise CnnkitError(f"{path}: Mask R-CNN (instance) weights cannot teach a semantic student",
                          "its outputs are per detected instance, with no per-pixel class logits; train a semantic teacher "
                          "(`cnnkit segment train --model unet …`)")
    teacher = owner.load(path)
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
