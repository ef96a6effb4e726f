"""The Python API of DESIGN.md: Classifier(...).train / predict / val and Classifier.load."""

from __future__ import annotations

import json

import pytest

from cnnkit import Classifier
from cnnkit.errors import CnnkitError


def test_classifier_train_predict_load(digits_root, tmp_path):
    clf = Classifier("tiny_cnn", imgsz=16)
    run = clf.train(data="digits", epochs=2, batch=64, lr=0.003, fliplr=0.0, workers=0, out=str(tmp_path / "run"))
    assert run.dir == tmp_path / "run"
    assert run.metrics["top1"] > 0.5 and "test" in run.metrics
    images = sorted((digits_root / "test" / "4").glob("*.png"))[:5]
    preds = clf.predict(images, topk=2)
    assert [p["file"] for p in preds] == [str(p) for p in images]
    assert all(len(p["topk"]) == 2 and p["topk"][0][0] == p["label"] for p in preds)

    loaded = Classifier.load(tmp_path / "run/weights/best.safetensors")
    assert loaded.class_names == [str(i) for i in range(10)] and loaded.imgsz == 16
    assert [p["label"] for p in loaded.predict(images)] == [p["label"] for p in preds]
    metrics = loaded.val("digits", split="test", out=tmp_path / "val", workers=0)
    assert metrics["top1"] == pytest.approx(run.metrics["test"]["top1"])
    assert json.loads((tmp_path / "val/metrics.json").read_text())["split"] == "test"


def test_untrained_classifier_cannot_predict():
    with pytest.raises(CnnkitError, match="no weights"):
        Classifier("tiny_cnn").predict(["x.png"])


def test_unknown_training_option_is_refused():
    with pytest.raises(CnnkitError, match="epocs"):
        Classifier("tiny_cnn").train(data="digits", epocs=3)
