"""What the command line leaves around and prints besides results: file modes of atomic outputs, the
libraries' warnings (one cnnkit line naming the file, harmless ones dropped), help texts."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cnnkit_here


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    os.umask(previous)
    if previous != 0o022:
        pytest.skip(f"the expected modes are written for umask 022 (this process has {previous:03o})")


# ---------------------------------------------------------------------------- file modes
def test_weights_and_every_atomic_output_follow_the_umask(tmp_path, umask_022):
    """safetensors' save_file puts a 0600 file of its own in place of the temporary one: last.safetensors was
    private while every other output was 0644."""
    from cnnkit.engine.checkpoint import save_checkpoint, save_state_dict
    from cnnkit.engine.rundir import copy_file, temp_dir, write_json

    weights = tmp_path / "run/weights/last.safetensors"
    for _ in range(2):  # a new file, then one replaced as every epoch replaces it
        save_state_dict({"w": torch.zeros(3)}, weights, {"task": "classify"})
        assert _mode(weights) == 0o644
    copy_file(weights, weights.with_name("best.safetensors"))
    save_checkpoint(tmp_path / "run/checkpoint.pt", {"epoch": 1})
    write_json(tmp_path / "run/metrics.json", {"top1": 1.0})
    for name in ("weights/best.safetensors", "checkpoint.pt", "metrics.json"):
        assert _mode(tmp_path / "run" / name) == 0o644, name
    # folders built aside and renamed into place (datasets, indexes, converted data): mkdtemp makes them 0700
    assert _mode(temp_dir(tmp_path, "index")) == 0o755


def test_a_built_in_dataset_folder_is_readable_by_others(tmp_path, monkeypatch, umask_022):
    from cnnkit.data.builtin import resolve_data

    monkeypatch.setenv("CNNKIT_HOME", str(tmp_path / "home"))
    root = resolve_data("digits")
    assert _mode(root) == 0o755 and _mode(root / "train") == 0o755


# ---------------------------------------------------------------------------- library warnings
def test_pydicom_warnings_become_one_cnnkit_line_naming_the_file(tmp_path):
    """badVR.dcm holds an IS value '1A' (pydicom: "Invalid value for VR IS" with a link, printed with its source
    line); MR_small_padded.dcm has pixel data with excess padding, which pydicom removes: nothing to say."""
    from pydicom.data import get_testdata_file

    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.segmenters import build_segmenter

    bad, padded = get_testdata_file("badVR.dcm"), get_testdata_file("MR_small_padded.dcm")
    weights = save_weights(build_segmenter("unet", "resnet18", 2), tmp_path / "w.safetensors",
                           {"task": "segment", "model": "unet", "encoder": "resnet18", "imgsz": 32, "class_names": ["bg", "fg"]})
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a user's interpreter has it (pytest may turn warnings into errors)
        done = run_cnnkit_here("segment", "predict", padded, "--weights", str(weights), "--device", "cpu", "--out",
                               str(tmp_path / "p"))
        assert done.returncode == 0, done.stderr
        assert "cnnkit: warning" not in done.stderr and "padding" not in done.stderr, done.stderr
        done = run_cnnkit_here("segment", "predict", bad, "--weights", str(weights), "--device", "cpu", "--out", str(tmp_path / "p"))
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"cnnkit: warning: {bad}: Invalid value for VR IS: '1A' (pydicom)", done.stderr
    assert done.returncode == 2 and len(lines) == 2 and lines[1].startswith(f"cnnkit: {bad}: cannot decode"), done.stderr


def test_library_warning_lines():
    from cnnkit.libwarnings import one_line, reading

    loader = ("This DataLoader will create 8 worker processes in total. Our suggested max number of worker in current "
              "system is 2, which is smaller than what this DataLoader is going to create. Please be aware that …")
    assert one_line(loader, "/v/site-packages/torch/utils/data/dataloader.py") == (
        "--workers 8 is more than the 2 CPUs this process may use: loading may be slower, or stall; lower --workers")
    with reading("scans/a.nii.gz"):
        assert one_line("pixdim[0] (qfac) should be 1 (default) or -1; setting qfac to 1",
                        "/v/site-packages/nibabel/nifti1.py") == "scans/a.nii.gz: pixdim[0] (qfac) should be 1 (default) or -1; setting qfac to 1 (nibabel)"
    assert one_line("The pixel data is 8320 bytes long, which indicates it contains 128 bytes of excess padding to be "
                    "removed", "/v/site-packages/pydicom/pixels/decoders/base.py") is None


def test_detect_predict_raises_no_torch_warning(tmp_path):
    """Decoded images are read-only arrays: torch.from_numpy warned (non-writable tensors) on the first image."""
    from cnnkit.tasks.detect.api import Detector

    Image.fromarray(np.full((40, 30, 3), 100, np.uint8)).save(tmp_path / "x.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Detector("yolo_n", class_names=["a", "b"], imgsz=64).predict([tmp_path / "x.png"], device="cpu")
    assert not [str(w.message) for w in caught if "writable" in str(w.message)]


# ---------------------------------------------------------------------------- help texts
def test_help_names_the_yolo_detectors():
    root = run_cnnkit_here("--help")
    summary = " ".join(root.stdout.split())
    assert "yolo_n" in summary.split(" detect ")[1].split(" segment ")[0], root.stdout  # click cut it after ~45 characters
    assert "yolo_n" in run_cnnkit_here("detect", "--help").stdout


def test_no_help_text_prints_a_doubled_percent():
    import click
    import typer.main

    from cnnkit.cli import app

    def walk(command: click.Command, ctx: click.Context):
        yield command, command.get_help(ctx)
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))

    root = typer.main.get_command(app)
    helps = list(walk(root, click.Context(root, info_name="cnnkit")))
    assert len(helps) > 30
    assert [c.name for c, text in helps if "%%" in text] == []
    erasing = run_cnnkit_here("classify", "train", "--help").stdout
    assert "5-60% of" in " ".join(erasing.split())
