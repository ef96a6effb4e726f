"""Every model family builds by name, trains a step, and survives a weights-file round trip exactly."""

from __future__ import annotations

import pytest
import torch

from cnnkit import registry
from cnnkit.engine.checkpoint import load_weights, save_weights
from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier

NAMES = ["tiny_cnn", "resnet18", "mobilenetv3_small", "efficientnet_b0", "densenet121", "vgg11", "tv:resnet18"]


@pytest.mark.parametrize("name", NAMES)
def test_build_forward_backward_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = build_classifier(name, 3)
    x = torch.randn(2, 3, 32, 32)

    model.train()
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)

    model.eval()
    with torch.no_grad():
        before = model(x)
    assert torch.isfinite(before).all()
    meta = {"task": "classify", "model": name, "class_names": ["a", "b", "c"], "num_classes": 3, "imgsz": 32}
    path = save_weights(model, tmp_path / "w.safetensors", meta)

    # wreck the weights, then load them back from the file
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for key, buffer in model.named_buffers():
            if buffer.is_floating_point():
                buffer.fill_(1.0)
        wrecked = model(x)
    assert not torch.equal(wrecked, before)
    state, loaded_meta = load_weights(path, task="classify")
    assert loaded_meta == meta
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)  # strict: every key present, no extras
    with torch.no_grad():
        after = model(x)
    assert torch.equal(after, before)


def test_resolve_sources():
    assert registry.resolve("tiny_cnn") == ("cnnkit", "tiny_cnn")
    assert registry.resolve("resnet18") == ("timm", "resnet18")
    assert registry.resolve("mobilenetv3_small") == ("timm", "mobilenetv3_small_100")
    assert registry.resolve("tv:resnet18") == ("torchvision", "resnet18")


@pytest.mark.parametrize("name, near", [("resnt18", "resnet18"), ("tiny_cn", "tiny_cnn"), ("tv:resnt18", "tv:resnet18")])
def test_resolve_unknown_name_suggests(name, near):
    with pytest.raises(CnnkitError) as info:
        registry.resolve(name)
    message = str(info.value)
    assert f"unknown model '{name}'" in message
    assert "did you mean" in message and repr(near) in message


def test_register_duplicate_name_raises(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    original = registry.MODELS["tiny_cnn"]
    with pytest.raises(ValueError, match="tiny_cnn"):
        registry.register("tiny_cnn")(lambda num_classes, pretrained=False: None)
    assert registry.MODELS["tiny_cnn"] is original

    @registry.register("my_test_net")
    def my_test_net(num_classes, pretrained=False):
        return torch.nn.Linear(4, num_classes)

    assert registry.resolve("my_test_net") == ("cnnkit", "my_test_net")
    assert build_classifier("my_test_net", 5).out_features == 5
    with pytest.raises(ValueError, match="my_test_net"):
        registry.register("my_test_net")(my_test_net)


def test_tiny_cnn_has_no_pretrained_weights():
    with pytest.raises(CnnkitError, match="tiny_cnn"):
        build_classifier("tiny_cnn", 3, pretrained=True)


def test_pretrained_offline_is_a_user_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the environment once at import: set what it already read, and an empty cache
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CnnkitError) as info:
        build_classifier("resnet18", 3, pretrained=True)
    message = str(info.value)
    assert "'resnet18'" in message and "internet" in message
    assert "\n" not in message
