"""The engine's options all train for real: AMP (bf16 on the CPU), channels_last, accumulation,
clipping, SGD, constant schedule, EMA and early stopping, on a small slice of digits."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cnnkit.augment.presets import augment_spec, classify_transforms
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import fit, seed_everything
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks.classify.task import ClassifyTask


@pytest.fixture(scope="module")
def small_digits(digits_root):
    data = load_imagefolder(digits_root)
    train = ImageDataset(data.splits["train"][::3], classify_transforms(16, True, augment_spec("light", fliplr=0.0)))
    val = ImageDataset(data.splits["val"][::2], classify_transforms(16, False))
    return data.classes, train, val


BASE = TrainConfig(epochs=3, batch=32, imgsz=16, workers=0, device="cpu", lr=0.003)


@pytest.mark.parametrize("options", [
    {"amp": True, "channels_last": True},
    {"accumulate": 2, "clip_grad": 1.0, "ema": True},
    {"optimizer": "sgd", "lr": 0.05, "scheduler": "constant", "warmup_epochs": 0.0},
], ids=["amp_bf16_channels_last", "accumulate_clip_ema", "sgd_constant"])
def test_fit_learns_with_option(small_digits, tmp_path, options):
    classes, train, val = small_digits
    torch.set_num_threads(1)
    seed_everything(0)
    model = build_classifier("tiny_cnn", len(classes))
    cfg = replace(BASE, **options).validate()
    result = fit(ClassifyTask(classes), model, train, val, cfg, tmp_path, {"task": "classify"}, collate_skipping_none)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    assert result.best_metric > 0.5  # 10 classes: chance is 0.1
    assert (tmp_path / "weights/best.safetensors").is_file()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3


def test_early_stopping_stops(small_digits, tmp_path):
    classes, train, val = small_digits
    torch.set_num_threads(1)
    seed_everything(0)
    model = build_classifier("tiny_cnn", len(classes))
    # a learning rate this small cannot improve top1 for long: patience 1 ends the run early
    cfg = replace(BASE, epochs=8, lr=1e-7, warmup_epochs=0.0, patience=1).validate()
    result = fit(ClassifyTask(classes), model, train, val, cfg, tmp_path, {"task": "classify"}, collate_skipping_none)
    assert result.stopped_early
    assert len(result.history) < 8
