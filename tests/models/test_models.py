"""Every model family builds by name, trains a step, and survives a weights-file round trip exactly;
every model in the registry (each task's families) builds at a small size and runs forward, as timm tests
every registered model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import cnnkit.models  # noqa: F401  (every family registers: the table below is the whole one)
from cnnkit import registry
from cnnkit.engine.checkpoint import load_weights, save_weights
from cnnkit.errors import CnnkitError
from cnnkit.models.backbones import build_classifier
from cnnkit.models.detectors import build_detector, parse_model
from cnnkit.models.segmenters import build_segmenter, parse_segmenter
from conftest import run_cli

NAMES = ["tiny_cnn", "small_cnn", "resnet18", "mobilenetv3_small", "efficientnet_b0", "densenet121", "vgg11", "tv:resnet18"]


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


# The side each registered model runs at below: 64 px, unless its architecture needs more.
SIDE = {"pan": 128}  # smp's PAN pools its stride-32 map three more times (feature pyramid attention): 64 px leaves 1x1
# SSD300's VGG16 extra layers need about 300 px (4 s on a CPU): tests/models/test_detectors.py::
# test_ssd_vgg_builds_at_its_size builds and runs it at its size, so this walk leaves it to that test
BUILT_ELSEWHERE = {"ssd"}
REGISTERED = [n for n in registry.MODELS if n not in BUILT_ELSEWHERE]


def test_small_cnn_pools_average_and_max_side_by_side():
    """small_cnn's head sees the average and the maximum of each of its 256 channels (timm's catavgmax), so
    feature extraction and embedders get 512 features; tiny_cnn keeps plain average pooling."""
    torch.manual_seed(0)
    net = build_classifier("small_cnn", 3).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = net.forward_features(x)
        pooled = net.forward_head(features, pre_logits=True)
        assert torch.allclose(pooled, torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1))
        assert net.num_features == 512 and net.fc.in_features == 512
        assert build_classifier("small_cnn", 0).eval()(x).shape == (2, 512)
        tiny = build_classifier("tiny_cnn", 3).eval()
        assert tiny.num_features == 128
        assert torch.allclose(tiny.forward_head(tiny.forward_features(x), pre_logits=True),
                              tiny.forward_features(x).mean((2, 3)))


def test_every_family_is_registered():
    """The table the parametrised test below walks holds every task's families (a family that forgot to
    register would also be missing from `cnnkit models`)."""
    assert registry.names("classify") == ["tiny_cnn", "small_cnn"]
    assert registry.names("detect") == ["fasterrcnn", "ssd", "ssdlite", "yolo_n", "yolo_s", "yolo_m"]
    assert registry.names("segment") == ["unet", "fpn", "pan", "deeplabv3plus", "fcn"]
    assert registry.names("instance") == ["maskrcnn"]


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_model_builds_and_runs_forward(name):
    torch.manual_seed(0)
    task, side = registry.MODELS[name].task, SIDE.get(name, 64)
    if task == "classify":
        net = build_classifier(name, 3).eval()
        with torch.no_grad():
            assert net(torch.rand(2, 3, 32, 32)).shape == (2, 3)
        return
    if task == "segment":
        net = build_segmenter(name, None, 3).eval()  # through the segment task's builder, which looks the name up
        with torch.no_grad():
            logits = net(torch.rand(1, 3, side, side))
        assert logits.shape == (1, 3, side, side) and torch.isfinite(logits).all()
        return
    # detect and instance: a list of images of any size in, boxes in the input's pixels out
    assert task in ("detect", "instance"), f"no forward check written for task {task!r}"
    net = build_detector(name, 2, side) if task == "detect" else registry.MODELS[name].build(num_classes=2, imgsz=side)
    net.eval()
    width = side * 3 // 4
    with torch.no_grad():
        out = net([torch.rand(3, side, width)])[0]
    assert out["boxes"].shape[1:] == (4,) and len(out["scores"]) == len(out["labels"]) == len(out["boxes"])
    if len(out["boxes"]):
        assert (out["boxes"][:, 2] <= width + 1e-3).all() and (out["boxes"][:, 3] <= side + 1e-3).all()
        assert out["labels"].min() >= 1 and out["labels"].max() <= 2
    if task == "instance":
        assert out["masks"].shape[1:] == (1, side, width)


def test_each_task_builder_looks_names_up_in_the_registry(monkeypatch):
    """A model registered for a task is buildable by that task's builder: no second list of names to edit."""
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))

    @registry.register("my_detector", task="detect")
    def my_detector(num_classes, **options):
        return torch.nn.Linear(4, num_classes)

    @registry.register("my_segmenter", task="segment")
    def my_segmenter(model, encoder, num_classes, pretrained):
        return torch.nn.Conv2d(3, num_classes, 1)

    assert parse_model("my_detector", None) == ("my_detector", None)
    assert build_detector("my_detector", 5, 64).out_features == 5
    assert build_segmenter("my_segmenter", None, 4).out_channels == 4
    assert "my_detector" not in registry.all_names()  # a detector is no classification backbone


def test_a_name_of_another_task_says_which_command_builds_it():
    with pytest.raises(CnnkitError) as info:
        build_classifier("yolo_n", 3)
    assert "not a classification backbone" in str(info.value) and "cnnkit detect train --model yolo_n" in str(info.value)
    with pytest.raises(CnnkitError, match="is not a detector.*unet is a segment model: `cnnkit segment train --model unet`"):
        parse_model("unet", None)
    with pytest.raises(CnnkitError, match="unknown segmentation model 'yolo_s'.*cnnkit detect train --model yolo_s"):
        parse_segmenter("yolo_s", None)
    with pytest.raises(CnnkitError, match="did you mean 'yolo_m'"):  # near names still come first
        parse_model("yolo_mm", None)


def test_register_refuses_an_unknown_task(monkeypatch):
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    with pytest.raises(ValueError, match="unknown task 'tracking'"):
        registry.register("my_tracker", task="tracking")
    with pytest.raises(ValueError, match="'unet' is registered twice.*segment"):
        registry.register("unet", task="detect")(lambda **options: None)


def test_registry_imports_neither_torch_nor_the_models():
    """registry -> models -> tiny_cnn -> registry was a circle; the registry is now a leaf (and --help
    needs no torch)."""
    code = ("import sys, cnnkit.registry; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('cnnkit.models')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cli_models_lists_every_task_with_its_task(monkeypatch, capsys):
    code, out, err = run_cli(["models"], monkeypatch, capsys)
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()}
    assert rows["tiny_cnn"] == ["classify", "cnnkit"] and rows["resnet18"] == ["classify", "timm"]
    assert rows["tv:resnet18"] == ["classify", "torchvision"]
    for name, task in [("yolo_n", "detect"), ("fasterrcnn", "detect"), ("unet", "segment"), ("maskrcnn", "instance")]:
        assert rows[name] == [task, "cnnkit"], name
    code, out, _ = run_cli(["models", "yolo"], monkeypatch, capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["yolo_n", "yolo_s", "yolo_m"]
    code, out, _ = run_cli(["models", "--task", "segment"], monkeypatch, capsys)
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["unet", "fpn", "pan", "deeplabv3plus", "fcn"]
    code, _, err = run_cli(["models", "--task", "segmnt"], monkeypatch, capsys)
    assert code == 2 and "--task 'segmnt' is not a task" in err
