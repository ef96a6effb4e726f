"""`cnnkit classify features`: pooled features, files and labels in the .npz, layer outputs, layer
listing, unknown layers, corrupt images and torchvision models. Nothing is trained; the CLI runs
in-process (conftest.run_cli)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from cnnkit.augment.presets import classify_transforms
from cnnkit.data.images import load_image
from cnnkit.engine.checkpoint import save_weights
from cnnkit.models.backbones import build_classifier
from cnnkit.models.tiny_cnn import TinyCNN
from cnnkit.tasks.classify.features import extract_features, list_layers, pooled_features, save_npz

CLASSES = ["cat", "dog"]
META = {"task": "classify", "model": "tiny_cnn", "class_names": CLASSES, "num_classes": 2, "imgsz": 16,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "cnnkit_version": "test"}


@pytest.fixture
def split(tmp_path) -> Path:
    """tmp/val/{cat,dog}/{0,1,2}.png: six distinct random 12x12 images."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for i in range(3):
            path = tmp_path / "val" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").save(path)
    return tmp_path / "val"


@pytest.fixture
def model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN(len(CLASSES)).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode normalisation matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def weights(tmp_path, model) -> Path:
    return save_weights(model, tmp_path / "w.safetensors", META)


def expected_features(model, files, imgsz=16) -> np.ndarray:
    transform = classify_transforms(imgsz, train=False, mean=META["mean"], std=META["std"])
    with torch.no_grad():
        return pooled_features(model.eval(), torch.stack([transform(load_image(f)) for f in files])).numpy()


def test_features_files_and_labels(split, weights, model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "new" / "folder" / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", split, "--out", out,
                            "--workers", "0", "--batch", "4"], monkeypatch, capsys)
    assert code == 0, err
    assert "6 images, 128 dims" in err and str(out) in err
    data = np.load(out)
    files = sorted(split.rglob("*.png"))
    assert data["features"].shape == (6, 128) and data["features"].dtype == np.float32
    assert list(data["files"]) == [str(f) for f in files]
    assert list(data["labels"]) == [0, 0, 0, 1, 1, 1]
    assert list(data["class_names"]) == CLASSES
    np.testing.assert_allclose(data["features"], expected_features(model, files), rtol=1e-4, atol=1e-5)
    assert not [p for p in out.parent.iterdir() if p.name != "f.npz"]  # no temporary file left behind


def test_loose_images_have_no_labels(weights, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "loose"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (10, 10), (i * 60, 0, 0)).save(folder / f"{i}.png")
    out = tmp_path / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", f"{folder}/*.png", "--out", out,
                            "--workers", "0"], monkeypatch, capsys)
    assert code == 0, err
    data = np.load(out)
    assert data["features"].shape == (3, 128)
    assert "labels" not in data.files and "class_names" not in data.files


def test_layer_outputs(split, weights, model, tmp_path, monkeypatch, capsys):
    names = [name for name, _, _ in list_layers(model, 16)]
    assert "features.0" in names and "features.3" in names
    out = tmp_path / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", split, "--out", out,
                            "--workers", "0", "--layers", "features.0,features.3"], monkeypatch, capsys)
    assert code == 0, err
    data = np.load(out)
    assert data["layer:features.0"].shape == (6, 32, 16, 16) and data["layer:features.0"].dtype == np.float16
    assert data["layer:features.3"].shape == (6, 64, 4, 4)
    # the last feature map, average-pooled, is the pooled feature vector
    torch_map = model.features[:4](torch.stack([classify_transforms(16, False)(load_image(f)) for f in data["files"]]))
    np.testing.assert_allclose(data["layer:features.3"], torch_map.detach().numpy(), rtol=1e-2, atol=1e-2)


def test_layers_list(weights, monkeypatch, capsys):
    code, out, err = run_cli(["classify", "features", "--weights", weights, "--layers", "list"], monkeypatch, capsys)
    assert code == 0, err
    assert "features.0" in out and "Conv2d" in out and "32 x 16 x 16" in out


def test_unknown_layer_is_a_user_error(split, weights, tmp_path, monkeypatch, capsys):
    out = tmp_path / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", split, "--out", out,
                            "--layers", "features.0,nope"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "'nope'" in lines[0] and "--layers list" in lines[0]
    assert not out.exists()


def test_empty_source_is_a_user_error(weights, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", tmp_path / "empty",
                            "--out", tmp_path / "f.npz"], monkeypatch, capsys)
    assert code == 2 and "no images found" in err


def test_corrupt_image_is_skipped_and_files_stay_aligned(split, weights, model, tmp_path, monkeypatch, capsys):
    corrupt = split / "cat" / "1.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    out = tmp_path / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", split, "--out", out,
                            "--workers", "0", "--batch", "2"], monkeypatch, capsys)
    assert code == 0, err
    assert any(str(corrupt) in line and "warning" in line for line in err.splitlines()), err
    data = np.load(out)
    kept = [f for f in sorted(split.rglob("*.png")) if f != corrupt]
    assert list(data["files"]) == [str(f) for f in kept]
    assert list(data["labels"]) == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(data["features"], expected_features(model, kept), rtol=1e-4, atol=1e-5)


def test_torchvision_model(split, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    tv = build_classifier("tv:resnet18", len(CLASSES)).eval()
    weights = save_weights(tv, tmp_path / "tv.safetensors", {**META, "model": "tv:resnet18", "imgsz": 32})
    out = tmp_path / "f.npz"
    code, _, err = run_cli(["classify", "features", "--weights", weights, "--source", split, "--out", out,
                            "--workers", "0", "--layers", "layer4"], monkeypatch, capsys)
    assert code == 0, err
    data = np.load(out)
    assert data["features"].shape == (6, 512)
    assert data["layer:layer4"].shape == (6, 512, 1, 1)
    # resnet's fc input is layer4 average-pooled
    np.testing.assert_allclose(data["features"], data["layer:layer4"].astype(np.float32).mean(axis=(2, 3)), rtol=1e-2, atol=1e-2)


def test_extract_features_and_save_npz_directly(split, model, tmp_path):
    files = sorted(split.rglob("*.png"), reverse=True)  # dog/2 … cat/0: rows follow the order given, not the disk's
    labels = [CLASSES.index(f.parent.name) for f in files]
    transform = classify_transforms(16, False)
    arrays = extract_features(model, files, labels, transform, batch=4, workers=0, device=torch.device("cpu"), progress=False)
    # the features are what the classifier's last layer reads: that layer applied to each row gives the
    # model's own logits for that image (batches of 4 and 2, so a row mixed up across batches shows)
    with torch.no_grad():
        logits = model(torch.stack([transform(load_image(f)) for f in files]))
        from_features = model.get_classifier()(torch.from_numpy(arrays["features"]))
    assert arrays["features"].shape == (6, model.num_features) and arrays["features"].dtype == np.float32
    torch.testing.assert_close(from_features, logits, atol=1e-4, rtol=1e-4)
    assert len({row.tobytes() for row in arrays["features"]}) == 6  # six different images, six different rows
    assert list(arrays["files"]) == [str(f) for f in files] and arrays["labels"].tolist() == labels
    path = save_npz(tmp_path / "plain_name", arrays)  # no .npz suffix: written exactly where asked
    assert path.is_file() and not (tmp_path / "plain_name.npz").exists()
    with np.load(path) as data:
        assert sorted(data.files) == ["features", "files", "labels"]
        np.testing.assert_array_equal(data["features"], arrays["features"])
        assert list(data["files"]) == [str(f) for f in files] and data["labels"].tolist() == labels
