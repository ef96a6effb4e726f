"""Test-time augmentation (--tta): the logits of an image and its mirror image (flip), or of its eight
symmetries (d8), averaged, wherever a classifier predicts (validation, test, val, predict); --tta auto picks
d8 after training only when it scores a higher val top1, and records the choice in the weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from cnnkit import Classifier
from cnnkit.augment.presets import classify_transforms
from cnnkit.data.images import load_image
from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier
from cnnkit.tasks.classify import api as classify_api
from cnnkit.tasks.classify.api import training_views
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.tasks.classify.task import ClassifyTask, predict_logits
from cnnkit.tasks.embed.config import EmbedConfig


def test_flip_logits_are_the_mean_of_both_views_and_mirror_invariant():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 4).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        both = predict_logits(model, x, "flip")
        torch.testing.assert_close(both, (model(x) + model(x.flip(-1))) / 2)
        torch.testing.assert_close(predict_logits(model, x.flip(-1), "flip"), both)  # a mirror image: same answer
        assert not torch.allclose(predict_logits(model, x, "none"), both)
        out = ClassifyTask(["a", "b", "c", "d"], tta="flip").eval_step(model, (x, torch.zeros(3, dtype=torch.long)))
    torch.testing.assert_close(out["logits"], both)


def test_d8_logits_are_the_mean_of_the_eight_symmetries_and_turn_invariant():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 4).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        all8 = predict_logits(model, x, "d8")
        views = [x.rot90(k, dims=(-2, -1)) for k in range(4)]
        by_hand = sum(model(v) + model(v.flip(-1)) for v in views) / 8
        torch.testing.assert_close(all8, by_hand)
        for turned in (x.rot90(1, dims=(-2, -1)), x.transpose(-1, -2), x.flip(-2)):  # any symmetry: the same answer
            torch.testing.assert_close(predict_logits(model, turned, "d8"), all8, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(predict_logits(model, x, "flip"), all8)


@pytest.mark.parametrize("options, expected", [
    ({}, True),                                  # every preset but none mirrors images
    ({"fliplr": 0.0}, False),                    # digits, text: a mirror image is another thing
    ({"augment": "none"}, False),
    ({"augment": "none", "tta": "flip"}, True),  # asked for
    ({"tta": "none"}, False),
])
def test_auto_follows_the_training_flips(options, expected):
    assert (training_views(TrainConfig(data="digits", **options).validate()) == "flip") is expected
    assert training_views(TrainConfig(data="digits", tta="d8").validate()) == "d8"


@pytest.mark.parametrize("scores, chosen", [({"flip": 0.90, "d8": 0.93}, "d8"), ({"flip": 0.90, "d8": 0.90}, "flip"),
                                            ({"flip": 0.90, "d8": 0.70}, "flip")])
def test_auto_takes_d8_only_when_val_says_so(digits_classifier, tmp_path, monkeypatch, scores, chosen):
    """After training, --tta auto compares the training views with d8 on val; d8 replaces them in both weights
    files only when its top1 is higher (a tie keeps the cheaper views)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_classifier.parent.parent, run)
    best = Classifier.load(run / "weights" / "best.safetensors")
    best.tta = "flip"
    monkeypatch.setattr(classify_api, "_evaluate_split", lambda model, clf, samples, batch, workers, device, views:
                        ({"top1": scores[views]}, None))
    classify_api.choose_views(TrainConfig(data="digits").validate(), best, run, [], torch.device("cpu"))
    assert best.tta == chosen
    for name in ("best", "last"):
        recorded = Classifier.load(run / "weights" / f"{name}.safetensors").tta
        assert recorded == (chosen if chosen == "d8" else Classifier.load(digits_classifier).tta)


def test_embed_refuses_flip():
    with pytest.raises(CnnkitError, match="--tta flip is for classification"):
        EmbedConfig(data="digits", tta="flip").validate()


@pytest.mark.slow
def test_weights_record_it_and_val_and_predict_follow(digits_root, tmp_path):
    run = Classifier("tiny_cnn", imgsz=16).train("digits", epochs=1, imgsz=16, batch=64, workers=0, out=str(tmp_path / "run"))
    weights = tmp_path / "run" / "weights" / "best.safetensors"
    with safe_open(str(weights), "pt") as handle:
        assert json.loads(handle.metadata()["tta"]) == "flip"  # the default preset mirrors images
    clf = Classifier.load(weights)
    assert clf.tta == "flip"

    # the run's own test figure is what `val` gives with the weights' choice; --tta none is reported as such
    test = clf.val("digits", split="test", out=tmp_path / "val", workers=0)
    assert test["tta"] == "flip" and test["top1"] == pytest.approx(run.metrics["test"]["top1"], abs=1e-6)
    single = clf.val("digits", split="test", out=tmp_path / "val1", workers=0, tta="none")
    assert single["tta"] == "none"

    image = sorted((digits_root / "test" / "3").glob("*.png"))[0]
    x = classify_transforms(16, False, mean=clf.mean, std=clf.std)(load_image(image))[None]
    with torch.no_grad():
        expected = torch.softmax((clf.model(x) + clf.model(x.flip(-1))) / 2, 1)[0]
        one_view = torch.softmax(clf.model(x), 1)[0]
    flipped, plain = clf.predict(image, topk=10)[0], clf.predict(image, topk=10, tta="none")[0]
    assert dict(flipped["topk"]) == pytest.approx({clf.class_names[i]: float(p) for i, p in enumerate(expected)}, abs=1e-5)
    assert dict(plain["topk"]) == pytest.approx({clf.class_names[i]: float(p) for i, p in enumerate(one_view)}, abs=1e-5)
    with pytest.raises(CnnkitError, match="unknown --tta"):
        clf.predict(image, tta="rotate")
    d8 = clf.predict(image, topk=10, tta="d8")[0]
    with torch.no_grad():
        all8 = torch.softmax(predict_logits(clf.model, x, "d8"), 1)[0]
    assert dict(d8["topk"]) == pytest.approx({clf.class_names[i]: float(p) for i, p in enumerate(all8)}, abs=1e-5)
