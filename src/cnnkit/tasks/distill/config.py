"""`cnnkit distill`'s options (a classifier student: DistillConfig) and `segment distill`'s (a semantic
segmenter student: SegmentDistillConfig): the student's task's options plus the teacher's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnkit.config import INSTANCE_MODELS, option
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.tasks.segment.config import SegmentOptions


@dataclass
class DistillConfig(TrainConfig):
    """`cnnkit distill`: train a student classifier from a frozen teacher (plus every training option)."""

    model: str = option("tiny_cnn", "the student: tiny_cnn, any timm model or tv:NAME (--model and --student are one option)",
                        aliases=("--student",))
    # distillation's figures (docs/distillation.md) were measured with these
    batch: int = option(64, "global batch size (split across processes under torchrun)")
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training data picks "
                             "it before training (plot in plots/lr_find.png)")
    warmup_epochs: float | None = option(1.0, "linear warm-up length in epochs")
    teacher: str | None = option(None, "the teacher: weights/best.safetensors of a `cnnkit classify train` run on the same classes")
    temperature: float = option(4.0, "softmax temperature of the soft targets (higher: more of the teacher's dark knowledge)")
    alpha: float = option(0.9, "weight of the soft-target (KL) term; the true labels' cross-entropy gets 1 - alpha")
    hint_layer: str | None = option(None, "feature distillation: the teacher layer whose output the student imitates (e.g. layer3)")
    student_layer: str | None = option(None, "feature distillation: the student layer regressed onto --hint-layer (e.g. features.6)")
    hint_weight: float = option(1.0, "weight of the feature (hint) loss")

    def validate(self) -> "DistillConfig":
        super().validate()
        check_distill_options(self, "cnnkit classify train --model resnet18 …")
        if self.balance == "smote":
            raise CnnkitError("--balance smote trains a head on cached features, which a teacher cannot distil into",
                              "use --balance weights or oversample")
        return self


def check_distill_options(cfg: Any, teacher_command: str) -> None:
    """The distillation options' checks, shared by the classifier's and the segmenter's configs."""
    if not cfg.teacher and not cfg.resume:  # a resumed run reads its teacher from the saved config.yaml
        raise CnnkitError("distill needs --teacher WEIGHTS", f"train one with `{teacher_command}`")
    if cfg.temperature <= 0:
        raise CnnkitError(f"--temperature must be positive, got {cfg.temperature}")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise CnnkitError(f"--alpha must be between 0 and 1, got {cfg.alpha}")
    if bool(cfg.hint_layer) != bool(cfg.student_layer):
        raise CnnkitError("feature distillation needs both --hint-layer (teacher) and --student-layer")
    if cfg.hint_weight < 0:
        raise CnnkitError(f"--hint-weight must be 0 or more, got {cfg.hint_weight}")



@dataclass
class SegmentDistillConfig(SegmentOptions):
    """`segment distill`: a semantic student segmenter trained from a frozen teacher segmenter."""

    model: str = option("unet", "the student: unet, fpn, pan, deeplabv3plus, fcn, with --encoder (--model and --student are "
                        "one option)", aliases=("--student",))
    teacher: str | None = option(None, "the teacher: weights/best.safetensors of a `cnnkit segment train` run of a "
                                 "semantic model on the same classes")
    temperature: float = option(4.0, "softmax temperature of the soft targets (higher: more of the teacher's dark knowledge)")
    alpha: float = option(0.9, "weight of the soft-target (per-pixel KL) term; the student's --loss on the masks gets 1 - alpha")
    hint_layer: str | None = option(None, "feature distillation: the teacher layer whose output the student imitates (e.g. layer3)")
    student_layer: str | None = option(None, "feature distillation: the student layer regressed onto --hint-layer (e.g. features.6)")
    hint_weight: float = option(1.0, "weight of the feature (hint) loss")

    def validate(self) -> "SegmentDistillConfig":
        if self.model in INSTANCE_MODELS:
            raise CnnkitError("segment distill trains a semantic student (unet, fpn, pan, deeplabv3plus, fcn), not maskrcnn",
                              "Mask R-CNN's outputs are per detected instance, with no per-pixel logits to match")
        super().validate()
        check_distill_options(self, "cnnkit segment train --model unet --encoder resnet34 …")
        return self
