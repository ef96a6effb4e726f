"""Per-image CPU latency of every detector at one size, batch 1, beside its map.

    python benchmarks/detect_latency.py [--imgsz 320] [--repeats 30] [--threads 2]
        [--weights fasterrcnn=runs/detect/frcnn/weights/best.safetensors --weights ssdlite=…]

Each model runs a real photo (scikit-learn's sample, resized so its longer side is --imgsz) in
eval mode under torch.inference_mode, as ``cnnkit detect predict`` runs it (--conf 0.25, the
YOLO-style detectors with BatchNorm folded into the convolutions): 5 warm-up passes, then --repeats timed passes; p50 and p90
in milliseconds. The models are measured in turns (one pass of each, again and again), so machine
noise hits all of them alike. With --weights NAME=FILE a trained cnnkit detector is timed instead
of an untrained one of the same build, and the map/map50 of its run (metrics.json beside the
weights) and its training time (history.csv) are printed with it. GFLOPs are counted at --imgsz x --imgsz. The reference peer is torchvision's own
fasterrcnn_mobilenet_v3_large_320_fpn (the configuration torchvision ships for low-latency CPU use:
150 proposals, 320-px images); every latency is also given as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

MODELS = {  # name -> (family, backbone)
    "fasterrcnn": ("fasterrcnn", "mobilenet_v3_large"),
    "fasterrcnn_resnet50": ("fasterrcnn", "resnet50"),
    "ssd": ("ssd", None),
    "ssdlite": ("ssdlite", None),
    "yolo_n": ("yolo_n", None),
    "yolo_s": ("yolo_s", None),
    "yolo_m": ("yolo_m", None),
}
REFERENCE = "tv_fasterrcnn_mobilenet_v3_large_320_fpn"


def photo(imgsz: int) -> torch.Tensor:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    image = Image.fromarray(load_sample_images().images[0])
    scale = imgsz / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def training_minutes(history: Path) -> dict[str, float]:
    """The run's training time (sum of its epochs, validation included) and when its best epoch ended."""
    import csv

    if not history.is_file():
        return {}
    rows = list(csv.DictReader(history.open()))
    elapsed = np.cumsum([float(r["time"]) for r in rows]) / 60
    best = int(np.argmax([float(r["map"]) for r in rows]))
    return {"train_min": float(elapsed[-1]), "best_min": float(elapsed[best])}


def build_all(imgsz: int, weights: dict[str, str], classes: int, conf: float) -> dict[str, tuple[torch.nn.Module, dict]]:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    from cnnkit.tasks.detect.api import Detector
    from cnnkit.models.detectors import build_detector, for_inference, model_cost, set_postprocess

    models = {}
    for name, (family, backbone) in MODELS.items():
        if name in weights:
            det = Detector.load(weights[name])
            run_dir = Path(weights[name]).parent.parent
            metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
            metrics.update(training_minutes(run_dir / "history.csv"))
            model = det.model
        else:
            model, metrics = build_detector(family, classes, imgsz, backbone), {}
        set_postprocess(model, conf, 0.5, 100)
        models[name] = (model, metrics)
    models[REFERENCE] = (fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=classes + 1), {})
    for name, (model, metrics) in models.items():
        params, gflops = model_cost(model, imgsz)  # before folding: the parameters as trained
        metrics = {**metrics, "params": params, "gflops": gflops}
        models[name] = (for_inference(model.eval()), metrics)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classes", type=int, default=5, help="object classes of the untrained models")
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold of cnnkit's detectors (detect predict's default)")
    parser.add_argument("--weights", action="append", default=[], help="NAME=FILE: time this trained detector as NAME")
    parser.add_argument("--only", default="", help="comma-separated model names to measure (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = dict(item.split("=", 1) for item in args.weights)
    unknown = set(weights) - set(MODELS)
    if unknown:
        parser.error(f"--weights {sorted(unknown)[0]}: not one of {', '.join(MODELS)}")
    models = build_all(args.imgsz, weights, args.classes, args.conf)
    if args.only:
        keep = set(args.only.split(",")) | {REFERENCE}
        models = {k: v for k, v in models.items() if k in keep}
    image = photo(args.imgsz)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model, _ in models.values():
            for _ in range(5):
                model([image])
        for _ in range(args.repeats):
            for name, (model, _) in models.items():
                started = time.perf_counter()
                model([image])
                times[name].append((time.perf_counter() - started) * 1000)
    reference = statistics.median(times[REFERENCE])
    print(f"batch 1, {image.shape[2]}x{image.shape[1]} px, {args.threads} threads, {args.repeats} runs, torch {torch.__version__}")
    print(f"{'model':42s} {'params M':>9s} {'GFLOPs':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'ratio':>6s} {'faster':>7s} {'map':>7s} "
          f"{'map50':>7s} {'train min':>9s} {'best at':>7s}")
    for name, (model, metrics) in models.items():
        values = sorted(times[name])
        p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
        params = metrics["params"] / 1e6
        map_text = f"{metrics['map']:7.3f} {metrics['map50']:7.3f}" if "map" in metrics else f"{'-':>7s} {'-':>7s}"
        time_text = f"{metrics['train_min']:9.1f} {metrics['best_min']:7.1f}" if "train_min" in metrics else f"{'-':>9s} {'-':>7s}"
        print(f"{name:42s} {params:9.2f} {metrics['gflops']:7.2f} {p50:8.1f} {p90:8.1f} {p50 / reference:6.2f} "
              f"{reference / p50:6.2f}x {map_text} {time_text}")
    print(f"ratio = p50 / p50 of {REFERENCE}; faster = its p50 / p50; train min = the run's epochs (validation "
          "included), best at = minutes until its best epoch ended")


if __name__ == "__main__":
    main()
