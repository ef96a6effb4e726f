"""Single-object tracking with a SiamFC-style Siamese network: the SingleObjectTracker (train / load / track /
val) and the SOT recipe the runner trains.

    from cnnkit.tasks.track.sot import SingleObjectTracker
    sot = SingleObjectTracker("siamfc")
    sot.train("data/mot", epochs=10)                                  # pairs from MOT/SOT sequences or detection data
    sot = SingleObjectTracker.load("runs/sot/exp/weights/best.safetensors")
    sot.track(["video.mp4"], init=(120, 80, 40, 60), out="runs/sot/track")   # {"video": Path("runs/sot/track/video.txt")}
    sot.track(["data/sot/test"], out="runs/sot/track")                # each sequence from its first gt row
    sot.val("data/sot", split="test")                                 # success_auc precision_20px fps (OTB)

Data: MOTChallenge sequences (cnnkit.data.mot). A single-object sequence has one id in gt/gt.txt; in a
multi-object sequence every id is an object to draw pairs from, and to track (`val`) from its first to its last
frame. A detection dataset (COCO, YOLO, VOC) trains too: each box is a pair with itself, augmented.
Results: DIR/NAME.txt in MOTChallenge rows, one a frame (``frame,1,x,y,w,h,score,-1,-1,-1``), and DIR/NAME.mp4.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.console import console, progress_bar, warn
from cnnkit.data import mot
from cnnkit.engine import distributed as dist_utils
from cnnkit.errors import CnnkitError
from cnnkit.runner import (Built, Recipe, Run, adopt_model_file, beside_run, evaluate_run_splits, publish, publish_run,
                           read_model_file, run_diagnosis, train_and_reload)
from cnnkit.tasks.track import task as track_task
from cnnkit.tasks.track.sot_task import (PairData, PairOptions, PairSet, SotSequence, SotTask, load_pair_data, require_gt,
                                          sot_sequences)
from cnnkit.track.sot import SiamOptions, SiamTracker, check_box

SOT = "sot"


# ---------------------------------------------------------------------------------------------- the class

def parse_box(text: str | Iterable[float]) -> tuple[float, float, float, float]:
    """"x,y,w,h" (or four numbers) -> floats; one line naming --init otherwise."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4:
        raise CnnkitError(f"--init {text!r}: expected four numbers x,y,w,h", "e.g. --init 120,80,40,60 (top-left corner, width, height in pixels)")
    return values  # type: ignore[return-value]


@dataclass
class _Source:
    name: str
    frames: list[Path] | None = None  # a sequence's frames, or None for a video
    video: Path | None = None
    first_gt: tuple[int, np.ndarray] | None = None  # (frame, xywh) of the sequence's first gt row
    fps: float = mot.DEFAULT_FPS


def _sources(sources: Iterable[str | Path], split: str | None) -> list[_Source]:
    """track_task.find_sources, with each sequence's first ground-truth box (where tracking starts without --init)."""
    found: list[_Source] = []
    for source in track_task.find_sources(sources, split):
        if source.sequence is None:
            found.append(_Source(source.name, video=source.video))
            continue
        seq, first_gt = source.sequence, None
        if seq.gt is not None:
            rows = mot.read_mot_file(seq.gt, "gt", length=seq.length)
            if len(rows):
                row = rows[np.argsort(rows[:, 0], kind="stable")[0]]
                first_gt = (int(row[0]), row[2:6])
        found.append(_Source(seq.name, seq.frames, first_gt=first_gt, fps=seq.fps))
    return found


