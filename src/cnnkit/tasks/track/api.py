"""Multi-object tracking by detection: a cnnkit detector (or given detections) feeds SORT, DeepSORT or
ByteTrack frame by frame; results are MOTChallenge rows and an annotated video; `val` scores them with TrackEval.

    from cnnkit import Tracker
    tracker = Tracker("bytetrack", detector="runs/detect/exp/weights/best.safetensors")
    tracker.track(["video.mp4"], out="runs/track/exp")               # {"video": "runs/track/exp/video.txt"}
    Tracker("sort").val("data/mot", public=True)                      # hota mota idf1 id_switches
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from cnnkit.console import console, progress_bar
from cnnkit.data import mot
from cnnkit.errors import CnnkitError
from cnnkit.track import CameraMotion, Detections, TrackerOptions, make_tracker
from cnnkit.tasks.track import task as track_task
from cnnkit.tasks.track.task import Source, find_sources  # noqa: F401 - part of this module's API

TRACKERS = ("sort", "deepsort", "bytetrack")
CMC_METHODS = ("none", "sparse", "ecc")


class Tracker:
    """Tracking by detection: ``tracker`` (sort, deepsort or bytetrack) on boxes from ``detector`` weights
    (any cnnkit detector) or from MOTChallenge detection files; ``reid`` (embed or classify weights) gives
    DeepSORT its appearance features."""

    def __init__(self, tracker: str = "bytetrack", detector: str | Path | None = None, reid: str | Path | None = None,
                 options: TrackerOptions | None = None, conf: float | None = None, classes: str | None = None,
                 cmc: str = "none", device: str = "auto", batch: int = 4):
        if tracker not in TRACKERS:
            raise CnnkitError(f"unknown tracker {tracker!r}", f"valid: {', '.join(TRACKERS)}")
        if cmc not in CMC_METHODS:
            raise CnnkitError(f"unknown --cmc {cmc!r}", f"valid: {', '.join(CMC_METHODS)}")
        self.tracker_name, self.options, self.cmc, self.device, self.batch = tracker, options or TrackerOptions(), cmc, device, batch
        self.detector_path, self.reid_path = detector, reid
        # a detector keeps boxes down to the lowest threshold any tracker uses (ByteTrack's second round); each
        # tracker drops what it does not use, so one detector run serves every tracker `val` compares
        self.conf = conf if conf is not None else min(self.options.low_threshold, self.options.det_threshold)
        self.classes = classes
        self._detector = None
        self._embed: Callable[[list[np.ndarray]], np.ndarray] | None = None
        if tracker == "deepsort" and reid is None:
            raise CnnkitError("deepsort compares the appearance of boxes: it needs --reid WEIGHTS",
                              "an `embed train` weights file, or a classifier's (its pooled features); or use sort or bytetrack")
        if reid is not None:
            self._embed = _reid_embedder(reid, device)
        if detector is not None:
            self._detector = _frame_detector(detector, self.conf, classes, device)

    # ---------------------------------------------------------------- track
    def track(self, sources: Iterable[str | Path] | str | Path, out: str | Path = "runs/track/exp", detections: str | Path | None = None,
              public: bool = False, video: bool = True, split: str | None = None) -> dict[str, Path]:
        """Track through every source; writes OUT/NAME.txt (MOTChallenge rows) and, with ``video``, OUT/NAME.mp4
        with boxes, ids and trails. Boxes come from the detector, or from ``detections`` (one det.txt for one
        source), or with ``public`` from each sequence's det/det.txt. Returns {name: result file}."""
        found = find_sources([sources] if isinstance(sources, (str, Path)) else list(sources), split)
        if detections is not None and len(found) != 1:
            raise CnnkitError(f"--detections {detections}: one detections file is for one source, {len(found)} were given",
                              "use --public for each sequence's own det/det.txt")
        if detections is None and not public and self._detector is None:
            raise CnnkitError("no boxes to track", "give --weights DETECTOR, --detections det.txt or --public")
        out_dir = Path(out)
        written = {}
        for source in found:
            boxes = None
            if detections is not None:
                boxes = _read_detections(Path(detections), source)
            elif public:
                if source.sequence is None:
                    raise CnnkitError(f"{source.video}: --public reads SEQ/det/det.txt, and a video file has none",
                                      "give --weights DETECTOR or --detections FILE")
                boxes = _read_detections(source.sequence.root / "det" / "det.txt", source)
            written[source.name] = self._track_one(source, boxes, out_dir, video)
        return written

    def _detect_all(self, source: Source) -> dict[int, np.ndarray]:
        """The detector's boxes [K, 6] (x1, y1, x2, y2, score, class) for every frame of a source, by frame number."""
        frames = source.frames()
        found: dict[int, np.ndarray] = {}
        with progress_bar() as bar:
            task_id = bar.add_task(f"{source.name}: detect", total=frames.length, info="", rate="")
            for chunk in _chunks(iter(frames), self.batch):
                for dets in self._detector(chunk):
                    found[len(found) + 1] = dets
                bar.update(task_id, advance=len(chunk))
        return found

    def _track_one(self, source: Source, boxes: dict[int, np.ndarray] | None, out_dir: Path, video: bool,
                   detector_boxes: bool = False) -> Path:
        """Track one source: boxes from the detector (``boxes`` None), from a detections file, or the detector's
        computed beforehand (``detector_boxes``: already filtered by --classes)."""
        frames = source.frames()
        total, fps, width, height = frames.length, frames.fps, frames.width, frames.height
        tracker = make_tracker(self.tracker_name, self.options)
        motion = CameraMotion(self.cmc) if self.cmc != "none" else None
        keep = _class_filter(self.classes) if boxes is not None and not detector_boxes else None
        drawer = track_task.TrailDrawer(self._detector_classes())
        writer, tmp_video = (track_task.video_writer(out_dir / f"{source.name}.mp4", fps, width, height) if video else (None, None))
        rows: list[np.ndarray] = []
        frame_number = 0
        started = time.perf_counter()
        try:
            with progress_bar() as bar:
                task_id = bar.add_task(source.name, total=total, info=self.tracker_name, rate="")
                for chunk in _chunks(iter(frames), self.batch if self._detector is not None and boxes is None else 1):
                    found = self._detector(chunk) if boxes is None else None
                    for k, frame in enumerate(chunk):
                        frame_number += 1
                        dets = found[k] if found is not None else boxes.get(frame_number, np.zeros((0, 6)))
                        if keep is not None:
                            dets = dets[np.isin(dets[:, 5], keep)] if len(dets) else dets
                        detections = Detections(dets[:, :4].astype(np.float64), dets[:, 4].astype(np.float64),
                                                dets[:, 5].astype(np.int64))
                        if tracker.needs_appearance and len(dets):
                            detections.embeddings = track_task.appearance(self._embed, frame, dets[:, :4])
                        warp = motion(frame) if motion is not None else None
                        tracked = tracker.update(detections, warp=warp)
                        rows.append(track_task.mot_rows(frame_number, tracked))
                        if writer is not None:
                            writer.write(np.ascontiguousarray(drawer(frame, tracked)[:, :, ::-1]))
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.update(task_id, advance=len(chunk), rate=f"{frame_number / elapsed:.1f} frames/s")
        except BaseException:
            if writer is not None:
                writer.release()
                tmp_video.unlink(missing_ok=True)
            raise
        if frame_number == 0:
            raise CnnkitError(f"{source.name}: no frame could be read", "an empty folder or an unreadable video")
        if boxes:
            beyond = max(boxes)
            if beyond > frame_number:
                raise CnnkitError(f"{source.name}: detections for frame {beyond}, but the sequence has {frame_number} frames",
                                  "the detections file belongs to another sequence")
        result = out_dir / f"{source.name}.txt"
        mot.write_mot_results(result, np.concatenate(rows) if rows else np.zeros((0, 10)))
        if writer is not None:
            writer.release()
            os.replace(tmp_video, out_dir / f"{source.name}.mp4")
        rate = frame_number / max(time.perf_counter() - started, 1e-9)
        ids = len(np.unique(np.concatenate(rows)[:, 1])) if rows and sum(len(r) for r in rows) else 0
        console.print(f"{source.name}: {frame_number} frames, {ids} tracks at {rate:.1f} frames/s -> {result}", markup=False,
                      soft_wrap=True)
        self.last_fps = rate
        return result

    def _detector_classes(self) -> list[str] | None:
        return getattr(self._detector, "class_names", None)

    # ---------------------------------------------------------------- val
    def val(self, data: str | Path, trackers: Iterable[str] | None = None, public: bool = False, out: str | Path = "runs/track/val",
            split: str | None = None, video: bool = False) -> dict[str, Any]:
        """Track every sequence of ``data`` (of its ``split`` folder, or all) with each of
        ``trackers`` (default: this one) and score them with TrackEval: metrics.json (hota, mota, idf1,
        id_switches of the best tracker by HOTA, every tracker's under "trackers", per sequence), plots and
        report.html in ``out``."""
        from cnnkit.evaluate.mot import evaluate_mot
        from cnnkit.runner import publish

        names = list(trackers) if trackers is not None else [self.tracker_name]
        for name in names:
            if name not in TRACKERS:
                raise CnnkitError(f"unknown tracker {name!r}", f"valid: {', '.join(TRACKERS)}")
        root = Path(data)
        sources = find_sources([root], split)
        missing = [s.name for s in sources if s.sequence is None or not (s.sequence.root / "gt" / "gt.txt").is_file()]
        if missing:
            raise CnnkitError(f"{root}: sequence {missing[0]} has no gt/gt.txt", "track val needs ground truth: SEQ/gt/gt.txt")
        if "deepsort" in names and self._embed is None:
            raise CnnkitError("deepsort compares the appearance of boxes: it needs --reid WEIGHTS", "or leave deepsort out of --tracker")
        gt = {s.name: s.sequence.root / "gt" / "gt.txt" for s in sources}
        for s in sources:  # a malformed ground truth is reported before any tracking
            mot.check_frames_in_range(mot.read_mot_file(gt[s.name], "gt"), s.sequence.length, gt[s.name])
        out_dir = Path(out)
        results: dict[str, dict[str, Path]] = {}
        speed: dict[str, float] = {}
        # the detector runs once per sequence, not once per tracker: its boxes are the same for every tracker
        detected = {s.name: self._detect_all(s) for s in sources} if not public and len(names) > 1 else None
        for name in names:
            member = self._with_tracker(name)
            if detected is None:
                files = member.track([s.sequence.root for s in sources], out_dir / "results" / name, public=public, video=video)
            else:
                files = {s.name: member._track_one(s, detected[s.name], out_dir / "results" / name, video, detector_boxes=True)
                         for s in sources}
            results[name] = files
            speed[name] = member.last_fps
        table = evaluate_mot(gt, {s.name: s.sequence.length for s in sources}, results)
        for name in names:
            table[name]["fps"] = round(speed[name], 1)
        best = max(names, key=lambda n: table[n]["hota"])
        metrics = {"tracker": best, **{k: table[best][k] for k in ("hota", "mota", "idf1", "id_switches")},
                   "sequences": len(sources), "detections": "public" if public else str(self.detector_path),
                   "trackers": table}
        paths = track_task.metric_bars(table, out_dir / "plots" / "trackers.png")
        paths += track_task.example_frames(sources[0], results[best][sources[0].name], out_dir / "plots" / f"{best}_frames.png")
        settings = {"data": str(data), "split": split, "trackers": ",".join(names), "public": public,
                    "detector": str(self.detector_path), "reid": str(self.reid_path), "cmc": self.cmc,
                    **{f"option_{k}": v for k, v in vars(self.options).items()}}
        publish(out_dir, f"cnnkit track val on {data}", settings, metrics, paths,
                "  ".join(f"{n}: hota {table[n]['hota']:.3f} mota {table[n]['mota']:.3f} idf1 {table[n]['idf1']:.3f} "
                          f"idsw {table[n]['id_switches']}" for n in names))
        return metrics

    def _with_tracker(self, name: str) -> "Tracker":
        """This tracker's detector, re-ID model and options, with another association method."""
        member = object.__new__(Tracker)
        member.__dict__.update(self.__dict__)
        member.tracker_name = name
        member.options = replace(self.options)
        return member


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_detections(path: Path, source: Source) -> dict[int, np.ndarray]:
    if not path.is_file():
        raise CnnkitError(f"{path}: no such detections file", "public detections live in SEQ/det/det.txt")
    rows = mot.read_mot_file(path, "det")
    if source.sequence is not None:
        mot.check_frames_in_range(rows, source.sequence.length, path)
    return mot.detections_by_frame(rows)


