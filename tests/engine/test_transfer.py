"""--transfer scratch|linear|finetune|gradual and --backbone-from, on real (small) training runs."""

from __future__ import annotations

import pytest
import torch

from cnnkit.augment.presets import augment_spec, classify_transforms
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.engine.checkpoint import save_weights
from cnnkit.engine.optim import build_optimizer
from cnnkit.engine.trainer import fit, seed_everything
from cnnkit.engine.transfer import head_names, load_backbone, plan_transfer
from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier
from cnnkit.models.tiny_cnn import TinyCNN
from cnnkit.tasks.classify.task import ClassifyTask


@pytest.fixture(scope="module")
def small_digits(digits_root):
    data = load_imagefolder(digits_root)
    train = ImageDataset(data.splits["train"][::4], classify_transforms(16, True, augment_spec("light", fliplr=0.0)))
    val = ImageDataset(data.splits["val"][::4], classify_transforms(16, False))
    return data.classes, train, val


def _train(model, classes, train, val, tmp_path, mode, epochs=2):
    torch.set_num_threads(1)
    plan = plan_transfer(model, mode, True, 0.1)
    cfg = TrainConfig(epochs=epochs, batch=32, imgsz=16, workers=0, device="cpu", lr=0.003, transfer=mode).validate()
    fit(ClassifyTask(classes), model, train, val, cfg, tmp_path, {"task": "classify"}, collate_skipping_none, transfer=plan)
    return plan


def test_head_names_for_timm_torchvision_and_cnnkit():
    assert head_names(TinyCNN(3)) == ["fc.weight", "fc.bias"]
    assert head_names(build_classifier("resnet18", 3)) == ["fc.weight", "fc.bias"]
    assert head_names(build_classifier("tv:mobilenet_v3_small", 3)) == ["classifier.3.weight", "classifier.3.bias"]


def test_linear_trains_only_the_head_and_keeps_batchnorm_statistics(small_digits, tmp_path):
    classes, train, val = small_digits
    seed_everything(0)
    model = TinyCNN(len(classes))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = _train(model, classes, train, val, tmp_path, "linear")
    after = model.state_dict()
    for key in before:
        if key in plan.head:
            assert not torch.equal(before[key], after[key]), key
        else:  # weights and BatchNorm running statistics alike
            assert torch.equal(before[key], after[key]), key


def test_gradual_unfreezes_top_down(small_digits, tmp_path):
    classes, train, val = small_digits
    seed_everything(0)
    model = TinyCNN(len(classes))
    plan = plan_transfer(model, "gradual", True, 0.1)
    assert plan.frozen(0) == {n for chunk in plan.chunks for n in chunk}
    assert plan.frozen(1) == {n for chunk in plan.chunks[:-1] for n in chunk}  # the top chunk trains from epoch 1
    assert plan.frozen(len(plan.chunks)) == set()
    before = {k: v.clone() for k, v in model.named_parameters()}
    _train(model, classes, train, val, tmp_path, "gradual", epochs=2)
    after = dict(model.named_parameters())
    bottom, top = plan.chunks[0], plan.chunks[-1]
    assert all(torch.equal(before[n], after[n]) for n in bottom)       # still frozen after 2 epochs
    assert any(not torch.equal(before[n], after[n]) for n in top)      # unfrozen in epoch 1


def test_finetune_gives_the_backbone_a_smaller_rate():
    model = TinyCNN(3)
    plan = plan_transfer(model, "finetune", True, 0.1)
    optimizer = build_optimizer(model, "adamw", 0.01, 0.9, 0.05, head=set(plan.head), backbone_lr_mult=0.1)
    head_ids = {id(p) for n, p in model.named_parameters() if n in plan.head}
    for group in optimizer.param_groups:
        expected = 0.01 if all(id(p) in head_ids for p in group["params"]) else 0.001
        assert group["lr"] == pytest.approx(expected)


def test_transfer_needs_a_source_and_auto_picks():
    model = TinyCNN(3)
    assert plan_transfer(model, "auto", False, 0.1).mode == "scratch"
    assert plan_transfer(model, "auto", True, 0.1).mode == "finetune"
    with pytest.raises(CnnkitError, match="--backbone-from"):
        plan_transfer(model, "linear", False, 0.1)


def test_backbone_from_copies_all_but_the_head_and_refuses_other_architectures(tmp_path):
    source = TinyCNN(5)
    path = tmp_path / "source.safetensors"
    save_weights(source, path, {"task": "classify", "model": "tiny_cnn"})
    target = TinyCNN(3)
    from cnnkit.engine.checkpoint import read_state_dict

    copied = load_backbone(target, read_state_dict(path), str(path), "tiny_cnn", "tiny_cnn")
    assert copied == len(target.state_dict()) - 2
    assert torch.equal(target.features[0][0].weight, source.features[0][0].weight)
    # a detector-style prefix is found
    prefixed = {f"backbone.body.{k}": v for k, v in source.state_dict().items()}
    load_backbone(TinyCNN(3), prefixed, "det.safetensors", "tiny_cnn")
    with pytest.raises(CnnkitError, match="resnet18"):
        load_backbone(target, read_state_dict(path), str(path), "tiny_cnn", "resnet18")
    other = build_classifier("resnet18", 3).state_dict()
    with pytest.raises(CnnkitError, match="backbone does not fit"):
        load_backbone(TinyCNN(3), other, "r18.pth", "tiny_cnn")


def test_backbone_moves_between_classifier_and_embedder():
    """A classifier's backbone goes into an embedding network (under its ``backbone.`` prefix) and back."""
    from cnnkit.models.embedder import build_embedder

    torch.manual_seed(0)
    classifier = build_classifier("tiny_cnn", 3)
    embedder = build_embedder("tiny_cnn", 16)
    copied = load_backbone(embedder, classifier.state_dict(), "clf.safetensors", "tiny_cnn", "tiny_cnn")
    assert copied == len([k for k in embedder.state_dict() if not k.startswith("proj.")])
    for key, value in classifier.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(embedder.state_dict()["backbone." + key], value), key
    other = build_classifier("tiny_cnn", 7)
    load_backbone(other, embedder.state_dict(), "emb.safetensors", "tiny_cnn", "tiny_cnn")
    assert torch.equal(other.state_dict()["features.0.0.weight"], classifier.state_dict()["features.0.0.weight"])
    with pytest.raises(CnnkitError, match="backbone does not fit"):
        load_backbone(build_embedder("resnet18", 16), classifier.state_dict(), "clf.safetensors", "resnet18")
