"""A run killed mid-way and resumed with --resume ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cnnkit

ARGS = ["classify", "train", "--data", "digits", "--model", "tiny_cnn", "--epochs", "4", "--imgsz", "16", "--batch", "32",
        "--workers", "1", "--fliplr", "0.5", "--ema", "--seed", "3"]


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(digits_root, tmp_path):
    full = tmp_path / "full"
    done = run_cnnkit(*ARGS, "--out", str(full))
    assert done.returncode == 0, done.stderr

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *ARGS, "--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while not (cut / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the hardest kind of interruption
    proc.wait()
    saved_epoch = torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 4, f"the run was not interrupted mid-way (checkpoint at epoch {saved_epoch})"

    resumed = run_cnnkit("classify", "train", "--resume", "--out", str(cut))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr

    a, b = load_file(str(full / "weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert (full / "history.csv").read_text().count("\n") == (cut / "history.csv").read_text().count("\n") == 5
