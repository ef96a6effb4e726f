"""Shared fixtures: one materialised copy of the built-in digits for the whole session, and a
helper that runs the real `cnnkit` command in a subprocess."""

from __future__ import annotations

import os
import re
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


@pytest.fixture(scope="session")
def digits_classifier(digits_root, tmp_path_factory) -> Path:
    """weights/best.safetensors of a tiny_cnn trained on digits at 16 px for 3 epochs (about 0.9 top-1):
    a real model for tests that start from weights (distillation's teacher, export, int8, bench)."""
    from cnnkit import Classifier

    out = tmp_path_factory.mktemp("digits_classifier") / "run"
    Classifier("tiny_cnn", imgsz=16).train("digits", epochs=3, imgsz=16, batch=64, lr=0.003, fliplr=0.0, workers=0, out=str(out))
    return out / "weights" / "best.safetensors"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors gain nothing from more threads, and spinning OpenMP threads slow to a crawl when
    other processes share the cores. (Subprocess runs of cnnkit keep their own setting.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(args, monkeypatch=None, capsys=None) -> tuple[int, str, str]:
    """Run `cnnkit ARGS` in this process: (exit code, stdout, stderr)."""
    done = run_cnnkit_here(*map(str, args))
    return done.returncode, done.stdout, done.stderr


def run_cnnkit(*args: str, cwd: Path | None = None, launcher: list[str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m cnnkit ARGS` (or LAUNCHER -m cnnkit ARGS, e.g. torchrun) and capture its output."""
    command = [*(launcher or [sys.executable]), "-m", "cnnkit", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def run_cnnkit_here(*args: str) -> subprocess.CompletedProcess:
    """`cnnkit ARGS` through the real CLI entry point, in this process: the same parsing, error mapping
    and exit codes as run_cnnkit without a new interpreter importing torch (seconds per call), for
    checks of bad input that fail before any training and for short commands (a conversion, a few
    predictions): with the session's one torch thread, a long evaluation gains nothing in-process."""
    import contextlib
    import io

    from cnnkit import cli

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["cnnkit", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["cnnkit", *args], code, out.getvalue(), err.getvalue())


def assert_resumed_from(log: str, saved_epoch: int, epochs: int) -> None:
    """The resumed run says it goes on from the epoch after the saved one and trains only the epochs left:
    seeded runs are deterministic, so a --resume that silently started again from epoch 1 would end with
    the same weights; only the epochs it ran tell the two apart."""
    flat = " ".join(log.split())  # rich wraps long lines (the run directory) on a narrow terminal
    assert re.search(rf"resuming .+? from epoch {saved_epoch + 1}/{epochs}\b", flat), log
    # the row each finished epoch prints: "epoch N/E  train_loss …" (not the wrapped tail of the line above)
    ran = [int(n) for n in re.findall(rf"^epoch (\d+)/{epochs}  \S", log, flags=re.MULTILINE)]
    assert ran == list(range(saved_epoch + 1, epochs + 1)), (ran, log)


def write_dicom(path: Path, pixels, bits_stored: int = 16, modality: str = "OT") -> Path:
    """A real DICOM file (explicit VR little endian, secondary capture, MONOCHROME2) holding ``pixels`` [H, W]
    as unsigned 16-bit samples of which ``bits_stored`` are used."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelData = np.asarray(pixels).astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
