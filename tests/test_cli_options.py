"""The options hand-written commands share are declared once, in cli/options.py (issue 20, "one home per task"):
every --device of every command reads the same and defaults to auto, none is declared by hand elsewhere, and
every command's --help still loads no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cnnkit_here

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnkit"


def _commands():
    """(path, click command) of every command and group of the CLI, the root first."""
    import typer.main

    from cnnkit.cli import app

    def walk(command, path):
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def _options(flag: str) -> dict[str, object]:
    """'classify val' -> its option named ``flag``, for every command that has one."""
    return {" ".join(path): p for path, command in _commands() for p in command.params if flag in p.opts}


def test_every_device_option_reads_the_same_and_defaults_to_auto():
    """Hand-written commands said "auto, cpu, cuda, cuda:N or mps", training commands their config field's text."""
    from dataclasses import fields

    from cnnkit.cli.options import DEVICE_HELP
    from cnnkit.config import TrainOptions

    assert DEVICE_HELP == next(f for f in fields(TrainOptions) if f.name == "device").metadata["help"]
    devices = _options("--device")
    for command in ("classify predict", "classify train", "embed index", "robustness", "demo", "segment val", "distill"):
        assert command in devices
    assert len(devices) >= 21
    assert {name: (p.help, p.default) for name, p in devices.items()} == {name: (DEVICE_HELP, "auto") for name in devices}


def test_shared_options_are_declared_once():
    """No command declares --device, --workers or --split by hand: only options.py's aliases do."""
    found = {flag: [] for flag in ('"--device"', '"--workers"', '"--split"')}
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert 'typer.Option("auto", "--device"' not in text, path
        for flag in found:
            found[flag] += [f"{path.relative_to(SRC)}:{text[:m.start()].count(chr(10)) + 1}" for m in re.finditer(flag, text)]
    assert {flag: sorted({where.split(":")[0] for where in places}) for flag, places in found.items()} == {
        flag: ["cli/options.py"] for flag in found}, found


def test_hand_written_commands_share_workers_split_and_val_out():
    from cnnkit.cli.options import Split, ValOut, Workers

    training = {" ".join(path) for path, command in _commands() if any("--config" in p.opts for p in command.params)}
    workers = {name: p for name, p in _options("--workers").items() if name not in training}
    assert {"classify val", "classify features", "detect val", "segment val", "embed val", "embed index", "ocr val",
            "ssl val", "robustness", "quantize"} <= set(workers)
    want = Workers.__metadata__[0].help
    assert {name: (p.help, p.default, p.min) for name, p in workers.items()} == {name: (want, 2, 0) for name in workers}
    # tracking's --split names a folder of MOTChallenge sequences (train, test, all), a shared option of its own
    sequence_splits = {name for name in _options("--split") if name.startswith("track ")}
    splits = {name: (p.help, p.default) for name, p in _options("--split").items() if name not in training | sequence_splits}
    assert set(splits) == {"classify val", "detect val", "segment val", "ocr val", "ssl val", "robustness"}
    assert set(splits.values()) == {(Split.__metadata__[0].help, "val")}
    # track val writes beside no weights file (it runs a detector's and compares trackers): runs/track/val
    outs = {name: p.help for name, p in _options("--out").items() if name.endswith(" val") and name != "track val"}
    assert set(outs) == {"classify val", "detect val", "segment val", "embed val", "ocr val", "ssl val", "track sot val"}
    assert set(outs.values()) == {ValOut.__metadata__[0].help}


def test_shared_options_reach_the_command(tmp_path, monkeypatch):
    """An alias keeps the flag, its value and its default: classify val gets what was typed, or the defaults."""
    from cnnkit.tasks.classify.api import Classifier

    calls = []

    class Fake:
        def val(self, data, **kwargs):
            calls.append((data, kwargs))

    monkeypatch.setattr(Classifier, "load", classmethod(lambda cls, weights: Fake()))
    weights = tmp_path / "w.safetensors"
    done = run_cnnkit_here("classify", "val", "--weights", str(weights), "--device", "cpu", "--workers", "0", "--batch", "3",
                           "--split", "test", "--out", str(tmp_path / "v"), "--tta", "none")
    assert done.returncode == 0, done.stderr
    done = run_cnnkit_here("classify", "val", "--weights", str(weights))
    assert done.returncode == 0, done.stderr
    assert calls == [("digits", dict(split="test", out=tmp_path / "v", batch=3, device="cpu", workers=0, tta="none")),
                     ("digits", dict(split="val", out=None, batch=64, device="auto", workers=2, tta="auto"))]


@pytest.mark.parametrize("args, message", [
    (["classify", "val", "--weights", "w.safetensors", "--workers", "-1"], "--workers"),  # refused before any file is read
    (["detect", "val", "--weights", "w.safetensors", "--batch", "0"], "--batch"),
    (["detect", "predict", "x.png"], "Missing option '--weights'"),  # required after an optional positional
    (["segment", "predict", "x.png"], "Missing option '--weights'"),
])
def test_shared_options_refuse_bad_values_as_usage_errors(args, message):
    done = run_cnnkit_here(*args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_no_help_of_any_command_imports_torch():
    """Every command's --help through the real entry point, in one fresh interpreter: none loads torch."""
    code = ("import contextlib, io, sys\n"
            "import typer.main\n"
            "from cnnkit import cli\n"
            "def walk(command, path):\n"
            "    yield path\n"
            "    for name, sub in sorted(getattr(command, 'commands', {}).items()):\n"
            "        yield from walk(sub, [*path, name])\n"
            "paths = list(walk(typer.main.get_command(cli.app), []))\n"
            "for path in paths:\n"
            "    sys.argv = ['cnnkit', *path, '--help']\n"
            "    out = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(out):\n"
            "            cli.main()\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code in (0, None), (path, exc.code)\n"
            "    assert 'Usage: cnnkit' in out.getvalue(), path\n"
            "print(len(paths), sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    count, loaded = done.stderr.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 30 and loaded == "[]", done.stderr[-3000:]
