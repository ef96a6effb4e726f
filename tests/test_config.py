"""TrainConfig: YAML round trip, option precedence (command line > YAML > default), validation."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cnnkit.runner
import cnnkit.tasks.classify.api
import cnnkit.cli
from conftest import run_cli
from cnnkit.config import read_yaml_options, write_yaml
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.errors import CnnkitError


@pytest.fixture
def captured(monkeypatch) -> list[TrainConfig]:
    """Replace the training run with a recorder: the CLI's final config lands in the list."""
    configs: list[TrainConfig] = []

    def record(cfg, *args, **kwargs):
        configs.append(cfg)

    monkeypatch.setattr(cnnkit.tasks.classify.api, "train", record)  # what `classify train` calls
    monkeypatch.setattr(cnnkit.runner, "train", record)  # what the other tasks' `train` call
    return configs


# ---------------------------------------------------------------------------- YAML
def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(data="/data/pets", model="resnet18", epochs=7, batch=24, imgsz=96, lr=3e-4, optimizer="sgd",
                      momentum=0.85, weight_decay=1e-4, scheduler="constant", warmup_epochs=0.5, accumulate=2,
                      clip_grad=1.5, ema=True, ema_decay=0.99, patience=3, label_smoothing=0.1, augment="none",
                      fliplr=0.0, val_split=0.3, amp=True, amp_dtype="bf16", channels_last=True, workers=0, seed=42,
                      deterministic=True, out="runs/classify/x", name="exp9", resume=True, weights="w.safetensors",
                      pretrained=True, min_lr_ratio=0.05, device="cpu", compile=True, backbone_from="b.safetensors",
                      transfer="linear", backbone_lr_mult=0.5, loss="focal", focal_gamma=1.5, balance="oversample",
                      class_weights="effective", flipud=0.1, degrees=5.0, translate=0.05, scale=0.2, crop_scale=0.6,
                      brightness=0.1, contrast=0.15, saturation=0.25, hue=0.01, grayscale=0.02, blur=0.3, noise=0.4, erasing=0.6,
                      illumination=0.7, mixup=0.3, cutmix=0.5, precise_bn=3, max_pixels=0, normalize="window",
                      window="-160,240", tta="flip", save_every_steps=50)
    # every field differs from its default, so a field that is lost on the way shows up
    defaults = TrainConfig()
    assert [f.name for f in fields(cfg) if getattr(cfg, f.name) == getattr(defaults, f.name)] == []
    path = tmp_path / "config.yaml"
    write_yaml(path, cfg.to_dict())
    assert yaml.safe_load(path.read_text())["lr"] == 3e-4
    options = read_yaml_options(path, TrainConfig)
    assert set(options) == {f.name for f in fields(TrainConfig)}
    restored = TrainConfig(**options)
    assert restored == cfg
    assert type(restored.lr) is float and type(restored.epochs) is int and type(restored.ema) is bool


def test_yaml_values_are_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    # PyYAML reads 1e-3 as a string (YAML 1.1 floats need a dot); dashes are accepted in keys
    path.write_text("lr: 1e-3\nclip-grad: 2\nepochs: '4'\nname: 2024\namp: yes\n")
    options = read_yaml_options(path, TrainConfig)
    assert options == {"lr": 0.001, "clip_grad": 2.0, "epochs": 4, "name": "2024", "amp": True}
    assert type(options["clip_grad"]) is float


@pytest.mark.parametrize("text, words", [
    ("epochs: ten\n", ["epochs", "expected int", "'ten'"]),
    ("amp: 1\n", ["amp", "expected true or false"]),
    ("lr: [1, 2]\n", ["lr", "expected float"]),
    ("- epochs\n- 3\n", ["expected a mapping"]),
    ("lr: 0.1\nwarmup_epoch: 2\n", ["unknown option 'warmup_epoch'", "did you mean 'warmup-epochs'"]),
    ("lr: 0.1\n  epochs: 2\n", ["invalid YAML", "line 2"]),
])
def test_yaml_rejects_bad_files(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CnnkitError) as info:
        read_yaml_options(path, TrainConfig)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message


