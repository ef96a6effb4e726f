"""Distillation: the loss against a hand computation, the teacher's input and class order, hint
regression, and a short real run whose weights are an ordinary classifier's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from cnnkit.engine.checkpoint import deployable_state, save_state_dict
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.task import ClassifyTask
from cnnkit.tasks.distill.task import HINT_MODULE, DistillTask, Hint, TeacherInput, distillation_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (10.0, 1.0), (2.0, 0.0)])
def test_distillation_loss_matches_a_hand_computation(temperature, alpha):
    rng = np.random.default_rng(int(temperature * 10 + alpha * 100))
    student, teacher = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
    labels = rng.integers(0, 5, size=6)
    p_teacher, p_student = _softmax(teacher / temperature), _softmax(student / temperature)
    kl = (p_teacher * (np.log(p_teacher) - np.log(p_student))).sum(axis=1).mean() * temperature ** 2
    ce = -np.log(_softmax(student)[np.arange(6), labels]).mean()
    expected = alpha * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), temperature, alpha)
    assert got["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert got["kd"].item() == pytest.approx(kl, rel=1e-5) and got["hard"].item() == pytest.approx(ce, rel=1e-5)


def test_soft_targets_pull_the_student_towards_the_teacher():
    teacher = torch.tensor([[4.0, 1.0, -2.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([0]), 4.0, 1.0)["loss"].backward()
    # descending the gradient raises the teacher's favourite class and lowers its least liked one
    assert student.grad[0, 0] < 0 < student.grad[0, 2]


def test_teacher_input_renormalises_and_resizes():
    images = torch.rand(2, 3, 16, 16)
    same = TeacherInput((0.5, 0.5, 0.5), (0.2, 0.2, 0.2), 16, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), 16)
    assert same(images) is images
    other = TeacherInput((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 32)
    out = other(images)
    assert out.shape == (2, 3, 32, 32)
    raw = images * torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1) + torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    expected = nn.functional.interpolate((raw - 0.5) / 0.25, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(out, expected, atol=1e-5)


def test_teacher_columns_follow_class_names_and_refuse_other_classes():
    from cnnkit.tasks.distill.api import teacher_columns

    assert teacher_columns(["a", "b", "c"], ["a", "b", "c"], "t", "d") is None
    assert teacher_columns(["c", "a", "b"], ["a", "b", "c"], "t", "d").tolist() == [1, 2, 0]
    with pytest.raises(CnnkitError, match="the data has d that the teacher does not"):
        teacher_columns(["a", "b", "c"], ["a", "b", "d"], "t.safetensors", "data")


class _Tiny(nn.Module):
    def __init__(self, num_classes=3, width=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _tiny(num_classes=3, width=8):
    return _Tiny(num_classes, width)


def test_hint_regressor_is_trained_but_not_deployed():
    torch.manual_seed(0)
    teacher, student = _tiny(width=16).eval(), _tiny(width=4)
    task = DistillTask(ClassifyTask(["a", "b", "c"]), teacher, TeacherInput((0,) * 3, (1,) * 3, 8, (0,) * 3, (1,) * 3, 8),
                       4.0, 0.5, None, Hint("features.2", "features.2", 1.0))
    task.attach_hint(student, 8, 8)
    regressor = getattr(student, HINT_MODULE)
    assert regressor[0].in_channels == 4 and regressor[0].out_channels == 16
    batch = (torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    losses = task.train_loss(student, batch)
    assert {"loss", "kd", "hard", "hint"} <= set(losses) and losses["hint"] > 0
    losses["loss"].backward()
    assert regressor[0].weight.grad is not None and regressor[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    deployed = deployable_state(student, task.training_only)
    assert not any(k.startswith(HINT_MODULE) for k in deployed) and set(deployed) < set(student.state_dict())
    with pytest.raises(CnnkitError, match="the teacher has no layer 'features.9'.*top-level layers are features, fc"):
        DistillTask(ClassifyTask(["a"]), teacher, task.teacher_input, hint=Hint("features.9", "features.2")).attach_hint(_tiny(), 8, 8)


@pytest.mark.slow
def test_distill_on_digits_writes_a_plain_classifier(digits_classifier, tmp_path):
    from cnnkit import Classifier, distill

    run = distill(digits_classifier, student="tiny_cnn", data="digits", epochs=3, imgsz=12, batch=64, lr=0.003, fliplr=0.0,
                  workers=0, temperature=4.0, alpha=0.7, hint_layer="features.3", student_layer="features.3",
                  amp=True, amp_dtype="bf16", out=str(tmp_path / "student"))  # bf16 autocast on the CPU (forced: "auto" keeps
    # float32 on CPUs without bf16 instructions): teacher, student and hint under it
    assert run.metrics["top1"] > 0.5  # ten classes: chance is 0.1
    history = (run.dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_kd", "train_hard", "train_hint"} <= set(history), history
    with safe_open(str(run.dir / "weights" / "best.safetensors"), "pt") as handle:
        assert not any(HINT_MODULE in k for k in handle.keys())
        assert json.loads(handle.metadata()["distilled_from"])["teacher_model"] == "tiny_cnn"
    student = Classifier.load(run.dir / "weights" / "best.safetensors")
    assert student.imgsz == 12 and student.class_names == [str(i) for i in range(10)]


def test_distill_refuses_a_teacher_of_another_task(tmp_path):
    from cnnkit.tasks.distill.api import load_teacher

    path = save_state_dict({"w": torch.zeros(1)}, tmp_path / "det.safetensors", {"task": "detect", "model": "yolo_n"})
    with pytest.raises(CnnkitError, match="weights of a 'detect' model; --teacher needs a classifier's"):
        load_teacher(path)


def test_pixel_distillation_loss_matches_a_hand_computation_and_skips_ignored_pixels():
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(2, 4, 3, 5)) * 2, rng.normal(size=(2, 4, 3, 5)) * 2
    masks = rng.integers(0, 4, size=(2, 3, 5))
    masks[0, 1, :] = 255
    scored = masks != 255
    t, alpha = 3.0, 0.8
    p_teacher, p_student = _softmax(teacher / t), _softmax(student / t)  # over dim 1, the classes
    kl_per_pixel = (p_teacher * (np.log(p_teacher) - np.log(p_student))).sum(axis=1)
    kl = kl_per_pixel[scored].mean() * t * t
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(masks), t, alpha,
                            torch.tensor(0.5), torch.tensor(scored))
    assert got["kd"].item() == pytest.approx(kl, rel=1e-5)
    assert got["loss"].item() == pytest.approx(alpha * kl + (1 - alpha) * 0.5, rel=1e-5)
    nothing = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(masks), t, alpha,
                                torch.tensor(0.5), torch.zeros(2, 3, 5, dtype=torch.bool))
    assert nothing["kd"].item() == 0.0


class _PixelNet(nn.Module):
    """[B, 3, H, W] -> [B, C, H / stride, W / stride] class logits."""

    def __init__(self, num_classes=3, width=4, stride=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, stride, stride=stride))

    def forward(self, x):
        return self.body(x)


def test_segment_distill_task_resizes_the_teachers_map_and_ignores_unlabelled_pixels():
    from cnnkit.tasks.segment.task import Inference, SegmentTask, segmentation_loss

    torch.manual_seed(0)
    # the teacher sees the 16-px batch at its own 32 px and answers at half resolution: a 16x16 map again
    teacher, student = _PixelNet(width=8, stride=2).eval(), _PixelNet()
    task = DistillTask(SegmentTask(["bg", "a", "b"], segmentation_loss("ce_dice", 3, 255), Inference(16)), teacher,
                       TeacherInput((0,) * 3, (1,) * 3, 16, (0,) * 3, (1,) * 3, 32), 2.0, 0.5)
    images, masks = torch.rand(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    masks[:, :4] = 255
    losses = task.train_loss(student, (images, masks, torch.arange(2)))
    assert {"loss", "kd", "hard", "ce", "dice"} <= set(losses)
    # the KL against the teacher's map, taken only where the mask is labelled
    expected = distillation_loss(student(images), teacher(nn.functional.interpolate(images, size=32, mode="bilinear", antialias=True)),
                                 masks, 2.0, 0.5, torch.tensor(0.0), masks != 255)["kd"]
    assert losses["kd"].item() == pytest.approx(expected.item(), rel=1e-4)
    losses["loss"].backward()
    assert all(p.grad is not None for p in student.parameters()) and all(p.grad is None for p in teacher.parameters())


def test_segment_distill_refuses_other_teachers(tmp_path):
    from cnnkit.tasks.distill.api import load_teacher

    classifier = save_state_dict({"w": torch.zeros(1)}, tmp_path / "cls.safetensors", {"task": "classify", "model": "tiny_cnn"})
    with pytest.raises(CnnkitError, match="weights of a 'classify' model; --teacher needs a semantic segmenter's"):
        load_teacher(classifier, "segment")
    instance = save_state_dict({"w": torch.zeros(1)}, tmp_path / "mrcnn.safetensors", {"task": "segment", "model": "maskrcnn"})
    with pytest.raises(CnnkitError, match="Mask R-CNN .* cannot teach a semantic student"):
        load_teacher(instance, "segment")
    segmenter = save_state_dict({"w": torch.zeros(1)}, tmp_path / "unet.safetensors", {"task": "segment", "model": "unet"})
    with pytest.raises(CnnkitError, match="distil a segmenter with `cnnkit segment distill`"):
        load_teacher(segmenter, "classify")
    with pytest.raises(CnnkitError, match="an exported or quantized model"):
        load_teacher(tmp_path / "unet.onnx", "segment")
    from cnnkit.tasks.distill.config import SegmentDistillConfig

    with pytest.raises(CnnkitError, match="not maskrcnn"):
        SegmentDistillConfig(teacher=str(segmenter), model="maskrcnn").validate()
