"""`cnnkit classify explain`: the PNG per image, Grad-CAM that follows the digit, --target by name and
index, --layers, and one-line errors. One tiny_cnn is trained for real (2 epochs on digits at 16 px,
a few seconds) for the whole module; the CLI runs in-process (``cnnkit.cli.main()``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from cnnkit import Classifier
from cnnkit.augment.presets import classify_transforms
from cnnkit.engine.checkpoint import load_weights, save_weights
from cnnkit.tasks.classify.explain import gradcam, pick_layers, resolve_target, strongest_maps

IMGSZ = 16


@pytest.fixture(scope="module")
def trained(digits_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("explain") / "run"
    clf = Classifier("tiny_cnn", imgsz=IMGSZ)
    run = clf.train(data="digits", epochs=2, batch=64, lr=0.003, fliplr=0.0, workers=0, seed=0, out=str(run_dir))
    assert run.metrics["top1"] > 0.8  # a model that reads digits, so its Grad-CAM means something
    return run_dir / "weights" / "best.safetensors"


def digit_files(digits_root, per_class: int = 2) -> list[Path]:
    return [f for d in range(10) for f in sorted((digits_root / "test" / str(d)).glob("*.png"))[:per_class]]


def shifted(path: Path, dx: int, dy: int) -> Image.Image:
    """The digit at IMGSZ px moved by (dx, dy) pixels on a black background."""
    a = np.asarray(Image.open(path).convert("L").resize((IMGSZ, IMGSZ), Image.NEAREST))
    out = np.zeros_like(a)
    n = IMGSZ
    out[max(dy, 0):n + min(dy, 0), max(dx, 0):n + min(dx, 0)] = a[max(-dy, 0):n + min(-dy, 0), max(-dx, 0):n + min(-dx, 0)]
    return Image.fromarray(out).convert("RGB")


def centroid(cam: np.ndarray) -> tuple[float, float]:
    if cam.sum() <= 0:
        return np.nan, np.nan
    ys, xs = np.mgrid[:cam.shape[0], :cam.shape[1]]
    w = cam / cam.sum()
    return float((xs * w).sum()), float((ys * w).sum())


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_cli_writes_one_png_per_image_and_a_table(trained, digits_root, tmp_path, monkeypatch, capsys):
    files = digit_files(digits_root, 1)[:3]
    out = tmp_path / "new" / "explain"
    code, stdout, err = run_cli(["classify", "explain", "--weights", trained, *files, "--out", out, "--device", "cpu"],
                                monkeypatch, capsys)
    assert code == 0, err
    assert "3 explanations written" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}.png" for f in files)  # no temporary files left
    for f in files:
        with Image.open(out / f"{f.stem}.png") as png:
            png.load()
            assert png.format == "PNG" and png.width >= 500 and png.height >= 500, png.size
            # a real figure, not a blank canvas
            assert np.asarray(png.convert("L")).std() > 20
    for word in ("file", "predicted", "score", "target", "png"):
        assert word in stdout


def test_default_out_dir_and_api_results(trained, digits_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = digit_files(digits_root, 1)
    results = Classifier.load(trained).explain(files, device="cpu")
    assert [r["file"] for r in results] == [str(f) for f in files]
    for f, r in zip(files, results):
        assert Path(r["png"]) == Path("runs/classify/explain") / f"{f.stem}.png" and Path(r["png"]).is_file()
        assert r["target"] == r["label"] and r["topk"][0][0] == r["label"] and 0 < r["score"] <= 1
        assert r["cam"].shape == (IMGSZ, IMGSZ) and r["cam"].dtype == np.float32
        assert 0.0 <= r["cam"].min() and r["cam"].max() <= 1.0 + 1e-6
    assert sum(r["label"] == f.parent.name for f, r in zip(files, results)) >= 8


def test_gradcam_looks_at_the_digit(trained, digits_root):
    """The true class's Grad-CAM is higher on ink than on background, and it moves with the digit:
    shifting the digit 3 px left vs right (up vs down) moves the CAM's centroid the same way.
    A constant, transposed or mirrored CAM fails this."""
    clf = Classifier.load(trained)
    model = clf.model.eval()
    transform = classify_transforms(IMGSZ, False, mean=clf.mean, std=clf.std)
    layer = pick_layers(model, IMGSZ)[-1]
    on_ink, moves_x, moves_y = [], [], []
    for path in digit_files(digits_root):
        label = int(path.parent.name)
        image = Image.open(path).convert("RGB")
        cam = gradcam(model, layer, transform(image)[None], [label])[0]
        ink = np.asarray(image.convert("L").resize((IMGSZ, IMGSZ), Image.BILINEAR)) > 76
        on_ink.append(cam[ink].mean() > cam[~ink].mean())
        cams = gradcam(model, layer, torch.stack([transform(shifted(path, dx, dy)) for dx, dy in
                                                  ((-3, 0), (3, 0), (0, -3), (0, 3))]), [label] * 4)
        left, right, up, down = (centroid(c) for c in cams)
        moves_x.append(right[0] - left[0])
        moves_y.append(down[1] - up[1])
    assert np.mean(on_ink) >= 0.8, on_ink
    # a shifted digit the model cannot read may get an all-zero CAM (no centroid): it counts as not moving
    for moves in (np.nan_to_num(moves_x), np.nan_to_num(moves_y)):
        assert np.median(moves) > 1.5 and np.mean(moves > 0) >= 0.7, moves


def test_target_by_name_and_by_index(trained, digits_root, tmp_path, monkeypatch, capsys):
    # the same weights with class names that are not numbers, so a name and an index differ
    state, meta = load_weights(trained, task="classify")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    clf = Classifier.load(trained)
    named = save_weights(clf.model, tmp_path / "words.safetensors", {**meta, "class_names": words})
    image = digit_files(digits_root, 1)[0]  # a 0
    by_name = Classifier.load(named).explain([image], out=tmp_path / "a", target="seven", device="cpu")[0]
    by_index = Classifier.load(named).explain([image], out=tmp_path / "b", target=7, device="cpu")[0]
    predicted = Classifier.load(named).explain([image], out=tmp_path / "c", device="cpu")[0]
    assert by_name["target"] == by_index["target"] == "seven" and by_name["label"] == predicted["label"] != "seven"
    np.testing.assert_allclose(by_name["cam"], by_index["cam"], atol=1e-6)
    assert np.abs(by_name["cam"] - predicted["cam"]).mean() > 0.05  # another class, another heatmap

    code, stdout, err = run_cli(["classify", "explain", "--weights", named, image, "--target", "7", "--out", tmp_path / "d",
                                 "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    assert "seven" in stdout and (tmp_path / "d" / f"{image.stem}.png").is_file()
    # digits: the class named '3' is index 3 either way
    assert resolve_target("3", [str(i) for i in range(10)]) == 3
    assert resolve_target("b", ["2", "b"]) == 1 and resolve_target("0", ["1", "0"]) == 1  # a name wins over an index


def test_layers_option_and_listing(trained, digits_root, tmp_path, monkeypatch, capsys):
    image = digit_files(digits_root, 1)[0]
    code, _, err = run_cli(["classify", "explain", "--weights", trained, image, "--out", tmp_path,
                            "--layers", "features.1, features.3", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / f"{image.stem}.png").is_file()
    code, stdout, err = run_cli(["classify", "explain", "--weights", trained, "--layers", "list"], monkeypatch, capsys)
    assert code == 0, err
    assert "features.4" in stdout and "128 x 4 x 4" in stdout


def test_unreadable_image_is_one_line_naming_it(trained, digits_root, tmp_path, monkeypatch, capsys):
    good = digit_files(digits_root, 1)[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:30])
    out = tmp_path / "out"
    code, _, err = run_cli(["classify", "explain", "--weights", trained, good, bad, "--out", out], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and str(bad) in line and line.startswith("cnnkit: "), err
    assert not out.exists()  # checked before any PNG is written


def test_unknown_target_lists_the_classes(trained, digits_root, tmp_path, monkeypatch, capsys):
    image = digit_files(digits_root, 1)[0]
    for target in ("cat", "10", "-1"):
        code, _, err = run_cli(["classify", "explain", "--weights", trained, image, "--target", target, "--out", tmp_path / "o"],
                               monkeypatch, capsys)
        line = one_line(err)
        assert code == 2 and f"'{target}'" in line and "0, 1, 2, 3" in line and str(trained) in line, err
    assert not (tmp_path / "o").exists()


def test_unknown_layer_suggests_names(trained, digits_root, tmp_path, monkeypatch, capsys):
    image = digit_files(digits_root, 1)[0]
    code, _, err = run_cli(["classify", "explain", "--weights", trained, image, "--layers", "features.0,featurs.4",
                            "--out", tmp_path / "o"], monkeypatch, capsys)
    line = one_line(err)
    assert code == 2 and "'featurs.4'" in line and "features.4" in line and "--layers list" in line, err
    code, _, err = run_cli(["classify", "explain", "--weights", trained, image, "--layers", "fc", "--out", tmp_path / "o"],
                           monkeypatch, capsys)
    assert code == 2 and "'fc'" in one_line(err) and "no feature map" in err
    assert not (tmp_path / "o").exists()


def test_gradcam_with_frozen_params_in_no_grad_leaves_no_trace(trained, digits_root):
    clf = Classifier.load(trained)
    model = clf.model
    x = torch.stack([classify_transforms(IMGSZ, False)(Image.open(f).convert("RGB")) for f in digit_files(digits_root, 1)[:4]])
    reference = gradcam(model, "features.4", x, [0, 1, 2, 3])
    model.train()
    for p in model.features.parameters():  # a linear-probe model: frozen backbone
        p.requires_grad_(False)
    with torch.inference_mode():
        frozen = gradcam(model, "features.4", x, [0, 1, 2, 3])
    with torch.no_grad():
        frozen_no_grad = gradcam(model, "features.4", x, [0, 1, 2, 3])
    np.testing.assert_allclose(frozen, reference, atol=1e-5)  # eval-mode BatchNorm, whatever mode it came in
    np.testing.assert_allclose(frozen_no_grad, reference, atol=1e-5)
    assert frozen.shape == (4, IMGSZ, IMGSZ) and frozen.std() > 0.05
    assert model.training  # modes and flags restored
    assert [p.requires_grad for p in model.parameters()] == [False] * len(list(model.features.parameters())) + [True, True]
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())  # the library's hooks are gone


def test_layer_choice_for_timm_and_torchvision_models():
    from cnnkit.models.backbones import build_classifier
    from cnnkit.models.tiny_cnn import TinyCNN

    assert pick_layers(TinyCNN(3), 16) == ["features.0", "features.2", "features.4"]
    torch.manual_seed(0)
    timm_resnet = build_classifier("resnet18", 3).eval()
    assert pick_layers(timm_resnet, 32) == ["act1", "layer2", "layer4"]  # from timm's feature_info
    assert pick_layers(build_classifier("tv:resnet18", 3), 32) == ["conv1", "layer2", "layer4"]
    cam = gradcam(timm_resnet, "layer4", torch.randn(2, 3, 64, 64), [0, 2])
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all()


def test_strongest_maps():
    act = torch.zeros(6, 3, 3)
    act[4] += 5.0
    act[1] += 2.0
    act[2, 0, 0] = 9.0  # mean 1.0
    picked = strongest_maps(act, k=2)
    assert [(c, round(m, 3)) for c, m, _ in picked] == [(4, 5.0), (1, 2.0)]
    assert picked[0][2].shape == (3, 3)
    assert len(strongest_maps(act[:1], k=4)) == 1


def test_help_lists_every_option(monkeypatch, capsys):
    code, stdout, _ = run_cli(["classify", "explain", "--help"], monkeypatch, capsys)
    assert code == 0
    for option in ("IMAGE", "--weights", "--target", "--out", "--layers", "--device"):
        assert option in stdout
