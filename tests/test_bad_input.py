"""Bad input at the command line: one line on stderr naming the culprit, exit code 2, no traceback.

The CLI runs in-process (``cnnkit.cli.main()`` with a patched ``sys.argv``), so each case costs
milliseconds; one case runs the real ``python -m cnnkit`` to check that ``--debug`` prints a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit.cli
from conftest import run_cli
from cnnkit.engine.checkpoint import save_weights
from cnnkit.errors import CnnkitError
from cnnkit.models.tiny_cnn import TinyCNN

META = {"task": "classify", "model": "tiny_cnn", "class_names": ["a", "b"], "num_classes": 2, "imgsz": 16,
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "cnnkit_version": "test"}
TINY_TRAIN = ["--model", "tiny_cnn", "--epochs", "1", "--imgsz", "16", "--batch", "4", "--workers", "0"]


def assert_user_error(result, *names: str) -> str:
    """Exit 2, exactly one non-empty stderr line `cnnkit: …` mentioning every name, no traceback."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    line = lines[0]
    assert line.startswith("cnnkit: "), line
    assert "internal error" not in line
    assert "Traceback" not in err and "Traceback" not in out
    for name in names:
        assert str(name) in line, f"{name!r} not in {line!r}"
    return line


def write_png(path: Path, seed: int, size: int = 12) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").save(path, "PNG")
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_dataset(root: Path, train: dict[str, int], val: dict[str, int] | None = None) -> Path:
    """root/train/CLASS/i.png (and root/val/…) with distinct random pixels; 0 images -> empty folder."""
    seed = 0
    for split, counts in (("train", train), ("val", val or {})):
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                write_png(root / split / name / f"{i}.png", seed)
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    """12 train (6 per class) and 6 val images in classes a and b."""
    return make_dataset(tmp_path / "ds", {"a": 6, "b": 6}, {"a": 3, "b": 3})


@pytest.fixture
def weights(tmp_path) -> Path:
    return save_weights(TinyCNN(2), tmp_path / "w.safetensors", META)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bare --resume looks for runs/ in the working directory


# ---------------------------------------------------------------------------- data
def test_missing_data_folder(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no_such_dataset"
    line = assert_user_error(run_cli(["classify", "train", "--data", missing, "--out", tmp_path / "run"], monkeypatch, capsys),
                             missing)
    assert "no such dataset folder" in line
    assert not (tmp_path / "run").exists()


def test_empty_class_folder(tmp_path, monkeypatch, capsys):
    root = make_dataset(tmp_path / "ds", {"a": 4, "b": 0})
    line = assert_user_error(run_cli(["classify", "train", "--data", root, *TINY_TRAIN, "--out", tmp_path / "run"],
                                     monkeypatch, capsys), root / "train" / "b")
    assert "empty class folder" in line


def test_class_in_val_but_not_in_train(tmp_path, monkeypatch, capsys):
    root = make_dataset(tmp_path / "ds", {"a": 4, "b": 4}, {"a": 2, "b": 2, "c": 2})
    line = assert_user_error(run_cli(["classify", "train", "--data", root, *TINY_TRAIN, "--out", tmp_path / "run"],
                                     monkeypatch, capsys), root / "val", "'c'")
    assert "not in the train split" in line


def test_corrupt_train_image_is_skipped_with_a_warning(dataset, tmp_path, monkeypatch, capsys):
    corrupt = truncate(dataset / "train" / "a" / "0.png")
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["classify", "train", "--data", dataset, *TINY_TRAIN, "--out", out_dir], monkeypatch, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if str(corrupt) in line]
    assert len(warnings) == 1, err  # warned once, naming the file
    assert warnings[0].startswith("cnnkit: warning: ") and "skipped" in warnings[0]
    assert (out_dir / "weights" / "best.safetensors").is_file()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0
    assert sum(c["support"] for c in metrics["per_class"].values()) == 6  # every val image evaluated


def test_corrupt_val_image_is_skipped_with_a_warning(dataset, tmp_path, monkeypatch, capsys):
    corrupt = truncate(dataset / "val" / "a" / "1.png")
    out_dir = tmp_path / "run"
    code, out, err = run_cli(["classify", "train", "--data", dataset, *TINY_TRAIN, "--out", out_dir], monkeypatch, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if str(corrupt) in line]
    assert warnings and all("skipped" in line for line in warnings), err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert sum(c["support"] for c in metrics["per_class"].values()) == 5  # the corrupt one is left out


# ---------------------------------------------------------------------------- images and weights
def test_predict_truncated_png(dataset, weights, monkeypatch, capsys):
    bad = truncate(dataset / "train" / "a" / "0.png")
    line = assert_user_error(run_cli(["classify", "predict", bad, "--weights", weights], monkeypatch, capsys), bad)
    assert "truncated" in line


def test_predict_good_png_works(dataset, weights, monkeypatch, capsys):
    """The control for the cases around it: the same weights and a readable image succeed."""
    good = dataset / "train" / "a" / "0.png"
    saved = good.parent / "predictions.json"
    code, out, err = run_cli(["classify", "predict", good, "--weights", weights, "--device", "cpu", "--save-json", saved],
                             monkeypatch, capsys)
    assert code == 0, err
    [result] = json.loads(saved.read_text())
    assert result["file"] == str(good) and result["label"] in ("a", "b")
    assert [label for label, _ in result["topk"]] == sorted(["a", "b"], key=lambda c: c != result["label"])


