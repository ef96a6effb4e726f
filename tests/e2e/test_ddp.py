"""The same command under torchrun with 2 CPU processes (gloo) matches the single-process run."""

from __future__ import annotations

import json
import os
import re
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
def test_two_processes_stream_shards(digits_root, tmp_path):
    """Digits as WebDataset shards under two gloo processes with a loader worker each: every rank streams its own
    shards (as many batches on each, or DDP would hang), the weights stay identical, and the model learns."""
    from conftest import run_cli

    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "shards", "--shard-size", "250kB"])
    assert code == 0, err
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())]
    args = [a if a != "digits" else str(tmp_path / "shards") for a in ARGS]
    args[args.index("--epochs") + 1], args[args.index("--workers") + 1] = "3", "1"
    ddp = run_cnnkit(*args, "--out", str(tmp_path / "ddp"), launcher=launcher)
    assert ddp.returncode == 0, ddp.stderr
    log = " ".join(ddp.stderr.split() + ddp.stdout.split())
    assert "DDP check: weights identical on 2 ranks; each rank streamed" in log, log[-2000:]
    assert json.loads((tmp_path / "ddp/metrics.json").read_text())["top1"] >= 0.8


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


def _torchrun(*extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *extra]


@pytest.mark.slow
def test_two_nodes_train_one_model(digits_root, tmp_path):
    """Two torchrun "nodes" (--nnodes 2 --nproc-per-node 1) meeting through c10d rendezvous on 127.0.0.1, as on a
    cluster: the ranks hold identical weights after an epoch, their shards cover the training set, and the result
    is within noise of one process."""
    import subprocess

    args = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "3", "--imgsz", "16", "--batch", "64",
            "--lr", "0.003", "--workers", "0", "--fliplr", "0", "--device", "cpu"]
    single = run_cnnkit(*args, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    port = free_port()
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                        f"127.0.0.1:{port}", "--rdzv-id", "cnnkit-two-nodes", "--rdzv-conf",
                                        f"is_host={'true' if k == 0 else 'false'}", "-m", "cnnkit", *args, "--out",
                                        str(tmp_path / "nodes")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in outputs]
    log = " ".join(" ".join(err.split()) for _, err in outputs)
    assert "x2" in log and "DDP check: weights identical on 2 ranks" in log, log[-3000:]
    match = re.search(r"(\d+) of (\d+) training images seen once this epoch, (\d+) twice", log)
    once, total, twice = map(int, match.groups())
    assert twice <= 1 and once + twice >= total - 64  # at most the last partial batch of each rank unseen
    one = json.loads((tmp_path / "single/metrics.json").read_text())
    two = json.loads((tmp_path / "nodes/metrics.json").read_text())
    assert abs(one["top1"] - two["top1"]) <= 0.03, (one["top1"], two["top1"])


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_ends_on_the_same_weights(digits_root, tmp_path):
    """Elastic: one of two ranks is SIGKILLed inside an epoch; `torchrun --max-restarts 2` starts the group again,
    the run continues by itself from its latest checkpoint (--save-every-steps), and the final weights are those of
    an uninterrupted run."""
    import signal
    import subprocess
    import time

    import torch
    from safetensors.torch import load_file

    args = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "2", "--imgsz", "16", "--batch", "32",
            "--lr", "0.003", "--workers", "1", "--fliplr", "0.5", "--device", "cpu", "--save-every-steps", "4"]
    full = run_cnnkit(*args, "--out", str(tmp_path / "full"), launcher=_torchrun("--nproc-per-node", "2", "--master-addr",
                                                                                  "127.0.0.1", "--master-port", str(free_port())))
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    agent = subprocess.Popen(_torchrun("--nproc-per-node", "2", "--max-restarts", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                       f"127.0.0.1:{free_port()}", "-m", "cnnkit", *args, "--out", str(cut)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, state = time.time() + 300, None
    while time.time() < deadline and agent.poll() is None:
        try:
            state = torch.load(cut / "checkpoint.pt", weights_only=True)
            if state["step"] > 0:
                break
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    assert state is not None and state["step"] > 0 and agent.poll() is None
    workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    _, err = agent.communicate(timeout=600)
    assert agent.returncode == 0, err[-3000:]
    assert "resuming" in err, err[-3000:]
    a, b = load_file(str(tmp_path / "full/weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_simclr_pretraining_under_torchrun(tmp_path):
    """`ssl train` under two gloo processes: SimCLR's negatives come from both ranks (the gather is tested on its own in
    tests/tasks/test_ssl.py), the ranks stay in step, and the run writes its history, kNN monitor and backbone."""
    import csv

    from cnnkit.data.synth_classify import synth_classification

    synth_classification("shapes", tmp_path / "objects", n=10, eval_n=10, unlabelled=192, progress=False)
    launcher = _torchrun("--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    done = run_cnnkit("ssl", "train", "--data", str(tmp_path / "objects" / "unlabelled"), "--method", "simclr", "--model", "tiny_cnn",
                      "--epochs", "2", "--imgsz", "32", "--batch", "32", "--workers", "0", "--device", "cpu",
                      "--eval-data", str(tmp_path / "objects"), "--out", str(tmp_path / "run"), launcher=launcher)
    assert done.returncode == 0, done.stderr
    log = " ".join(done.stderr.split())
    assert "x2" in log and "DDP check: weights identical on 2 ranks" in log, log[-2000:]
    history = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert len(history) == 2 and all(0 <= float(row["knn_top1"]) <= 1 for row in history)
    assert (tmp_path / "run" / "weights" / "best.safetensors").is_file()
