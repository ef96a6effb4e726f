"""The same command under torchrun with 2 CPU processes (gloo) matches the single-process run."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from conftest import run_cnnkit

ARGS = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "5", "--imgsz", "16", "--batch", "64",
        "--lr", "0.003", "--workers", "0", "--fliplr", "0", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(digits_root, tmp_path):
    single = run_cnnkit(*ARGS, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())]
    ddp = run_cnnkit(*ARGS, "--out", str(tmp_path / "ddp"), launcher=launcher)
    assert ddp.returncode == 0, ddp.stderr
    assert "x2" in ddp.stderr  # the run announced two processes

    one = json.loads((tmp_path / "single/metrics.json").read_text())
    two = json.loads((tmp_path / "ddp/metrics.json").read_text())
    assert one["top1"] >= 0.9 and two["top1"] >= 0.9
    assert abs(one["top1"] - two["top1"]) <= 0.03, (one["top1"], two["top1"])
    assert abs(one["val_loss"] - two["val_loss"]) <= 0.1
    # every validation image counted exactly once across the two ranks
    assert sum(c["support"] for c in two["per_class"].values()) == sum(c["support"] for c in one["per_class"].values())


@pytest.mark.slow
def test_distillation_with_a_hint_under_torchrun(digits_classifier, tmp_path):
    # the frozen teacher runs on every rank; the hint regressor is a student submodule, so DDP averages its gradients
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())]
    ddp = run_cnnkit("distill", "--teacher", str(digits_classifier), "--student", "tiny_cnn", "--data", "digits", "--epochs", "3",
                     "--imgsz", "16", "--batch", "64", "--lr", "0.003", "--workers", "0", "--fliplr", "0", "--device", "cpu",
                     "--hint-layer", "features.3", "--student-layer", "features.3", "--out", str(tmp_path / "ddp"), launcher=launcher)
    assert ddp.returncode == 0, ddp.stderr
    assert "x2" in ddp.stderr
    metrics = json.loads((tmp_path / "ddp/metrics.json").read_text())
    assert metrics["top1"] >= 0.6, metrics["top1"]  # ten classes, three short epochs
    header = (tmp_path / "ddp/history.csv").read_text().splitlines()[0]
    assert "train_kd" in header and "train_hint" in header
