"""Tracking's plain functions: the sources (videos, frame folders, MOTChallenge sequences), appearance
features of the box crops, MOT rows, and drawing (boxes, ids and short trails)."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cnnkit.data import mot
from cnnkit.errors import CnnkitError

TRAIL = 30  # frames of a track's path drawn behind it


@dataclass
class Source:
    """One thing to track through: a MOTChallenge sequence or frame folder, or a video file."""

    name: str
    sequence: mot.MotSequence | None = None
    video: Path | None = None

    def frames(self) -> mot.VideoFrames:
        """The frames (RGB uint8), with ``fps``, ``width``, ``height`` and ``length`` (None when a video does not say)."""
        return mot.VideoFrames(self.video if self.video is not None else self.sequence)


def find_sources(sources: Iterable[str | Path], split: str | None = None) -> list[Source]:
    """Video files, frame folders, MOTChallenge sequences and folders of them, in the order given."""
    found: list[Source] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise CnnkitError(f"{path}: no such file or folder", "give a video file, a folder of frames or MOTChallenge sequences")
        if path.is_file():
            if not mot.is_video(path):
                raise CnnkitError(f"{path}: not a video file", f"videos end in {', '.join(mot.VIDEO_EXTENSIONS)}; frames go in a folder")
            found.append(Source(path.stem, video=path))
        else:
            found += [Source(seq.name, sequence=seq) for seq in mot.find_sequences(path, split=split)]
    names = [s.name for s in found]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise CnnkitError(f"two sources are both named {clash[0]!r}", "their results would share DIR/NAME.txt: track them separately")
    if not found:
        raise CnnkitError("nothing to track", "give a video file, a folder of frames or MOTChallenge sequences")
    return found


def id_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per id (golden-ratio hues, so neighbouring ids differ)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((track_id * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def video_writer(target: Path, fps: float, width: int, height: int):
    """(OpenCV mp4 writer, its temporary file beside ``target``): the caller renames the file into place once
    every frame is written, so a failed run leaves no half-written video."""
    import cv2

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.part.mp4")  # OpenCV picks the container by the extension
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise CnnkitError(f"{target}: OpenCV cannot write an mp4 video here", "use --no-video")
    return writer, tmp


def crops(frame: np.ndarray, boxes: np.ndarray, min_side: int = 2) -> list[np.ndarray]:
    """RGB crops of xyxy boxes, clipped to the frame (a box reaching outside is cut at the border; one left
    thinner than ``min_side`` pixels is widened around its centre so the embedder gets pixels)."""
    height, width = frame.shape[:2]
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w, half_h = max((x2 - x1) / 2, min_side / 2), max((y2 - y1) / 2, min_side / 2)
        left, right = int(np.clip(np.floor(cx - half_w), 0, width - 1)), int(np.clip(np.ceil(cx + half_w), 1, width))
        top, bottom = int(np.clip(np.floor(cy - half_h), 0, height - 1)), int(np.clip(np.ceil(cy + half_h), 1, height))
        out.append(frame[top:max(bottom, top + 1), left:max(right, left + 1)])
    return out


def appearance(embed: Callable[[list[np.ndarray]], np.ndarray], frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Unit-length appearance features [K, D] of the box crops (``embed``: crops -> vectors)."""
    if len(boxes) == 0:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.asarray(embed(crops(frame, boxes)), dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def mot_rows(frame_number: int, tracked: np.ndarray) -> np.ndarray:
    """Tracker output [M, 7] (x1, y1, x2, y2, id, score, class) -> MOTChallenge rows [M, 10]
    (frame, id, x, y, w, h, score, -1, -1, -1)."""
    rows = np.full((len(tracked), 10), -1.0)
    if len(tracked):
        rows[:, 0] = frame_number
        rows[:, 1] = tracked[:, 4]
        rows[:, 2:4] = tracked[:, 0:2]
        rows[:, 4:6] = tracked[:, 2:4] - tracked[:, 0:2]
        rows[:, 6] = tracked[:, 5]
    return rows


class TrailDrawer:
    """Draws each frame's tracks with their id and the last ``TRAIL`` centres of their path."""

    def __init__(self, class_names: list[str] | None = None):
        self.paths: dict[int, deque] = defaultdict(lambda: deque(maxlen=TRAIL))
        self.class_names = class_names

    def __call__(self, frame: np.ndarray, tracked: np.ndarray) -> np.ndarray:
        import cv2

        canvas = np.ascontiguousarray(frame.copy())
        thickness = max(1, round(min(canvas.shape[:2]) / 300))
        scale = max(0.35, min(canvas.shape[:2]) / 900)
        for x1, y1, x2, y2, track_id, _, cls in np.asarray(tracked).reshape(-1, 7):
            track_id = int(track_id)
            colour = id_colour(track_id)
            self.paths[track_id].append((int((x1 + x2) / 2), int((y1 + y2) / 2)))
            path = np.array(self.paths[track_id], dtype=np.int32).reshape(-1, 1, 2)
            if len(path) > 1:
                cv2.polylines(canvas, [path], False, colour, thickness, cv2.LINE_AA)
            cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness + 1)
            name = self.class_names[int(cls)] + " " if self.class_names and 0 <= int(cls) < len(self.class_names) else ""
            label = f"{name}{track_id}"
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(int(y1) - th - 4, 0)
            cv2.rectangle(canvas, (int(x1), top), (int(x1) + tw + 4, top + th + 4), colour, -1)
            cv2.putText(canvas, label, (int(x1) + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        return canvas


BAR_METRICS = ("hota", "mota", "idf1", "id_switches")


def metric_bars(table: dict[str, dict], path) -> list:
    """One bar chart per metric (HOTA, MOTA, IDF1, ID switches) across trackers, side by side in one PNG."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.engine.rundir import atomic_path

    names = list(table)
    fig, axes = plt.subplots(1, len(BAR_METRICS), figsize=(3.2 * len(BAR_METRICS), 3.2))
    for ax, key in zip(axes, BAR_METRICS):
        values = [table[n][key] for n in names]
        ax.bar(names, values, color=[np.array(id_colour(i + 1)) / 255 for i in range(len(names))])
        ax.set_title(key.upper().replace("_", " ") if key != "id_switches" else "ID switches (lower is better)")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3f}" if isinstance(v, float) else str(v), ha="center", va="bottom", fontsize=8)
        if key != "id_switches":
            ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return [path]


def example_frames(source, result_file, path, count: int = 4) -> list:
    """``count`` frames spread over a sequence with the tracker's boxes and ids drawn (trails from the
    frames before), in one PNG."""
    from pathlib import Path

    from PIL import Image

    from cnnkit.data import mot
    from cnnkit.engine.rundir import atomic_path

    rows = mot.read_mot_file(result_file, "result")
    length = source.sequence.length if source.sequence is not None else None
    if not length:
        return []
    wanted = set(np.linspace(1, length, count + 2)[1:-1].round().astype(int).tolist())
    drawer = TrailDrawer()
    picked = []
    for number, frame in enumerate(mot.iter_frames(source.sequence), start=1):
        here = rows[rows[:, 0] == number]
        tracked = np.zeros((len(here), 7))
        if len(here):
            tracked[:, 0:2] = here[:, 2:4]
            tracked[:, 2:4] = here[:, 2:4] + here[:, 4:6]
            tracked[:, 4] = here[:, 1]
            tracked[:, 5] = here[:, 6]
            tracked[:, 6] = -1
        drawn = drawer(frame, tracked)
        if number in wanted:
            picked.append(drawn)
        if number >= max(wanted):
            break
    if not picked:
        return []
    grid = np.concatenate(picked[:2], axis=1) if len(picked) < 4 else np.concatenate(
        [np.concatenate(picked[:2], axis=1), np.concatenate(picked[2:4], axis=1)], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return [path]
