"""`cnnkit bench`: every deployment variant of one model measured the same way, in one table.

For each format (eager fp32, eager under bf16 autocast, PyTorch int8, ONNX Runtime fp32 and int8,
torch.export, TorchScript, OpenVINO fp32 and NNCF int8, ExecuTorch XNNPACK fp32 and int8) and each batch size (a detector is timed as its export graph: letterboxed
batch in, detections after NMS out): the file size, latency p50/p90 over --runs timed
calls after --warmup untimed ones (the same real images every call), throughput (images per second at
the p50), and the task metric on --data's val split through the same `val` as everywhere else.
Variants that need files (int8, onnx, …) are written into --out first, calibrated on --data.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.compress.formats import file_size
from cnnkit.compress.owner import ModelOwner, require_metric
from cnnkit.console import console
from cnnkit.engine.rundir import write_json, write_text
from cnnkit.errors import CnnkitError

FORMATS = ("eager", "bf16", "int8", "onnx", "onnx-int8", "pt2", "torchscript", "openvino", "openvino-int8", "executorch",
           "executorch-int8")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".ts", "openvino": ".xml", "executorch": ".pte"}
QUANTIZED = {"int8": ("torch", ".int8.pt"), "onnx-int8": ("onnx", ".int8.onnx"), "openvino-int8": ("openvino", ".int8.xml"),
             "executorch-int8": ("executorch", ".int8.pte")}


@dataclass
class BenchRow:
    format: str
    batch: int
    latency_ms_p50: float
    latency_ms_p90: float
    throughput: float  # images per second at the p50 latency
    size_mb: float
    params: int
    metric: float | None
    metric_name: str | None
    file: str


class Autocast(nn.Module):
    """A model run under CPU bf16 autocast, returning float outputs."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.inner(x)
        if isinstance(out, torch.Tensor):
            return out.float()
        if isinstance(out, tuple):  # a detection graph's (boxes, scores, labels)
            return tuple(t.float() if t.is_floating_point() else t for t in out)
        return [{k: v.float() if v.is_floating_point() else v for k, v in d.items()} for d in out]  # a detector's dicts