def test_yaml_rejects_fractional_int(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2.5\n")
    with pytest.raises(CnnkitError, match="epochs"):
        read_yaml_options(path, TrainConfig)


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert read_yaml_options(path, TrainConfig) == {}


# ---------------------------------------------------------------------------- precedence
def test_cli_defaults_without_config(captured, monkeypatch, capsys):
    code, _, err = run_cli(["classify", "train"], monkeypatch, capsys)
    assert code == 0, err
    assert captured == [TrainConfig()]


def test_cli_beats_default(captured, monkeypatch, capsys):
    code, _, err = run_cli(["classify", "train", "--epochs", "3", "--optimizer", "sgd", "--amp", "--lr", "0.1",
                            "--name", "mine"], monkeypatch, capsys)
    assert code == 0, err
    assert captured == [replace(TrainConfig(), epochs=3, optimizer="sgd", amp=True, lr=0.1, name="mine")]
    assert type(captured[0].optimizer) is str  # the Enum choice is unwrapped


def test_cli_beats_yaml_beats_default(captured, tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 5\nlr: 0.01\noptimizer: sgd\namp: true\nbatch: 16\nmodel: resnet18\n")
    code, _, err = run_cli(["classify", "train", "--config", config,
                            "--epochs", "20",        # typed, equal to the default: still beats the YAML 5
                            "--optimizer", "adamw",  # typed choice (the default) beats the YAML sgd
                            "--no-amp",              # typed flag beats the YAML true
                            "--imgsz", "48",         # typed, not in the YAML
                            "--model", "tiny_cnn"],
                           monkeypatch, capsys)
    assert code == 0, err
    [cfg] = captured
    assert cfg == replace(TrainConfig(), epochs=20, lr=0.01, optimizer="adamw", amp=False, batch=16, imgsz=48, model="tiny_cnn")
    assert isinstance(cfg.optimizer, str) and not hasattr(cfg.optimizer, "value")  # the Enum choice is unwrapped


def test_yaml_alone_beats_default(captured, tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 5\noptimizer: sgd\nema: true\nout: somewhere\n")
    code, _, err = run_cli(["classify", "train", "--config", config], monkeypatch, capsys)
    assert code == 0, err
    assert captured == [replace(TrainConfig(), epochs=5, optimizer="sgd", ema=True, out="somewhere")]


def test_yaml_with_a_bad_choice_is_a_user_error(captured, tmp_path, monkeypatch, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("optimizer: adam\n")
    code, _, err = run_cli(["classify", "train", "--config", config], monkeypatch, capsys)
    assert code == 2 and captured == []
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("cnnkit: ") and "--optimizer 'adam'" in line and "adamw, sgd" in line


def _write_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("val", 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_saved_config_of_a_real_run(tmp_path, monkeypatch, capsys):
    """A 1-epoch tiny run writes config.yaml with typed > YAML > default, and it reads back."""
    data = _write_dataset(tmp_path / "ds")
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nseed: 7\nfliplr: 0.0\nimgsz: 64\n")
    out_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNKIT_HOME", str(tmp_path / "home"))
    code, _, err = run_cli(["classify", "train", "--config", config, "--data", data, "--model", "tiny_cnn", "--epochs", "1",
                            "--imgsz", "16", "--batch", "4", "--workers", "0", "--out", out_dir, "--device", "cpu"],
                           monkeypatch, capsys)
    assert code == 0, err
    saved = read_yaml_options(out_dir / "config.yaml", TrainConfig)
    assert saved["epochs"] == 1 and saved["imgsz"] == 16 and saved["batch"] == 4        # typed, over YAML or default
    assert saved["seed"] == 7 and saved["fliplr"] == 0.0                                # YAML
    assert saved["lr"] == TrainConfig.lr and saved["weight_decay"] == TrainConfig.weight_decay  # defaults
    assert saved["out"] == str(out_dir) and saved["data"] == str(data)
    assert TrainConfig(**saved).validate().epochs == 1


# ---------------------------------------------------------------------------- validate()
def test_validate_accepts_defaults_and_returns_self():
    cfg = TrainConfig()
    assert cfg.validate() is cfg


@pytest.mark.parametrize("change, flag", [
    ({"optimizer": "adam"}, "--optimizer"),
    ({"scheduler": "step"}, "--scheduler"),
    ({"augment": "extreme"}, "--augment"),
    ({"erasing": 1.5}, "--erasing"),
    ({"fliplr": -0.5}, "--fliplr"),
    ({"degrees": 200.0}, "--degrees"),
    ({"crop_scale": 0.0}, "--crop-scale"),
    ({"hue": 0.7}, "--hue"),
    ({"mixup": -1.0}, "--mixup"),
    ({"amp_dtype": "fp8"}, "--amp-dtype"),
    ({"epochs": 0}, "--epochs"),
    ({"batch": 0}, "--batch"),
    ({"imgsz": -32}, "--imgsz"),
    ({"accumulate": 0}, "--accumulate"),
    ({"lr": 0.0}, "--lr"),
    ({"lr": -0.1}, "--lr"),
    ({"workers": -1}, "--workers"),
])
def test_validate_rejects(change, flag):
    with pytest.raises(CnnkitError) as info:
        replace(TrainConfig(), **change).validate()
    assert flag in str(info.value)
    assert str(next(iter(change.values()))) in str(info.value)


@pytest.mark.parametrize("change, flag", [
    ({"fliplr": 1.5}, "--fliplr"),                              # torchvision ValueError building the transforms
    ({"label_smoothing": 1.5}, "--label-smoothing"),            # torch RuntimeError in the first loss
    ({"weight_decay": -0.1}, "--weight-decay"),                 # torch ValueError building AdamW
    ({"optimizer": "sgd", "momentum": -0.5}, "--momentum"),     # torch ValueError building SGD
], ids=["fliplr", "label_smoothing", "weight_decay", "momentum"])
def test_validate_rejects_out_of_range(change, flag):
    with pytest.raises(CnnkitError) as info:
        replace(TrainConfig(), **change).validate()
    assert flag in str(info.value)


def test_embed_config_round_trip_and_checks(tmp_path, captured, monkeypatch, capsys):
    from cnnkit.tasks.embed.config import EmbedConfig

    cfg = EmbedConfig(dim=64, loss="triplet", margin=0.3, temperature=0.2, per_class=8, epochs=3)
    path = tmp_path / "embed.yaml"
    write_yaml(path, cfg.to_dict())
    assert EmbedConfig(**read_yaml_options(path, EmbedConfig)) == cfg
    for change, flag in [({"dim": 0}, "--dim"), ({"temperature": 0.0}, "--temperature"), ({"margin": 3.0}, "--margin"),
                         ({"per_class": 100}, "--per-class"), ({"loss": "arcface"}, "--loss")]:
        with pytest.raises(CnnkitError, match=flag):
            replace(cfg, **change).validate()
    # the command line reaches the embed recipe with typed options over the YAML file
    code, _, err = run_cli(["embed", "train", "--config", path, "--dim", "32"], monkeypatch, capsys)
    assert code == 0, err
    assert isinstance(captured[-1], EmbedConfig) and captured[-1].dim == 32 and captured[-1].loss == "triplet"


def test_detect_config_round_trip_and_checks(tmp_path):
    from cnnkit.tasks.classify.config import CLASSIFY_ONLY
    from cnnkit.tasks.detect.config import DetectConfig

    names = {f.name for f in fields(DetectConfig)}
    assert not names & set(CLASSIFY_ONLY) and {"backbone", "anchors", "conf", "iou", "max_det", "classes", "strict"} <= names
    cfg = DetectConfig(data="/data/coco", model="ssdlite", conf=0.2, iou=0.6, max_det=50, classes="cat,dog", anchors="torchvision")
    path = tmp_path / "detect.yaml"
    write_yaml(path, cfg.validate().to_dict())
    assert DetectConfig(**read_yaml_options(path, DetectConfig)) == cfg
    (tmp_path / "bad.yaml").write_text("label_smoothing: 0.1\n")
    with pytest.raises(CnnkitError, match="unknown option 'label_smoothing'"):
        read_yaml_options(tmp_path / "bad.yaml", DetectConfig)
    with pytest.raises(CnnkitError, match="fixed"):
        DetectConfig(model="ssd", backbone="resnet50").validate()
    with pytest.raises(CnnkitError, match="--max-det"):
        DetectConfig(max_det=0).validate()
    # the YOLO-style detectors' options: checked, and refused for torchvision's detectors
    assert DetectConfig(model="yolo_s", backbone="resnet18", dfl=False, box_loss="giou", cls_loss="varifocal", mosaic=0.5).validate()
    with pytest.raises(CnnkitError, match="--box-loss applies to the YOLO-style detectors"):
        DetectConfig(model="fasterrcnn", box_loss="giou").validate()
    with pytest.raises(CnnkitError, match="--mosaic must be between 0 and 1"):
        DetectConfig(model="yolo_n", mosaic=1.5).validate()
    with pytest.raises(CnnkitError, match="did you mean 'yolo_n'"):
        DetectConfig(model="yolo_nn").validate()