def _rgb_frames(paths: list[Path]):
    import cv2

    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CnnkitError(f"{path}: not a readable image")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class SingleObjectTracker:
    """A SiamFC-style single-object tracker (cnnkit.models.siamese, cnnkit.track.sot): ``train`` on pairs of
    crops, ``track`` videos and sequences from an initial box, ``val`` by the OTB protocol."""

    def __init__(self, model: str = "siamfc", pretrained: bool = False, options: SiamOptions | None = None,
                 device: str = "auto"):
        from cnnkit.models.siamese import spec_of

        self.model_name, self.pretrained, self.device = model, pretrained, device
        self.options = options or SiamOptions()
        self.imgsz = spec_of(model).search
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.model: torch.nn.Module | None = None
        self.class_names: list[str] | None = None
        self.weights_path: Path | None = None
        self.val_split, self.split_seed = 0.2, 0
        self.cost: tuple[int | None, float | None] = (None, None)
        self.last_fps = 0.0

    @classmethod
    def load(cls, weights: str | Path) -> "SingleObjectTracker":
        """A tracker from a `track sot train` weights file (its metadata names the network and the context)."""
        from cnnkit.models.siamese import build_siamfc

        file = read_model_file(weights, SOT)
        if file.deployed is not None:
            raise CnnkitError(f"{weights}: a deployed file; single-object tracking runs cnnkit weights files",
                              "pass the run's weights/best.safetensors")
        meta = file.meta
        sot = cls(meta["model"], options=SiamOptions(context=float(meta.get("context", 0.5))))
        sot.mean, sot.std = tuple(meta["mean"]), tuple(meta["std"])
        sot.model = build_siamfc(meta["model"])
        adopt_model_file(sot, file)
        sot.model.eval()
        return sot

    def train(self, data: str, **options: Any) -> Run:
        """Train on pairs from ``data`` (sequences or a detection dataset); options are SotConfig fields."""
        from cnnkit.tasks.track.sot_config import SotConfig

        defaults = {"model": self.model_name, "pretrained": self.pretrained, "context": self.options.context}
        return train_and_reload(self, SotConfig, SOT_RECIPE, data, defaults, options)

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise CnnkitError("this SingleObjectTracker has no weights yet", "train it first or use SingleObjectTracker.load(FILE)")
        return self.model

    def tracker(self, device: str | None = None) -> SiamTracker:
        """The tracking loop (cnnkit.track.sot.SiamTracker) around this network."""
        return SiamTracker(self._require_model(), self.options, self.mean, self.std,
                           dist_utils.select_device(device or self.device))

    def track_frames(self, frames: Iterable[np.ndarray], box, tracker: SiamTracker | None = None,
                     draw=None) -> tuple[np.ndarray, np.ndarray, float]:
        """Track through ``frames`` (RGB uint8) from ``box`` (x, y, w, h) in the first: (boxes [N, 4] xywh, the
        first being ``box``; scores [N], 1 for the first; seconds spent in the tracker, reading and drawing left
        out). ``draw(frame, box, score)``, if given, sees every frame."""
        tracker = tracker or self.tracker()
        boxes, scores, seconds = [], [], 0.0
        for k, frame in enumerate(frames):
            started = time.perf_counter()
            if k == 0:
                tracker.init(frame, box)
                result, score = tuple(float(v) for v in box), 1.0
            else:
                result, score = tracker.update(frame)
            seconds += time.perf_counter() - started
            boxes.append(result)
            scores.append(score)
            if draw is not None:
                draw(frame, result, score)
        return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores), seconds

    def track(self, sources: Iterable[str | Path] | str | Path, init=None, out: str | Path = "runs/sot/track",
              video: bool = True, split: str | None = None, device: str | None = None) -> dict[str, Path]:
        """Track one object through every source (video files, frame folders, MOTChallenge sequences): from
        ``init`` (x, y, w, h or "x,y,w,h" in the first frame; for one source) or each sequence's first gt row.
        Writes OUT/NAME.txt (``frame,1,x,y,w,h,score,-1,-1,-1``, one row a frame from the first tracked one)
        and, with ``video``, OUT/NAME.mp4 with the box drawn. Returns {name: result file}."""
        found = _sources([sources] if isinstance(sources, (str, Path)) else list(sources), split)
        box = parse_box(init) if init is not None else None
        if box is not None and len(found) != 1:
            raise CnnkitError(f"--init is one box for one source; {len(found)} were given", "track them one at a time, "
                              "or leave --init out to start each sequence from its first gt row")
        tracker = self.tracker(device)
        out_dir = Path(out)
        written, frames_done, seconds = {}, 0, 0.0
        for source in found:
            start, start_box = (1, box) if box is not None else (source.first_gt or (1, None))
            if start_box is None:
                raise CnnkitError(f"{source.name}: no initial box", "pass --init x,y,w,h (a video or a sequence without gt/gt.txt)")
            frames = iter(mot.VideoFrames(source.video)) if source.video is not None else _rgb_frames(source.frames[start - 1:])
            first = next(frames, None)
            if first is None:
                raise CnnkitError(f"{source.name}: no frame could be read")
            check_box(start_box, first.shape[1], first.shape[0], "--init" if box is not None else f"{source.name}: the first gt box")
            result, n, spent = self._track_source(source, start, first, frames, start_box, tracker, out_dir, video)
            written[source.name] = result
            frames_done, seconds = frames_done + n, seconds + spent
        self.last_fps = frames_done / max(seconds, 1e-9)
        return written

    def _track_source(self, source: _Source, start: int, first: np.ndarray, rest, box, tracker: SiamTracker,
                      out_dir: Path, video: bool) -> tuple[Path, int, float]:
        """Track from frame ``start`` (``first``, then ``rest``); OUT/NAME.txt and OUT/NAME.mp4."""
        from itertools import chain

        from cnnkit.tasks.track.task import TrailDrawer

        writer = tmp_video = None
        drawer = TrailDrawer()
        if video:
            writer, tmp_video = track_task.video_writer(out_dir / f"{source.name}.mp4", source.fps, first.shape[1], first.shape[0])

        def draw(frame, result, score):
            x, y, w, h = result
            writer.write(np.ascontiguousarray(drawer(frame, np.array([[x, y, x + w, y + h, 1, score, -1]]))[:, :, ::-1]))

        try:
            with progress_bar(transient=True) as bar:
                task = bar.add_task(source.name, total=len(source.frames) - start + 1 if source.frames else None, info="",
                                    rate="")

                def counted(frames):
                    for frame in frames:
                        yield frame
                        bar.update(task, advance=1)

                boxes, scores, seconds = self.track_frames(counted(chain([first], rest)), box, tracker,
                                                           draw if writer is not None else None)
        except BaseException:
            if writer is not None:
                writer.release()
                tmp_video.unlink(missing_ok=True)
            raise
        rows = np.column_stack([np.arange(len(boxes)) + start, np.ones(len(boxes)), boxes, scores])
        result = mot.write_mot_results(out_dir / f"{source.name}.txt", rows)
        if writer is not None:
            writer.release()
            os.replace(tmp_video, out_dir / f"{source.name}.mp4")
        console.print(f"{source.name}: {len(boxes)} frames at {len(boxes) / max(seconds, 1e-9):.1f} frames/s -> {result}",
                      markup=False, soft_wrap=True)
        return result, len(boxes), seconds

    # ---------------------------------------------------------------- val
    def val(self, data: str | Path, split: str | None = None, out: str | Path | None = None, batch: int = 1,
            device: str = "auto", workers: int = 2) -> dict[str, Any]:
        """OTB one-pass evaluation on every object of ``data``'s sequences (of its ``split`` folder, or all): each
        tracked from its first gt box; metrics.json (success_auc, precision_20px, fps, per sequence), the
        success and precision plots, results/NAME.txt and report.html in ``out``. ``batch`` and ``workers`` are
        the other tasks' keywords: tracking goes frame by frame."""
        root = Path(data)
        sequences = [o for s in require_gt(mot.find_sequences(root, split=split), root) for o in sot_sequences(s)]
        if not sequences:
            raise CnnkitError(f"{root}: no object spans two frames or more", "sot val tracks the ids of SEQ/gt/gt.txt")
        out_dir = beside_run(out, self.weights_path, SOT)
        metrics, paths = self._evaluate(sequences, out_dir, device, out_dir / "plots" / "otb.png")
        publish(out_dir, f"cnnkit track sot val: {self.model_name} on {data}", {"weights": str(self.weights_path),
                "data": str(data), "split": split, **{f"option_{k}": v for k, v in vars(self.options).items()}},
                metrics, paths, _headline(metrics))
        return metrics

    def _evaluate(self, sequences: list[SotSequence], out_dir: Path, device: str, plot: Path) -> tuple[dict, list[Path]]:
        from cnnkit.evaluate.otb import otb_scores, plot_curves

        tracker = self.tracker(device)
        results, frames, seconds = {}, 0, 0.0
        with progress_bar(transient=True) as bar:
            task = bar.add_task("sot val", total=sum(len(s.frames) for s in sequences), info="", rate="")
            for seq in sequences:
                boxes, scores, spent = self.track_frames(_rgb_frames(seq.frames), seq.boxes[0], tracker)
                rows = np.column_stack([np.arange(1, len(boxes) + 1), np.ones(len(boxes)), boxes, scores])
                mot.write_mot_results(out_dir / "results" / f"{seq.name}.txt", rows)
                results[seq.name] = (boxes, seq.boxes)
                frames, seconds = frames + len(boxes), seconds + spent
                bar.update(task, advance=len(seq.frames), rate=f"{frames / max(seconds, 1e-9):.0f} frames/s")
        scores = otb_scores(results)
        self.last_fps = frames / max(seconds, 1e-9)
        metrics = {"success_auc": scores["success_auc"], "precision_20px": scores["precision_20px"],
                   "fps": round(self.last_fps, 1), "mean_iou": scores["mean_iou"], "sequences": len(sequences),
                   "frames": frames, "success_curve": scores["success_curve"], "precision_curve": scores["precision_curve"],
                   "per_sequence": scores["per_sequence"]}
        return metrics, [plot_curves({self.model_name: scores}, plot)]