def _class_filter(classes: str | None) -> np.ndarray | None:
    """--classes for detections files: class numbers as the file writes them (its 8th column)."""
    if not classes:
        return None
    try:
        return np.array([int(c) for c in classes.split(",") if c.strip()])
    except ValueError:
        raise CnnkitError(f"--classes {classes!r}: a detections file names classes by number", "e.g. --classes 1,3") from None


def _frame_detector(weights: str | Path, conf: float, classes: str | None, device: str):
    from cnnkit import tasks

    owner = tasks.owner_of(weights)
    if owner.name != "detect":
        raise CnnkitError(f"{weights}: a {owner.name} weights file, not a detector", "--weights takes `detect train` weights")
    return owner.load(weights).frame_detector(conf=conf, classes=classes, device=device)


def _reid_embedder(weights: str | Path, device: str) -> Callable[[list[np.ndarray]], np.ndarray]:
    from cnnkit import tasks

    owner = tasks.owner_of(weights)
    if owner.name not in ("embed", "classify"):
        raise CnnkitError(f"{weights}: a {owner.name} weights file", "--reid takes `embed train` or `classify train` weights")
    from cnnkit.tasks.embed.api import Embedder

    embedder = Embedder.load(weights)
    return lambda images: embedder.embed_arrays(images, device=device)
