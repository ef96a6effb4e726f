"""Shared fixtures: one materialised copy of the built-in digits for the whole session, and a
helper that runs the real `cnnkit` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cnnkit_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("cnnkit_home")
    os.environ["CNNKIT_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def digits_root(cnnkit_home) -> Path:
    from cnnkit.data.builtin import resolve_data

    return resolve_data("digits")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors gain nothing from more threads, and spinning OpenMP threads slow to a crawl when
    other processes share the cores. (Subprocess runs of cnnkit keep their own setting.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run `cnnkit ARGS` in this process: (exit code, stdout, stderr)."""
    import cnnkit.cli

    monkeypatch.setattr(sys, "argv", ["cnnkit", *map(str, args)])
    capsys.readouterr()  # drop anything printed before
    code = 0
    try:
        cnnkit.cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_cnnkit(*args: str, cwd: Path | None = None, launcher: list[str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m cnnkit ARGS` (or LAUNCHER -m cnnkit ARGS, e.g. torchrun) and capture its output."""
    command = [*(launcher or [sys.executable]), "-m", "cnnkit", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
