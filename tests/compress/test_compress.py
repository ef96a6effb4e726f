"""Export, int8 quantization and bench on a small real classifier: exported and int8 models agree with
eager within tolerance, the files load in val/predict, bad input is one line, bench measures what it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError


@pytest.fixture(scope="module")
def trained(digits_classifier):
    return digits_classifier


@pytest.mark.parametrize("fmt,suffix,dynamic", [("onnx", ".onnx", True), ("pt2", ".pt2", False), ("torchscript", ".ts", True)])
def test_export_matches_eager_and_loads_for_predict(trained, digits_root, tmp_path, fmt, suffix, dynamic):
    from cnnkit import Classifier
    from cnnkit.tasks import export_weights
    from cnnkit.compress.runtime import read_metadata

    path, parity = export_weights(trained, fmt, tmp_path / f"model{suffix}", dynamic_batch=dynamic, data="digits")
    assert parity.ok and parity.max_abs_diff < 1e-3 and parity.top1_agreement == 1.0 and parity.images == 16
    meta = read_metadata(path)
    assert meta["task"] == "classify" and meta["imgsz"] == 16 and meta["deployed"]["format"] == fmt
    assert meta["deployed"]["batch"] == (None if dynamic else 1)
    eager, deployed = Classifier.load(trained), Classifier.load(path)
    samples = sorted((digits_root / "val" / "3").iterdir())[:5]
    assert [r["label"] for r in deployed.predict(samples)] == [r["label"] for r in eager.predict(samples)]


def test_export_bad_input_is_one_line(trained, tmp_path):
    from cnnkit.compress.export import write_export
    from cnnkit.tasks import export_weights

    with pytest.raises(CnnkitError, match="--opset 11 is too old"):
        export_weights(trained, "onnx", tmp_path / "m.onnx", opset=11)
    with pytest.raises(CnnkitError, match="must end with .ts"):
        export_weights(trained, "torchscript", tmp_path / "m.onnx")
    with pytest.raises(CnnkitError, match="is not one of onnx, torchscript, pt2"):
        export_weights(trained, "tflite")

    class Gate(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x  # data-dependent control flow: torch.export cannot express it

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.gate = Gate()

        def forward(self, x):
            return self.gate(self.conv(x)).mean((2, 3))

    with pytest.raises(CnnkitError, match=r"cannot be expressed as pt2 at layer 'gate' \(Gate\)"):
        write_export(Net().eval(), {"model": "net", "imgsz": 8}, "pt2", tmp_path / "net.pt2")
    assert not (tmp_path / "net.pt2").exists()


def test_parity_check_catches_a_mismatch():
    from cnnkit.compress.export import check_parity

    eager = nn.Linear(4, 3)
    broken = nn.Linear(4, 3)
    x = torch.randn(8, 4)
    assert check_parity(eager, eager, x, {"task": "classify"}).ok
    result = check_parity(eager, broken, x, {"task": "classify"})
    assert not result.ok and result.max_abs_diff > 1e-3


@pytest.mark.parametrize("method,backend", [("ptq", "torch"), ("ptq", "onnx"), ("qat", "torch"), ("dynamic", "torch")])
def test_int8_agrees_with_fp32(trained, tmp_path, method, backend):
    from cnnkit import Classifier
    from cnnkit.tasks import quantize_weights

    suffix = ".int8.onnx" if backend == "onnx" else ".int8.pt"
    path, report = quantize_weights(trained, "digits", method, backend, calib_images=64, epochs=1, out=tmp_path / f"m{suffix}",
                                    workers=0)
    assert report["metric"] == "top1" and report["fp32"] > 0.5
    assert abs(report["change_points"]) <= 5.0, report  # int8 within 5 points of fp32 on a 3-epoch model
    if method != "dynamic":  # dynamic leaves the convolutions in fp32
        assert report["size_mb_fp32"] / report["size_mb_int8"] > 2.5, report
    from cnnkit.compress.export import parity_images
    from cnnkit.engine.checkpoint import read_metadata

    int8, fp32 = Classifier.load(path), Classifier.load(trained)
    images = parity_images(read_metadata(trained), "digits", limit=32)  # real val digits
    with torch.no_grad():
        agree = (int8.model(images).argmax(1) == fp32.model.eval()(images).argmax(1)).float().mean().item()
    assert agree >= 0.8, agree


def test_quantize_bad_input_is_one_line(trained, tmp_path):
    from cnnkit.tasks import quantize_weights

    with pytest.raises(CnnkitError, match="--method ptq needs calibration images"):
        quantize_weights(trained, None, "ptq")
    with pytest.raises(CnnkitError, match="--backend onnx quantizes after training"):
        quantize_weights(trained, "digits", "qat", "onnx")
    with pytest.raises(CnnkitError, match="must end with .int8.pt"):
        quantize_weights(trained, "digits", "ptq", out=tmp_path / "x.pt")
    (tmp_path / "fake.int8.pt").write_bytes(b"not a file")
    from cnnkit.compress.runtime import load_deployed

    with pytest.raises(CnnkitError, match="fake.int8.pt: not a cnnkit int8 file"):
        load_deployed(tmp_path / "fake.int8.pt")


class ScriptedClock:
    """Stands in for time.perf_counter in cnnkit.compress.bench: each timed call (one read before, one after)
    lasts the next of a known series of durations, so the latencies and throughput bench reports can be
    checked against numbers worked out here, whatever the machine's load."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.now, self.started, self.durations = 100.0, True, []

    def perf_counter(self) -> float:
        self.started = not self.started
        if self.started:  # the read after the call
            self.durations.append(float(self.rng.uniform(0.001, 0.05)))
            self.now += self.durations[-1]
        else:
            self.now += 1.0  # time between calls is not the call's
        return self.now


