"""Knowledge distillation: a student task wrapped around a frozen teacher.

The student learns from the teacher's temperature-softened class probabilities (Hinton et al., 2015:
KL divergence scaled by T², so its gradients keep their size as T grows) plus the true labels, and
optionally from one of the teacher's feature maps through a 1x1-convolution regressor ("hints",
FitNets, Romero et al., 2015). For semantic segmentation the same KL is taken at every pixel, with
the teacher's class map resized to the student's (pixel-wise distillation, as in Liu et al., 2019,
"Structured Knowledge Distillation for Semantic Segmentation"). The engine sees an ordinary task: validation and metrics are the
student task's own, so every engine feature (AMP, DDP, resume, EMA, reports) applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.engine.checkpoint import unwrap
from cnnkit.errors import CnnkitError

# the student's submodule holding the hint regressor: trained and checkpointed, never in the weights file
HINT_MODULE = "cnnkit_hint"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, hard_loss: torch.Tensor | None = None,
                      scored: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """alpha * T² * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * hard loss.

    Logits are [B, C] (one prediction per image) or [B, C, H, W] (one per pixel); the KL is taken over
    the classes (dim 1) and averaged over the images, or over the pixels that ``scored`` marks (the
    segmentation mask's pixels other than the ignore index). For [B, C] that is ``batchmean``, the true
    KL per sample. ``hard_loss`` is the student task's own loss on the labels (class weights, focal,
    MixUp, Dice); without it, plain cross-entropy."""
    t = float(temperature)
    soft_student = F.log_softmax(student_logits.float() / t, dim=1)
    soft_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    per_prediction = F.kl_div(soft_student, soft_teacher, reduction="none", log_target=True).sum(1)
    if scored is not None:
        per_prediction = per_prediction[scored]
    kd = per_prediction.sum() / max(per_prediction.numel(), 1) * (t * t)
    hard = hard_loss if hard_loss is not None else F.cross_entropy(student_logits.float(), labels)
    return {"loss": alpha * kd + (1.0 - alpha) * hard, "kd": kd.detach(), "hard": hard.detach()}


class TeacherInput(nn.Module):
    """The student's input batch as the teacher expects it: un-normalised with the student's mean/std,
    normalised with the teacher's, resized to the teacher's side when the two differ."""

    def __init__(self, student_mean, student_std, student_size: int, teacher_mean, teacher_std, teacher_size: int):
        super().__init__()
        shape = (1, -1, 1, 1)
        scale = torch.tensor(student_std, dtype=torch.float32) / torch.tensor(teacher_std, dtype=torch.float32)
        shift = (torch.tensor(student_mean, dtype=torch.float32) - torch.tensor(teacher_mean, dtype=torch.float32)) / torch.tensor(teacher_std, dtype=torch.float32)
        self.register_buffer("scale", scale.view(shape), persistent=False)
        self.register_buffer("shift", shift.view(shape), persistent=False)
        self.identity = bool(torch.allclose(scale, torch.ones(3)) and torch.allclose(shift, torch.zeros(3)))
        self.size = None if teacher_size == student_size else teacher_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images if self.identity else images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x


class FeatureTap:
    """Keeps the output of one named submodule from the latest forward pass (a forward hook)."""

    def __init__(self, model: nn.Module, layer: str, owner: str):
        self.layer = layer
        self.value: torch.Tensor | None = None
        self.module = find_layer(model, layer, owner)
        self.handle = self.module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output

    def take(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None or value.dim() != 4:
            raise CnnkitError(f"layer '{self.layer}' gave no feature map [B, C, H, W] in this forward pass",
                              "name a convolutional block's output (e.g. layer3 for a ResNet)")
        return value


def find_layer(model: nn.Module, layer: str, owner: str) -> nn.Module:
    """``model``'s submodule named ``layer`` (dotted path), or a one-line error listing real names."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_children()]
        raise CnnkitError(f"the {owner} has no layer '{layer}'",
                          f"its top-level layers are {', '.join(names[:12])}; name a nested one as a dotted path") from None