@torch.inference_mode()
def time_calls(model: nn.Module, inputs: torch.Tensor, runs: int, warmup: int) -> list[float]:
    """Seconds per call of ``model(inputs)``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        model(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(inputs)
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_list(text: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CnnkitError(f"--{what} is empty")
    if allowed:
        unknown = [t for t in items if t not in allowed]
        if unknown:
            raise CnnkitError(f"--{what}: '{unknown[0]}' is not one of {', '.join(allowed)}")
    return items


def bench(weights: str | Path, data: str | None, formats: list[str], batches: list[int], out: str | Path,
          runs: int = 30, warmup: int = 5, threads: int | None = None, calib_images: int = 256,
          metric: bool = True, *, owner: ModelOwner) -> list[BenchRow]:
    """Measure ``formats`` of ``weights`` at each batch size; bench.json and bench.md into ``out``. ``owner``: the
    weights' task (cnnkit.tasks.owner_of)."""
    from cnnkit.compress.detect_graph import exports_any_batch
    from cnnkit.compress.export import load_float, parity_images, write_export
    from cnnkit.compress.quantize import quantize_weights
    from cnnkit.compress.runtime import load_deployed

    if runs < 1 or warmup < 0 or any(b < 1 for b in batches):
        raise CnnkitError("--runs and every --batch must be at least 1, --warmup 0 or more")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    weights, out = Path(weights), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    eager, metadata = load_float(weights, owner)
    params = sum(p.numel() for p in eager.parameters())
    stem = weights.name.removesuffix(".safetensors")
    images = parity_images(metadata, data, None, limit=max(batches))
    rows: list[BenchRow] = []
    for fmt in formats:
        if fmt in ("eager", "bf16"):
            model, path = (eager if fmt == "eager" else Autocast(eager)), weights
        elif fmt in QUANTIZED:
            backend, suffix = QUANTIZED[fmt]
            path, _ = quantize_weights(weights, data, "ptq", backend, calib_images, out=out / f"{stem}{suffix}", evaluate=False, owner=owner)
            model = load_deployed(path, threads).model
        else:
            path = write_export(eager, metadata, fmt, out / f"{stem}{SUFFIX[fmt]}",
                                dynamic_batch=exports_any_batch(metadata) and fmt != "executorch")
            model = load_deployed(path, threads).model
        name, value = (_metric(path, fmt, data, owner) if metric and data else (None, None))
        for batch in batches:
            inputs = images.repeat((batch + len(images) - 1) // len(images), 1, 1, 1)[:batch].contiguous()
            times = time_calls(model, inputs, runs, warmup)
            p50 = statistics.median(times)
            rows.append(BenchRow(fmt, batch, p50 * 1000, percentile(times, 0.9) * 1000, batch / p50,
                                 file_size(path) / 1e6, params, value, name, str(path)))
            console.print(f"{fmt:>11}  batch {batch:>3}  p50 {p50 * 1000:8.2f} ms  {batch / p50:8.1f} img/s"
                          + (f"  {name} {value:.4f}" if value is not None else ""))
    write_json(out / "bench.json", [asdict(r) for r in rows])
    write_text(out / "bench.md", markdown(rows, metadata, threads, runs, warmup))
    console.print(markdown(rows, metadata, threads, runs, warmup))
    console.print(f"bench.json and bench.md in {out}")
    return rows


def _metric(path: Path, fmt: str, data: str, owner: ModelOwner) -> tuple[str, float]:
    """The task metric of one variant on ``data``'s val split, through the task's own `val`."""
    name = require_metric(owner)
    loaded = owner.load(path)
    if fmt == "bf16":
        loaded.model = Autocast(loaded.model)
    with tempfile.TemporaryDirectory(prefix="cnnkit_bench_") as tmp:
        # in-process loading: forked workers can deadlock once ONNX Runtime's thread pools exist
        return name, float(loaded.val(data, "val", out=tmp, device="cpu", workers=0, **owner.val_options)[name])


def markdown(rows: list[BenchRow], metadata: dict[str, Any], threads: int, runs: int, warmup: int) -> str:
    metric_name = next((r.metric_name for r in rows if r.metric_name), "metric")
    lines = [f"{metadata.get('model')} ({metadata.get('task')}) at {metadata.get('imgsz')} px, {threads} threads, "
             f"median of {runs} runs after {warmup} warm-up",
             "", f"| format | batch | p50 ms | p90 ms | img/s | size MB | params | {metric_name} |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        value = f"{r.metric:.4f}" if r.metric is not None else "n/a"
        lines.append(f"| {r.format} | {r.batch} | {r.latency_ms_p50:.2f} | {r.latency_ms_p90:.2f} | {r.throughput:.1f} | "
                     f"{r.size_mb:.2f} | {r.params / 1e6:.2f} M | {value} |")
    by_key = {(r.format, r.batch): r for r in rows}
    ratios = []
    for batch in sorted({r.batch for r in rows}):
        base = by_key.get(("eager", batch))
        for fmt in ("int8", "onnx", "onnx-int8", "openvino", "openvino-int8", "executorch", "executorch-int8"):
            other = by_key.get((fmt, batch))
            if base and other:
                ratios.append(f"- batch {batch}: {fmt} is {base.latency_ms_p50 / other.latency_ms_p50:.2f}x eager fp32's speed")
        if by_key.get(("int8", batch)) and by_key.get(("onnx", batch)):
            ratios.append(f"- batch {batch}: int8 is {by_key[('onnx', batch)].latency_ms_p50 / by_key[('int8', batch)].latency_ms_p50:.2f}x "
                          f"ONNX Runtime fp32's speed")
        for fmt in ("onnx-int8", "openvino"):
            if by_key.get((fmt, batch)) and by_key.get(("onnx", batch)):
                ratios.append(f"- batch {batch}: {fmt} is {by_key[('onnx', batch)].latency_ms_p50 / by_key[(fmt, batch)].latency_ms_p50:.2f}x "
                              f"ONNX Runtime fp32's speed")
    sizes = {r.format: r.size_mb for r in rows}
    if "eager" in sizes and "int8" in sizes:
        ratios.append(f"- int8 file is {sizes['eager'] / sizes['int8']:.2f}x smaller than the fp32 weights")
    return "\n".join(lines + ([""] + ratios if ratios else [])) + "\n"