def _headline(metrics: dict[str, Any]) -> str:
    return (f"success AUC {metrics['success_auc']:.4f}  precision@20px {metrics['precision_20px']:.4f}  "
            f"{metrics['fps']:.1f} frames/s ({metrics['sequences']} sequences)")


# ------------------------------------------------------------------------------------------- the recipe

def _build(cfg, dataset) -> Built:
    from cnnkit.models.siamese import build_siamfc

    net = build_siamfc(cfg.model, cfg.pretrained)
    return Built(net, {"exemplar": net.spec.exemplar, "search": net.spec.search, "stride": net.spec.stride,
                       "response": net.response_size(), "context": cfg.context,
                       "params": sum(p.numel() for p in net.parameters())})


def _pair_options(cfg) -> PairOptions:
    return PairOptions(max_gap=cfg.max_gap, context=cfg.context, radius=cfg.radius, shift=cfg.shift,
                       scale_jitter=cfg.scale_jitter, color=cfg.color, augment=cfg.augment != "none")


def _make_sets(cfg, dataset: PairData) -> tuple[PairSet, PairSet]:
    from cnnkit.models.siamese import build_siamfc

    net = build_siamfc(cfg.model)  # the response size of the architecture (the run's own model is built elsewhere)
    response, options = net.response_size(), _pair_options(cfg)
    return (PairSet(dataset.splits["train"], net.spec, response, cfg.pairs, cfg.seed, True, options),
            PairSet(dataset.splits["val"], net.spec, response, cfg.val_pairs, cfg.seed, False, options))