def feature_channels(model: nn.Module, layer: str, owner: str, imgsz: int) -> tuple[int, int, int]:
    """(channels, height, width) of ``layer``'s output for one blank ``imgsz`` image."""
    tap = FeatureTap(model, layer, owner)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, imgsz, imgsz, device=next(model.parameters()).device))
        c, h, w = tap.take().shape[1:]
    finally:
        model.train(was_training)
        tap.handle.remove()  # only this probe's hook: the module may carry others
    return int(c), int(h), int(w)


@dataclass
class Hint:
    """Feature distillation from ``teacher_layer`` to ``student_layer`` (MSE after the regressor)."""

    teacher_layer: str
    student_layer: str
    weight: float = 1.0


@dataclass
class DistillTask:
    """The engine's task for distillation: ``student_task`` (a ClassifyTask or a SegmentTask) gives
    the training batch, its own loss on the labels, validation and metrics; training adds the frozen
    ``teacher``'s soft targets (per image, or per pixel for segmentation) and the hint to that loss.
    ``teacher_columns[k]`` is the teacher's output column for the student's class k."""

    student_task: Any
    teacher: nn.Module
    teacher_input: TeacherInput
    temperature: float = 4.0
    alpha: float = 0.9
    teacher_columns: torch.Tensor | None = None
    hint: Hint | None = None
    _taps: tuple[FeatureTap, FeatureTap] | None = field(default=None, repr=False)

    @property
    def primary_metric(self) -> str:
        return self.student_task.primary_metric

    @property
    def training_only(self) -> tuple[str, ...]:
        """The hint regressor lives in the student for training (and --resume), not in its weights file."""
        return (HINT_MODULE,) if self.hint is not None else ()

    def attach_hint(self, student: nn.Module, student_imgsz: int, teacher_imgsz: int) -> None:
        """Registers the hooks and puts the regressor into ``student`` (as HINT_MODULE, see ``training_only``)
        so the engine optimises it, and DDP synchronises it, with the student; call before training."""
        if self.hint is None:
            return
        if isinstance(student, nn.Sequential):  # a module added to a Sequential would run in its forward
            raise CnnkitError("feature distillation needs a student model class, not an nn.Sequential")
        student_channels = feature_channels(student, self.hint.student_layer, "student", student_imgsz)[0]
        teacher_channels = feature_channels(self.teacher, self.hint.teacher_layer, "teacher", teacher_imgsz)[0]
        student.add_module(HINT_MODULE, hint_regressor(student_channels, teacher_channels))
        self._taps = (FeatureTap(student, self.hint.student_layer, "student"), FeatureTap(self.teacher, self.hint.teacher_layer, "teacher"))

    def train_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, targets, scored = self.student_task.training_batch(batch)
        teacher = self.teacher.to(images.device)
        with torch.no_grad():
            teacher_logits = teacher(self.teacher_input.to(images.device)(images)).float()
        if self.teacher_columns is not None:
            teacher_logits = teacher_logits[:, self.teacher_columns.to(images.device)]
        student_logits = model(images).float()
        if teacher_logits.dim() == 4 and teacher_logits.shape[-2:] != student_logits.shape[-2:]:
            # a teacher that saw the image at its own training side: its class map at the student's pixels
            teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear", align_corners=False)
        hard = self.student_task.hard_loss(student_logits, targets)
        losses = distillation_loss(student_logits, teacher_logits, targets, self.temperature, self.alpha, hard["loss"], scored)
        losses.update({name: value.detach() for name, value in hard.items() if name != "loss"})
        if self._taps is not None:
            student_feature, teacher_feature = (tap.take() for tap in self._taps)
            regressor = getattr(unwrap(model), HINT_MODULE)
            predicted = regressor(student_feature.float())
            if predicted.shape[-2:] != teacher_feature.shape[-2:]:
                predicted = F.interpolate(predicted, size=teacher_feature.shape[-2:], mode="bilinear", align_corners=False)
            hint = F.mse_loss(predicted, teacher_feature.float())
            losses["loss"] = losses["loss"] + self.hint.weight * hint
            losses["hint"] = hint.detach()
        return losses

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return self.student_task.eval_step(model, batch)

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return self.student_task.metrics(outputs)


def hint_regressor(student_channels: int, teacher_channels: int) -> nn.Module:
    """FitNets' regressor: the student's feature map to the teacher's channel count (1x1 conv + BN)."""
    return nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False), nn.BatchNorm2d(teacher_channels))