def test_bench_measures_what_it_says(trained, tmp_path, monkeypatch):
    from cnnkit import Classifier
    from cnnkit.compress import bench as bench_module
    from cnnkit.compress.bench import percentile, time_calls
    from cnnkit.tasks import bench

    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x

    times = time_calls(Counting(), torch.zeros(3, 1), runs=7, warmup=2)
    assert len(times) == 7 and calls == [3] * 9
    values = list(np.random.default_rng(0).random(11))
    assert percentile(values, 0.9) == pytest.approx(np.percentile(values, 90))

    clock = ScriptedClock(0)
    monkeypatch.setattr(bench_module, "time", clock)
    rows = bench(trained, "digits", ["eager", "int8", "onnx"], [1, 4], tmp_path, runs=5, warmup=1, calib_images=32)
    assert [(r.format, r.batch) for r in rows] == [(f, b) for f in ("eager", "int8", "onnx") for b in (1, 4)]
    assert len(clock.durations) == 5 * len(rows)  # --runs timed calls per row, the warm-up ones untimed
    top1 = Classifier.load(trained).val("digits", out=tmp_path / "val", workers=0)["top1"]
    for i, row in enumerate(rows):
        durations = clock.durations[5 * i:5 * (i + 1)]  # this row's calls, in seconds
        assert row.latency_ms_p50 == pytest.approx(1000 * np.median(durations))
        assert row.latency_ms_p90 == pytest.approx(1000 * np.percentile(durations, 90))
        assert row.throughput == pytest.approx(row.batch / np.median(durations))  # images per second at the p50
        assert row.size_mb == pytest.approx(Path(row.file).stat().st_size / 1e6)
        assert row.params == sum(p.numel() for p in Classifier.load(trained).model.parameters())
    assert rows[0].metric == pytest.approx(top1)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert {"format", "batch", "latency_ms_p50", "latency_ms_p90", "throughput", "size_mb", "params", "metric"} <= set(saved[0])
    assert [(r["format"], r["batch"], r["throughput"]) for r in saved] == [(r.format, r.batch, r.throughput) for r in rows]
    assert "| int8 | 4 |" in (tmp_path / "bench.md").read_text()


def test_commands_through_the_cli(trained, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli(["export", "--weights", trained, "--format", "onnx", "--dynamic-batch", "--out", tmp_path / "m.onnx"])
    assert code == 0 and out.strip() == str(tmp_path / "m.onnx") and "top-1 agreement 100.0%" in err
    code, out, err = run_cli(["classify", "val", "--weights", tmp_path / "m.onnx", "--data", "digits", "--workers", "0",
                              "--out", tmp_path / "val"])
    assert code == 0 and json.loads((tmp_path / "val" / "metrics.json").read_text())["top1"] > 0.5
    code, out, err = run_cli(["quantize", "--weights", trained, "--method", "ptq"])
    assert code == 2 and err.count("\n") == 1 and "needs calibration images" in err
    code, out, err = run_cli(["bench", "--weights", trained, "--formats", "eager,int9"])
    assert code == 2 and "'int9' is not one of" in err
    code, out, err = run_cli(["distill", "--student", "tiny_cnn", "--data", "digits"])
    assert code == 2 and "distill needs --teacher" in err