@pytest.fixture
def detect_weights(tmp_path) -> Path:
    return save_weights(TinyCNN(2), tmp_path / "detector.safetensors", {**META, "task": "detect"})


def test_predict_with_weights_of_another_task(dataset, detect_weights, monkeypatch, capsys):
    image = dataset / "train" / "a" / "0.png"
    line = assert_user_error(run_cli(["classify", "predict", image, "--weights", detect_weights], monkeypatch, capsys),
                             detect_weights, "detect")
    assert "classify" in line


def test_weights_of_an_older_build_of_the_architecture(dataset, tmp_path, monkeypatch, capsys):
    """small_cnn's head took 512 features (average and max pooling); a file written with its 256-wide head says
    which tensor does not fit instead of PyTorch's size-mismatch traceback."""
    old = save_weights(TinyCNN(2, widths=(32, 64, 128, 256)), tmp_path / "old.safetensors", {**META, "model": "small_cnn"})
    image = dataset / "train" / "a" / "0.png"
    line = assert_user_error(run_cli(["classify", "predict", image, "--weights", old], monkeypatch, capsys), old, "small_cnn")
    assert "fc.weight is [2, 256] in the file, [2, 512] in the model" in line


def test_val_with_weights_of_another_task(dataset, detect_weights, monkeypatch, capsys):
    line = assert_user_error(run_cli(["classify", "val", "--weights", detect_weights, "--data", dataset, "--workers", "0"],
                                     monkeypatch, capsys), detect_weights, "detect")
    assert "classify" in line


def test_weights_of_random_bytes(dataset, tmp_path, monkeypatch, capsys):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    image = dataset / "train" / "a" / "0.png"
    line = assert_user_error(run_cli(["classify", "predict", image, "--weights", bogus], monkeypatch, capsys), bogus)
    assert "not a cnnkit weights file" in line


def test_safetensors_without_cnnkit_metadata(dataset, tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file(TinyCNN(2).state_dict(), str(plain), metadata={"task": "classify"})
    image = dataset / "train" / "a" / "0.png"
    line = assert_user_error(run_cli(["classify", "predict", image, "--weights", plain], monkeypatch, capsys), plain)
    assert "without cnnkit metadata" in line


def test_missing_weights_file(dataset, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing.safetensors"
    line = assert_user_error(run_cli(["classify", "val", "--weights", missing, "--data", dataset], monkeypatch, capsys), missing)
    assert "no such weights file" in line


# ---------------------------------------------------------------------------- names and options
def test_unknown_model_name_suggests(dataset, tmp_path, monkeypatch, capsys):
    line = assert_user_error(run_cli(["classify", "train", "--data", dataset, *TINY_TRAIN, "--model", "resnt18",
                                      "--out", tmp_path / "run"], monkeypatch, capsys), "resnt18")
    assert "did you mean" in line and "'resnet18'" in line


def test_config_with_unknown_key_suggests_the_near_one(tmp_path, monkeypatch, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("model: tiny_cnn\nepoch: 3\n")
    line = assert_user_error(run_cli(["classify", "train", "--config", config], monkeypatch, capsys), config, "'epoch'")
    assert "did you mean 'epochs'" in line


def test_config_with_invalid_yaml_names_the_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model: tiny_cnn\nepochs: 3\n  lr: 0.1\n")  # line 3 is indented under a scalar
    line = assert_user_error(run_cli(["classify", "train", "--config", config], monkeypatch, capsys), config)
    assert "invalid YAML" in line and "line 3" in line


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    config = tmp_path / "absent.yaml"
    assert_user_error(run_cli(["classify", "train", "--config", config], monkeypatch, capsys), config)


def test_resume_without_checkpoint(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    line = assert_user_error(run_cli(["classify", "train", "--resume", "--out", run_dir], monkeypatch, capsys), run_dir)
    assert "no checkpoint.pt" in line


def test_bare_resume_with_no_runs(tmp_path, monkeypatch, capsys):
    line = assert_user_error(run_cli(["classify", "train", "--resume"], monkeypatch, capsys), "runs/classify")
    assert "no checkpoint.pt" in line


# ---------------------------------------------------------------------------- --debug
def test_debug_reraises_in_process(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no_such_dataset"
    monkeypatch.setattr(sys, "argv", ["cnnkit", "classify", "train", "--data", str(missing), "--debug"])
    with pytest.raises(CnnkitError) as info:
        cnnkit.cli.main()
    assert str(missing) in str(info.value)
    assert "--debug" not in sys.argv  # stripped before typer sees it


def test_debug_prints_traceback(tmp_path):
    missing = tmp_path / "no_such_dataset"
    env = {**os.environ, "CNNKIT_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-m", "cnnkit", "--debug", "classify", "train", "--data", str(missing)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "CnnkitError" in result.stderr and str(missing) in result.stderr
