"""A run killed mid-way and resumed with --resume ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_resumed_from, run_cnnkit

ARGS = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "4", "--imgsz", "16", "--batch", "32",
        "--workers", "1", "--fliplr", "0.5", "--ema", "--seed", "3"]


def _kill_after_first_checkpoint(args: list[str], run_dir) -> int:
    """Start `cnnkit ARGS --out RUN_DIR`, SIGKILL it once its first checkpoint is on disk; the saved epoch."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *args, "--out", str(run_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest kind of interruption
    proc.wait()
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]


def _same_weights(full, cut, epochs: int) -> None:
    a, b = load_file(str(full / "weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert (full / "history.csv").read_text().count("\n") == (cut / "history.csv").read_text().count("\n") == epochs + 1


def _run_killed_and_resumed(args: list[str], resume: list[str], epochs: int, tmp_path: Path) -> tuple[Path, Path, str]:
    """(the uninterrupted run, the run killed after its first checkpoint and resumed, the resume's stderr);
    checks that the resume went on from the saved epoch."""
    full = tmp_path / "full"
    done = run_cnnkit(*args, "--out", str(full))
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    saved_epoch = _kill_after_first_checkpoint(args, cut)
    assert 1 <= saved_epoch < epochs, f"the run was not interrupted mid-way (checkpoint at epoch {saved_epoch})"
    resumed = run_cnnkit(*resume, "--resume", "--out", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    assert_resumed_from(resumed.stderr, saved_epoch, epochs)
    return full, cut, resumed.stderr


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(digits_root, tmp_path):
    full, cut, _ = _run_killed_and_resumed(ARGS, ["classify", "train"], 4, tmp_path)
    _same_weights(full, cut, 4)


@pytest.mark.slow
def test_distillation_with_a_hint_resumes_exactly(digits_classifier, tmp_path):
    # the teacher, the hint regressor (checkpointed, not in the weights) and the student all come back
    args = ["distill", "--teacher", str(digits_classifier), "--student", "tiny_cnn", "--data", "digits", "--epochs", "3",
            "--imgsz", "16", "--batch", "64", "--workers", "0", "--fliplr", "0", "--seed", "1",
            "--hint-layer", "features.3", "--student-layer", "features.3"]
    full, cut, _ = _run_killed_and_resumed(args, ["distill"], 3, tmp_path)
    _same_weights(full, cut, 3)
    assert "cnnkit_hint" in " ".join(torch.load(cut / "checkpoint.pt", weights_only=True)["model"])


@pytest.mark.slow
def test_byol_pretraining_resumes_exactly(digits_root, tmp_path):
    """BYOL's teacher lives outside the weights file: its state and its momentum schedule's step count come back
    from checkpoint.pt, so the student after a resume is the uninterrupted run's."""
    import shutil

    images = tmp_path / "unlabelled"
    for k, path in enumerate(sorted((digits_root / "train").rglob("*.png"))[::12]):
        (images / f"part{k % 3}").mkdir(parents=True, exist_ok=True)  # subfolders: the search is recursive
        shutil.copy(path, images / f"part{k % 3}" / path.name)
    args = ["ssl", "train", "--data", str(images), "--method", "byol", "--model", "tiny_cnn", "--epochs", "3", "--imgsz", "16",
            "--batch", "16", "--workers", "1", "--seed", "3"]
    full, cut, _ = _run_killed_and_resumed(args, ["ssl", "train"], 3, tmp_path)
    _same_weights(full, cut, 3)
    assert not any(key.startswith("teacher.") for key in load_file(str(full / "weights/last.safetensors")))


def _stop_inside_an_epoch(args: list[str], run_dir: Path, sig: int) -> tuple[dict, subprocess.CompletedProcess | None, str]:
    """Start `cnnkit ARGS --out RUN_DIR`, send ``sig`` once a checkpoint written inside an epoch is on disk; (the
    checkpoint the run left, its exit code, its stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *args, "--out", str(run_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if torch.load(run_dir / "checkpoint.pt", weights_only=True).get("step", 0) > 0:
                break
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return torch.load(run_dir / "checkpoint.pt", weights_only=True), proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_stopped_inside_an_epoch_resumes_exactly(digits_root, tmp_path, sig):
    """--save-every-steps: a crash (SIGKILL) loses at most N steps; SIGTERM (a scheduler's preemption) writes a
    checkpoint at the next step and exits in one line. Either way --resume continues inside the epoch (the loader's
    workers replay the batches already trained on, so augmentation stays in step) and ends on the uninterrupted
    run's weights."""
    args = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "3", "--imgsz", "16", "--batch", "16",
            "--workers", "2", "--fliplr", "0.5", "--seed", "5", "--save-every-steps", "7"]
    full = tmp_path / "full"
    done = run_cnnkit(*args, "--out", str(full))
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    state, code, err = _stop_inside_an_epoch(args, cut, sig)
    if sig == signal.SIGTERM:
        assert code == 2 and "stopped by SIGTERM" in err and "--resume" in err, err
    assert state["step"] > 0 and state["epoch"] < 3, (state["epoch"], state["step"])
    resumed = run_cnnkit("classify", "train", "--resume", "--out", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    flat = " ".join(resumed.stderr.split())
    assert f"from epoch {state['epoch'] + 1}/3, step {state['step'] + 1}/{state['steps_in_epoch']}" in flat, resumed.stderr
    a, b = load_file(str(full / "weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [line.split(",")[:-2] for line in (full / "history.csv").read_text().splitlines()]  # less images/s and time
    assert rows == [line.split(",")[:-2] for line in (cut / "history.csv").read_text().splitlines()]


@pytest.mark.slow
def test_a_streamed_run_resumes_exactly_and_on_another_world_size(digits_root, tmp_path):
    """Training from WebDataset shards: SIGTERM inside an epoch, then --resume replays the stream (its order is a
    function of seed, epoch, rank and worker) and ends on the uninterrupted run's weights. The same checkpoint resumed
    by two processes says that the world size changed, with the new global batch, and trains to the end."""
    import shutil

    from conftest import run_cli
    from test_ddp import free_port

    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "shards", "--shard-size", "300kB"])
    assert code == 0, err
    args = ["classify", "train", "--data", str(tmp_path / "shards"), "--model", "tiny_cnn", "--epochs", "2", "--imgsz", "16",
            "--batch", "16", "--workers", "2", "--fliplr", "0.5", "--seed", "5", "--save-every-steps", "7"]
    done = run_cnnkit(*args, "--out", str(tmp_path / "full"))
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    state, code, err = _stop_inside_an_epoch(args, cut, signal.SIGTERM)
    assert code == 2 and "stopped by SIGTERM" in err, err
    assert state["step"] > 0 and state["epoch"] < 2, (state["epoch"], state["step"])
    shutil.copytree(cut, tmp_path / "cut2")
    resumed = run_cnnkit("classify", "train", "--resume", "--out", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(str(tmp_path / "full/weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(free_port())]
    moved = run_cnnkit("classify", "train", "--resume", "--out", str(tmp_path / "cut2"), launcher=launcher)
    assert moved.returncode == 0, moved.stderr
    flat = " ".join(moved.stderr.split() + moved.stdout.split())
    assert "the checkpoint was written by 1 process, this run has 2: global batch 16 (was 16), 8 per process" in flat, flat[-2000:]
    assert (tmp_path / "cut2/weights/last.safetensors").is_file()