def _spread(items: list, count: int) -> list:
    """``count`` of ``items`` spread evenly over them (all when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, count).round().astype(int)]


def finish_sot_run(cfg, run_dir: Path, dataset: PairData, device: torch.device) -> dict[str, Any]:
    """Best weights: the validation pairs' scores of its epoch, then OTB on (at most --eval-sequences of) the val
    and test objects; metrics.json, plots and report.html."""
    from cnnkit.engine.checkpoint import read_metadata

    best_file = run_dir / "weights" / "best.safetensors"
    best = SingleObjectTracker.load(best_file)
    splits = {split: _spread(found, cfg.eval_sequences) for split, found in dataset.sequences.items()}

    def evaluate_split(split: str, sequences: list[SotSequence]) -> tuple[dict[str, Any], list[Path]]:
        return best._evaluate(sequences, run_dir / "tracks" / split, str(device), run_dir / "plots" / f"{split}_otb.png")

    metrics, paths = evaluate_run_splits(run_dir, splits, evaluate_split)
    metrics.update({f"pairs_{k}": v for k, v in read_metadata(best_file).get("metrics", {}).items()})
    warning = run_diagnosis(run_dir, metrics)
    if warning:
        metrics["warnings"] = [warning]
    headline = (("val " + _headline(metrics)) if "success_auc" in metrics else
                f"val pairs: peak AUC {metrics.get('pairs_peak_auc', 0):.4f}, accuracy {metrics.get('pairs_peak_accuracy', 0):.4f} "
                f"(no sequences to track)")
    if "test" in metrics:
        headline += "  test " + _headline(metrics["test"])
    publish_run(run_dir, f"cnnkit track sot: {cfg.model} on {cfg.data}", cfg, metrics, paths, headline)
    if warning:
        warn(warning)
    return metrics


def _make_task(cfg, dataset, model) -> SotTask:
    return SotTask(stride=model.spec.stride)


SOT_RECIPE = Recipe(
    task=SOT,
    build_model=_build,
    make_task=_make_task,
    metadata=lambda cfg, dataset, model: {"class_names": None},
    finish=finish_sot_run,
    load_data=load_pair_data,
    make_sets=_make_sets,
    backbone_name=lambda cfg: None,
)
