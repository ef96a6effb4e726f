"""The cross-cutting commands: distill, robustness, export, quantize, bench, models, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.cli.options import Batch, Device, Split, Workers, _comma_list, _severity_list, app, config_command, weights_option
from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.tasks.distill.config import DistillConfig
from cnnkit.errors import CnnkitError

ClassifyWeights = weights_option("classify")  # robustness reads a classifier


@config_command(app, "distill", DistillConfig,
                "Knowledge distillation: train a --student classifier from a frozen --teacher's soft targets (KL at "
                "--temperature, weighted --alpha, plus the labels) and optionally one teacher layer's features. Every "
                "training option applies; the result is an ordinary classifier's weights under runs/distill/. Segmenters: "
                "`cnnkit segment distill`.")
def distill_command(cfg: DistillConfig, explicit: set[str]) -> None:
    from cnnkit.tasks.distill.api import run_distillation

    run_distillation(cfg, explicit)


@app.command("robustness")
def robustness(
    weights: ClassifyWeights = ...,
    data: str = typer.Option("digits", "--data", help="dataset root or built-in name"),
    split: Split = "val",
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="output folder (default: robustness/ beside the weights' run)"),
    families: Optional[str] = typer.Option(None, "--families", metavar="A,B", help="only these corruption families: occlusion, illumination, noise, blur (default: all)"),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", metavar="A,B", help="only these corruptions, e.g. occlusion_solid,dark,gaussian_blur (default: all)"),
    severities: str = typer.Option("1,2,3,4,5", "--severities", metavar="1,3,5", help="severities to evaluate, each 1 to 5"),
    seed: int = typer.Option(0, "--seed", help="seed of the corruptions' randomness (occluder places, noise): same seed, same images"),
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
    occlusion_map: Optional[Path] = typer.Option(None, "--occlusion-map", metavar="IMAGE", help="instead of the corruption benchmark: "
                                                 "map where hiding part of IMAGE (a sliding square of its mean colour) costs the class its probability"),
    target: Optional[str] = typer.Option(None, "--target", metavar="CLASS", help="--occlusion-map: class to map, by name or index (default: the predicted class)"),
    patch: float = typer.Option(0.2, "--patch", help="--occlusion-map: side of the square, as a fraction of the image side"),
    stride: Optional[float] = typer.Option(None, "--stride", help="--occlusion-map: step of the square, as a fraction of the image side (default: a quarter of --patch)"),
) -> None:
    """Accuracy under occlusion, illumination changes, noise and blur at severities 1-5: robustness.json,
    severity curves, example images and report.html. With --occlusion-map IMAGE: an occlusion-sensitivity map of one image."""
    from rich.console import Console
    from rich.table import Table

    from cnnkit.tasks.classify.api import Classifier
    from cnnkit.console import console

    severity_list = _severity_list(severities)
    family_list, corruption_list = _comma_list("--families", families), _comma_list("--corruptions", corruptions)
    clf = Classifier.load(weights)
    if occlusion_map is not None:
        r = clf.occlusion_map(occlusion_map, out, target, patch, stride, batch, device)
        console.print(f"{r['file']}: predicted {r['label']} ({r['score']:.3f}); map of {r['target']} ({r['target_score']:.3f}) "
                      f"in {r['png']} and {r['npz']}", soft_wrap=True, markup=False)
        return
    result = clf.robustness(data, split, out, family_list, corruption_list, severity_list, seed, batch, device, workers)
    metric = result["metric"]
    drops = ", ".join(f"{family} {'-' if drop is None else f'{drop:.3f}'}" for family, drop in result["relative_drop"].items())
    table = Table(title=f"{metric} by severity (clean {result['clean'][metric]:.3f})", caption=f"relative drop: {drops}")
    for column in ("family", "corruption"):
        table.add_column(column, no_wrap=True)
    for severity in result["severities"]:
        table.add_column(f"s{severity}", justify="right", no_wrap=True)
    for family, names in result["corruptions"].items():
        for row, (name, values) in enumerate(names.items()):
            table.add_row(family if row == 0 else "", name, *(f"{v:.3f}" for v in values))
    Console().print(table)  # stdout: results; messages go to stderr


@app.command("export")
def export_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, embed, detect or segment "
                                 "(semantic) run"),
    format: str = typer.Option("onnx", "--format", help="onnx (ONNX Runtime, any ONNX runtime), torchscript (.ts), pt2 (torch.export) or openvino "
                                "(an OpenVINO IR, NAME.xml + NAME.bin; pip install \"cnnkit[openvino]\") or executorch (NAME.pte, "
                                "XNNPACK, batch 1; pip install \"cnnkit[executorch]\") or coreml (NAME.mlpackage, fp32, batch 1; "
                                "converted anywhere, run on Apple devices; pip install \"cnnkit[coreml]\")"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="output file (default: beside the weights, "
                                       "NAME.onnx / NAME.ts / NAME.pt2 / NAME.xml / NAME.pte / NAME.mlpackage)"),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch/--fixed-batch", help="accept any batch size (default: batch 1)"),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (18 or newer)"),
    data: Optional[str] = typer.Option(None, "--data", help="images for the parity check: this dataset's val split "
                                       "(default: photos shipped with scikit-learn and scikit-image)"),
    images: Optional[list[Path]] = typer.Option(None, "--images", help="image files for the parity check (repeatable)"),
    rtol: float = typer.Option(1e-3, "--rtol", help="parity tolerance: largest output difference allowed, relative to the largest output"),
    iou: float = typer.Option(0.5, "--iou", help="detectors: IoU threshold of the NMS inside the exported graph"),
    max_det: int = typer.Option(100, "--max-det", min=1, help="detectors: detection slots per image in the exported graph's outputs"),
) -> None:
    """Export a trained model to ONNX, TorchScript, a torch.export program, an OpenVINO IR, an ExecuTorch program or a Core ML package, then run it beside eager PyTorch
    on real images: prints the largest output difference (and top-1 agreement for classifiers, matched
    detections for detectors); a mismatch beyond --rtol fails. Detectors export with their decoding and
    NMS inside the graph. The file carries the model's metadata, so `val`, `predict` and `bench` load it directly."""
    from cnnkit.compress.export import FORMATS
    from cnnkit.tasks import export_weights

    if format not in FORMATS:
        raise CnnkitError(f"--format {format!r} is not one of {', '.join(FORMATS)}")
    path, _ = export_weights(weights, format, out, dynamic_batch, opset, data, [str(p) for p in images or []], rtol,
                             iou=iou, max_det=max_det)
    typer.echo(str(path))


