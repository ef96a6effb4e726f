"""Detector builders: every family trains (losses) and infers (boxes in the input's pixels) at a small
size; anchors follow the data; the transfer plan separates the backbone; bad names are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnkit.engine.transfer import head_names, load_backbone, plan_transfer
from cnnkit.errors import CnnkitError
from cnnkit.models.detectors import Anchors, box_statistics, build_detector, fit_anchors, parse_model, set_postprocess


def _targets(n: int):
    return [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])}] + \
           [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * (n - 1)  # a negative image too


@pytest.mark.parametrize("model,backbone,size", [("fasterrcnn", "mobilenet_v3_large", 128), ("fasterrcnn", "resnet18", 128),
                                                 ("ssdlite", None, 128)])
def test_train_and_infer(model, backbone, size):
    torch.manual_seed(0)
    net = build_detector(model, 3, size, backbone)
    net.train()
    images = [torch.rand(3, size, size - 32), torch.rand(3, size - 16, size)]
    losses = net(images, _targets(2))
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) >= 2
    sum(losses.values()).backward()
    net.eval()
    set_postprocess(net, 0.0, 0.5, 7)
    with torch.no_grad():
        big = torch.rand(3, 2 * size, 3 * size)  # boxes come back in the input's own pixels
        out = net([big])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 7
    if len(out["boxes"]):
        assert out["boxes"][:, 2].max() <= 3 * size + 1e-3 and out["boxes"][:, 3].max() <= 2 * size + 1e-3
        assert out["labels"].min() >= 1 and out["labels"].max() <= 3


def test_ssd_vgg_builds_at_its_size():
    net = build_detector("ssd", 2, 300).eval()
    set_postprocess(net, 0.0, 0.5, 7)  # no confidence floor: an empty result means the model found nothing at all
    image = torch.rand(3, 200, 250)
    with torch.no_grad():
        batch, _ = net.transform([image])  # any image goes in at 300 x 300 ...
        features = list(net.backbone(batch.tensors).values())
        out = net([image])[0]
    assert batch.tensors.shape == (1, 3, 300, 300)
    # ... where VGG16 and SSD300's extra layers give six maps and 8732 default boxes, as in the SSD paper
    assert [f.shape[-1] for f in features] == [38, 19, 10, 5, 3, 1]
    assert sum(len(a) for a in net.anchor_generator(batch, features)) == 8732
    assert out["boxes"].shape == (7, 4) and out["scores"].shape == (7,)
    assert (out["boxes"] >= 0).all() and (out["boxes"][:, 2] <= 250 + 1e-3).all() and (out["boxes"][:, 3] <= 200 + 1e-3).all()
    assert out["labels"].min() >= 1 and out["labels"].max() <= 2


def test_fit_anchors_cover_the_boxes():
    rng = np.random.default_rng(0)
    sides = rng.uniform(10, 80, 500)
    anchors = fit_anchors(sides, np.ones(500), imgsz=160, levels=4, shared=False)
    flat = [s for level in anchors.sizes for s in level]
    assert len(anchors.sizes) == 4 and flat == sorted(flat)
    assert 9 <= flat[0] <= 13 and 75 <= flat[-1] <= 81
    shared = fit_anchors(sides, np.r_[np.full(450, 1.0), np.full(50, 4.0)], imgsz=160, levels=3, shared=True)
    assert len(shared.sizes) == 3 and len(shared.sizes[0]) == 5 and shared.ratios[-1] == 4.0
    assert Anchors.from_dict(shared.to_dict()) == shared
    with pytest.raises(CnnkitError, match="no boxes"):
        fit_anchors(np.zeros(0), np.zeros(0), 160, 3, True)


def test_box_statistics_scale_to_imgsz():
    sides, aspects = box_statistics([np.array([[0, 0, 100, 50]]), np.zeros((0, 4))], [(400, 200), (10, 10)], imgsz=200)
    assert sides.tolist() == pytest.approx([np.sqrt(50 * 25)]) and aspects.tolist() == [0.5]


def test_transfer_plan_freezes_the_backbone_only():
    net = build_detector("fasterrcnn", 2, 128, "resnet18")
    heads = head_names(net)
    assert heads and all(not name.startswith("backbone.body.") for name in heads)
    assert any(name.startswith("backbone.fpn.") for name in heads) and any(name.startswith("rpn.") for name in heads)
    plan = plan_transfer(net, "linear", True, 0.1)
    assert all(name.startswith("backbone.body.") for name in plan.frozen(0))


def test_backbone_from_a_classifier():
    """--backbone-from: a timm classifier's weights go into the detector's backbone by name and shape."""
    import timm

    classifier = timm.create_model("resnet18", num_classes=4)
    net = build_detector("fasterrcnn", 2, 128, "resnet18")
    copied = load_backbone(net, classifier.state_dict(), "clf.safetensors", "resnet18")
    assert copied > 50
    assert torch.equal(net.backbone.body.conv1.weight, classifier.conv1.weight)
    other = timm.create_model("resnet50", num_classes=4)
    with pytest.raises(CnnkitError, match="does not fit"):
        load_backbone(net, other.state_dict(), "clf.safetensors", "resnet18")


def test_bad_names():
    with pytest.raises(CnnkitError, match="did you mean 'fasterrcnn'"):
        parse_model("fasterrcn", None)
    with pytest.raises(CnnkitError, match="fixed"):
        parse_model("ssdlite", "resnet50")
    with pytest.raises(CnnkitError, match="--backbone not_a_model"):
        build_detector("fasterrcnn", 2, 128, "not_a_model")
    assert parse_model("fasterrcnn", None) == ("fasterrcnn", "mobilenet_v3_large")
