"""Train -> val -> predict on the built-in digits, for real, through the command line."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from conftest import run_cnnkit, run_cnnkit_here


@pytest.mark.slow
def test_train_val_predict_on_digits(digits_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_cnnkit("classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "6", "--imgsz", "16",
                      "--batch", "64", "--lr", "0.003", "--fliplr", "0", "--workers", "0", "--ema", "--out", str(run_dir))
    assert done.returncode == 0, done.stderr
    for name in ("config.yaml", "weights/best.safetensors", "weights/last.safetensors", "checkpoint.pt",
                 "history.csv", "metrics.json", "report.html", "plots/history.png", "plots/val_confusion_matrix.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("top1", "top5", "macro_f1", "balanced_accuracy", "pr_auc", "per_class"):
        assert key in metrics
    assert metrics["top1"] >= 0.9, metrics["top1"]
    assert metrics["test"]["top1"] >= 0.9
    assert len(metrics["per_class"]) == 10
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 6 and "images_per_s" in history[0]
    with safe_open(str(run_dir / "weights/best.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)] and json.loads(meta["imgsz"]) == 16
    report = (run_dir / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 4 and "top1" in report

    weights = str(run_dir / "weights/best.safetensors")
    val = run_cnnkit("classify", "val", "--weights", weights, "--data", "digits", "--split", "test", "--out", str(tmp_path / "val"))
    assert val.returncode == 0, val.stderr
    val_metrics = json.loads((tmp_path / "val/metrics.json").read_text())
    assert val_metrics["top1"] == pytest.approx(metrics["test"]["top1"], abs=1e-6)

    out = tmp_path / "pred.json"
    pred = run_cnnkit_here("classify", "predict", str(digits_root / "test" / "7"), str(digits_root / "test" / "1" / "*.png"),
                      "--weights", weights, "--topk", "3", "--save-json", str(out))
    assert pred.returncode == 0, pred.stderr
    results = json.loads(out.read_text())
    n_files = len(list((digits_root / "test" / "7").glob("*.png"))) + len(list((digits_root / "test" / "1").glob("*.png")))
    assert len(results) == n_files
    assert set(results[0]) == {"file", "label", "score", "topk"} and len(results[0]["topk"]) == 3
    correct = sum(r["label"] == ("7" if "/7/" in r["file"] else "1") for r in results)
    assert correct / len(results) >= 0.85


@pytest.mark.slow
def test_demo_reaches_97_percent(cnnkit_home, tmp_path):
    """The README's demo target: tiny_cnn on digits, >= 97 % test top-1 (the run takes about a minute)."""
    done = run_cnnkit("demo", "--out", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "demo/metrics.json").read_text())
    assert metrics["test"]["top1"] >= 0.97, metrics["test"]["top1"]
    assert "report" in done.stderr