@app.command("quantize")
def quantize_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, segment (semantic) or YOLO-style detect run (Faster R-CNN, SSD: --backend onnx)"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset root or built-in name: calibration images (its train split) "
                                       "and the fp32-vs-int8 comparison (its val split)"),
    method: str = typer.Option("ptq", "--method", help="ptq: static post-training int8; qat: quantization-aware fine-tuning "
                               "for --epochs, then int8 (classifiers); dynamic: int8 Linear layers, no calibration"),
    backend: str = typer.Option("torch", "--backend", help="torch: PyTorch int8 (FX, x86 kernels) -> NAME.int8.pt; "
                                "onnx: ONNX Runtime static QDQ int8 of the exported model -> NAME.int8.onnx; "
                                "openvino: NNCF post-training int8 of the OpenVINO IR -> NAME.int8.xml (+ .bin); "
                                "executorch: PT2E int8 (XNNPACKQuantizer) lowered to XNNPACK -> NAME.int8.pte"),
    calib_images: int = typer.Option(256, "--calib-images", help="calibration images (ptq, qat)"),
    epochs: int = typer.Option(1, "--epochs", help="--method qat: fine-tuning epochs"),
    lr: float = typer.Option(1e-4, "--lr", help="--method qat: learning rate"),
    batch: int = typer.Option(32, "--batch", min=1, help="--method qat: batch size"),
    workers: Workers = 2,
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", help="output file (default: beside the weights)"),
) -> None:
    """Quantize a trained model to int8 for x86 CPUs and report the task metric of fp32 and int8 side by side.
    The file loads directly in `val`, `predict` and `bench`."""
    from cnnkit.console import console
    from cnnkit.tasks import quantize_weights

    path, report = quantize_weights(weights, data, method, backend, calib_images, epochs, out, lr, batch, workers)
    size = f"{report['size_mb_fp32']:.1f} MB -> {report['size_mb_int8']:.1f} MB ({report['size_mb_fp32'] / report['size_mb_int8']:.1f}x smaller)"
    if "metric" in report:
        console.print(f"{report['metric']} on {data} ({report['split']}): fp32 {report['fp32']:.4f}, int8 {report['int8']:.4f} "
                      f"({report['change_points']:+.2f} points); {size}")
    else:
        console.print(size)
    typer.echo(str(path))


@app.command("bench")
def bench_command(
    weights: Path = typer.Option(..., "--weights", help="weights/best.safetensors of a classify, segment (semantic) or detect run"),
    data: Optional[str] = typer.Option(None, "--data", help="dataset root or built-in name: the task metric on its val split "
                                       "and the int8 calibration (its train split)"),
    formats: str = typer.Option("eager,bf16,int8,onnx,onnx-int8", "--formats", metavar="A,B",
                                help="variants to measure: eager, bf16, int8, onnx, onnx-int8, pt2, torchscript, openvino, "
                                "openvino-int8, executorch, executorch-int8"),
    batch: str = typer.Option("1,32", "--batch", metavar="1,32", help="batch sizes"),
    runs: int = typer.Option(30, "--runs", help="timed calls per variant and batch size (median and p90 of these)"),
    warmup: int = typer.Option(5, "--warmup", help="untimed calls first"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads for PyTorch, ONNX Runtime and OpenVINO (default: PyTorch's; ExecuTorch "
                                           "uses its own thread pool)"),
    calib_images: int = typer.Option(256, "--calib-images", help="calibration images for the int8 variants"),
    out: Path = typer.Option(Path("runs/bench"), "--out", metavar="DIR", help="where the variants' files, bench.json and bench.md go"),
    no_metric: bool = typer.Option(False, "--no-metric", help="latency only: skip the task metric"),
) -> None:
    """Size, latency (p50/p90), throughput and the task metric of each deployment variant of a model, as a
    table; bench.json and bench.md in --out."""
    from cnnkit.compress.bench import FORMATS, parse_list
    from cnnkit.tasks import bench

    format_list = parse_list(formats, "formats", FORMATS)
    try:
        batches = [int(b) for b in parse_list(batch, "batch")]
    except ValueError:
        raise CnnkitError(f"--batch {batch!r}: give whole numbers separated by commas, e.g. 1,32") from None
    needs_data = {"int8", "onnx-int8", "openvino-int8", "executorch-int8"} & set(format_list)
    if needs_data and not data:
        raise CnnkitError(f"--formats {','.join(sorted(needs_data))} need calibration images: pass --data ROOT")
    bench(weights, data, format_list, batches, out, runs, warmup, threads, calib_images, metric=not no_metric)


@app.command("models")
def list_models(
    pattern: str = typer.Argument("", help="only names containing this text"),
    task: Optional[str] = typer.Option(None, "--task", help="only models for this task: classify (also embed and distill "
                                       "backbones), detect, segment or instance (segment train --model maskrcnn)"),
) -> None:
    """List model names, one a line with the task that builds it and where it comes from: cnnkit's own
    (classify, detect, segment, instance), then timm's and torchvision's (as tv:NAME) classifiers."""
    import cnnkit.models  # noqa: F401  (every family registers when imported)
    from cnnkit import registry

    if task is not None and task not in registry.TASKS:
        raise CnnkitError(f"--task {task!r} is not a task", f"choose one of {', '.join(registry.TASKS)}")
    rows = registry.listing(pattern, task)
    width = max((len(r[0]) for r in rows), default=0)
    for name, task_, source, about in rows:
        typer.echo(f"{name:<{width}}  {task_:<8}  {source:<11}  {about}".rstrip())


@app.command("demo")
def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/classify/demo, then demo2, …)"),
    epochs: int = typer.Option(15, "--epochs", help="training epochs"),
    device: Device = "auto",
) -> None:
    """Train tiny_cnn on the built-in digits (1,797 real handwritten digits) and write the report."""
    from cnnkit.tasks.classify.api import train
    from cnnkit.engine.rundir import next_run_dir

    run_dir = out or next_run_dir("classify", None, prefix="demo")
    cfg = TrainConfig(data="digits", model="tiny_cnn", epochs=epochs, imgsz=32, batch=64, lr=0.003,
                      fliplr=0.0, workers=0, device=device, out=str(run_dir)).validate()
    train(cfg)
