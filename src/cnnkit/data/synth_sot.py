"""A synthetic single-object tracking benchmark in MOTChallenge layout (one id a sequence).

    from cnnkit.data.synth_sot import synth_sot
    summary = synth_sot("data/sot", n_sequences=8, frames=120, width=480, height=270, seed=0)

Each sequence is synth_mot's ``Scene`` (photo world, panning camera, drifting light, sensor noise, world-fixed
pillars, beams and bushes in front of everything) with one followed object, the target, and the things that
make single-object trackers fail:

- scale: the target's size follows a smooth curve from 1 to an end scale between 1/2 and 2 (half of the
  sequences grow or shrink all the way, the other half go there and come back), so its box changes area by up
  to 4x; its base size is 1.3-1.7 times the MOT objects' (about 25-45 px at 480 x 270).
- occlusion: the target starts in the open (the least hidden of 16 places, no look-alike within 2.5 sizes), then
  sweeps across the view (0.5%-1% of the width a frame, turned back by an inner margin, so it never leaves the
  view), passing behind the occluders, and behind distractors nearer the camera.
- distractors: about 3-5 other objects of the target's size and colour family (hue within 0.07-0.15 of its),
  half of them twins of its shape (the same outline, stretch, turn and pattern: only the hue and size differ),
  pulled towards the target when they stray more than three object sizes from it, so they cross and pass it;
  one that leaves the view is replaced through the borders.

Files (``out/{train,test}/SOT-NN/``): ``seqinfo.ini`` (30 fps), ``img1/%06d.jpg`` (JPEG quality 90) and
``gt/gt.txt`` with the target alone in every frame: ``frame,1,x,y,w,h,1,1,visibility`` (its tight box, whole
pixels, inside the image; visibility = the share of its pixels seen). The first row is a tracker's initial box.
The same seed gives byte-identical files; sequence i draws from generators seeded by (seed, i).
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from cnnkit.data.mot import SeqInfo, write_seqinfo
from cnnkit.data.synth import _swap_in, load_photos
from cnnkit.data.synth_mot import FPS, JPEG_QUALITY, Mover, Scene, Sprite, make_sprite
from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

PREFIX = "SOT"
MARGIN = 0.06  # the target's box keeps this share of the view's width and height from its borders


def scale_curve(rng: np.random.Generator, frames: int) -> np.ndarray:
    """[frames] float: the target's size over the sequence relative to frame 1 (1 at t = 0), smooth, between
    1/2 and 2: all the way to an end scale, or there and back."""
    end = math.exp(rng.uniform(math.log(1.3), math.log(2.0))) ** (1 if rng.random() < 0.5 else -1)
    u = np.arange(frames) / max(frames - 1, 1)
    shape = 0.5 - 0.5 * np.cos(np.pi * u) if rng.random() < 0.5 else np.sin(np.pi * u)
    return np.exp(math.log(end) * shape)


def resize_sprite(sprite: Sprite, scale: float) -> Sprite:
    """``sprite`` resized by ``scale`` (at least 3 x 3 pixels): area-averaged colours, nearest-neighbour mask."""
    h, w = sprite.mask.shape
    size = (max(3, round(w * scale)), max(3, round(h * scale)))
    mask = cv2.resize(sprite.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    bgr = cv2.resize(sprite.bgr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return Sprite(mask, bgr, int(mask.sum()))


class SotScene(Scene):
    """synth_mot's Scene with one followed object (see the module docstring). ``frame(t)``, for t = 0, 1, … in
    turn, returns (image [H, W, 3] uint8 BGR, (x, y, w, h, visibility) of the target: top-left, whole pixels)."""

    def __init__(self, seed: list[int], photos: list[np.ndarray], width: int, height: int, frames: int,
                 distractors: float = 4.0):
        # the target's looks and scale, and the distractors' looks, come from a generator of their own: set
        # before Scene's __init__, which spawns the first objects through _spawn
        self.plan = np.random.default_rng([*seed, 11])
        self.followed: Mover | None = None
        self.scales = scale_curve(self.plan, frames)
        super().__init__(seed, photos, width, height, frames, objects=1 + distractors)

    # 1) the first object spawned is the target, the others are distractors that look like it
    def _spawn(self, t: int, inside: bool) -> Mover:
        mover = super()._spawn(t, inside)  # its place and velocity (and a sprite of Scene's own, replaced)
        if self.followed is None:
            self.target_hue = float(self.plan.uniform(0, 1))
            self.shape_seed = int(self.plan.integers(2**31))
            self.base_size = self.size * self.plan.uniform(1.3, 1.7)
            largest = float(self.scales.max())
            self.base = make_sprite(np.random.default_rng(self.shape_seed), self.base_size * largest, self.target_hue)
            self.base_scale = largest
            mover.sprite = self._target_sprite(0)
            mover.x, mover.y = self._clear_start(t, mover.sprite)
            mover.speed = self.plan.uniform(0.005, 0.01) * self.width
            heading = self.plan.uniform(-0.6, 0.6) + (math.pi if self.plan.random() < 0.5 else 0.0)  # mostly across
            mover.vx, mover.vy = mover.speed * math.cos(heading), mover.speed * math.sin(heading)
            self.followed = mover
            return mover
        if inside:  # the first frame shows the target clear of its look-alikes
            view = np.array([self.width, self.height], np.float64)
            for _ in range(20):
                if math.hypot(mover.x - self.followed.x, mover.y - self.followed.y) > 2.5 * self.base_size:
                    break
                mover.x, mover.y = self.camera[t] + self.plan.uniform(0.05, 0.95, 2) * view
        hue = (self.target_hue + self.plan.choice([-1, 1]) * self.plan.uniform(0.07, 0.15)) % 1.0
        size = self.base_size * self.plan.uniform(0.8, 1.25)
        twin = self.plan.random() < 0.5
        mover.sprite = make_sprite(np.random.default_rng(self.shape_seed) if twin else self.plan, size, hue)
        return mover

    def _clear_start(self, t: int, sprite: Sprite) -> tuple[float, float]:
        """Where the target starts: of 16 places in the middle of the view, the least hidden by the occluders (a
        tracker's first box must show the target)."""
        h, w = sprite.mask.shape
        view = np.array([self.width, self.height], np.float64)
        best, hidden = None, 2.0
        for _ in range(16):
            x, y = self.camera[t] + self.plan.uniform(0.3, 0.7, 2) * view
            left, top = round(x - w / 2), round(y - h / 2)
            share = float(self.occ_mask[top:top + h, left:left + w][sprite.mask].mean())
            if share < hidden:
                best, hidden = (float(x), float(y)), share
        return best

    def _target_sprite(self, t: int) -> Sprite:
        return resize_sprite(self.base, float(self.scales[t]) / self.base_scale)

    # 2) Scene's motion, then the target kept in view and the distractors pulled towards it
    def _move(self) -> None:
        super()._move()
        target = self.followed
        cam = self.camera[self.t - 1].astype(np.float64)
        h, w = target.sprite.mask.shape
        for axis, (half, side) in enumerate(((w / 2, self.width), (h / 2, self.height))):
            low, high = cam[axis] + half + MARGIN * side, cam[axis] + side - half - MARGIN * side
            position, velocity = (target.x, target.vx) if axis == 0 else (target.y, target.vy)
            if (position < low and velocity < 0) or (position > high and velocity > 0):
                velocity = -velocity  # turned back by the inner margin
            position = min(max(position, low), max(low, high))
            if axis == 0:
                target.x, target.vx = position, velocity
            else:
                target.y, target.vy = position, velocity
        for mover in self.movers:
            if mover is target:
                continue
            dx, dy = target.x - mover.x, target.y - mover.y
            distance = math.hypot(dx, dy)
            if distance > 3 * self.base_size:
                mover.vx += 0.08 * mover.speed * dx / distance
                mover.vy += 0.08 * mover.speed * dy / distance

    def frame(self, t: int) -> tuple[np.ndarray, tuple[int, int, int, int, float]]:
        self.followed.sprite = self._target_sprite(t)  # the centre stays where it is
        image, boxes = super().frame(t)
        box = next(b for b in boxes if b[0] == self.followed.track_id)
        return image, box[1:]


def _write_sequence(folder: Path, name: str, seed: list[int], photos: list[np.ndarray], width: int, height: int,
                    frames: int, distractors: float, tick) -> dict:
    scene = SotScene(seed, photos, width, height, frames, distractors)
    (folder / "img1").mkdir(parents=True)
    rows, visibility, areas = [], [], []
    for t in range(frames):
        image, (x, y, w, h, vis) = scene.frame(t)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        (folder / "img1" / f"{t + 1:06d}.jpg").write_bytes(jpeg.tobytes())
        rows.append(f"{t + 1},1,{x},{y},{w},{h},1,1,{vis:.5f}\n")
        visibility.append(vis)
        areas.append(w * h)
        tick()
    (folder / "gt").mkdir()
    (folder / "gt" / "gt.txt").write_text("".join(rows))
    write_seqinfo(folder, SeqInfo(name=name, frame_rate=FPS, seq_length=frames, width=width, height=height))
    return {"visibility": float(np.mean(visibility)), "min_visibility": float(np.min(visibility)),
            "area_ratio": float(max(areas) / max(min(areas), 1))}


def synth_sot(out: str | Path, n_sequences: int = 8, frames: int = 120, width: int = 480, height: int = 270, seed: int = 0,
              distractors: float = 4.0, test_fraction: float = 0.5, force: bool = False, progress: bool = True) -> dict:
    """Write a synthetic single-object benchmark into ``out`` (``train/`` and ``test/`` sequence folders; see the
    module docstring). Refuses a non-empty ``out`` unless ``force`` (then it is replaced as a whole, once the new
    one is complete). ``distractors``: about how many look-alikes share the view with the target.

    Returns ``{"root", "splits": {split: [names]}, "sequences": {split: count}, "frames" (all sequences), "width",
    "height", "fps", "mean_visibility", "occluded_sequences" (whose target is at some point under 70% visible),
    "max_area_ratio" (the largest over the smallest box of a sequence, the most of any), "seconds"}``."""
    if n_sequences < 1:
        raise CnnkitError(f"--n {n_sequences}: need at least 1 sequence")
    if not 2 <= frames <= 100_000:
        raise CnnkitError(f"--frames {frames}: out of range", "use 2 to 100000 frames a sequence")
    if not (160 <= width <= 4096 and 90 <= height <= 4096):
        raise CnnkitError(f"--imgsz {width} (height {height}): out of range", "use a width of 160 to 4096 pixels, a height of 90 or more")
    if not 0 <= distractors <= 50 or seed < 0 or not 0 <= test_fraction < 1:
        raise CnnkitError(f"distractors={distractors}, seed={seed}, test_fraction={test_fraction}: out of range",
                          "use 0-50 distractors, a seed of 0 or more and a test fraction in [0, 1)")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "pass a new --out, or --force to replace it")
    started = time.perf_counter()
    n_test = min(max(int(n_sequences * test_fraction), 1 if test_fraction > 0 else 0), n_sequences - 1)
    test = set(np.random.default_rng([seed, n_sequences, 3]).permutation(n_sequences)[:n_test].tolist())
    names = [f"{PREFIX}-{i + 1:02d}" for i in range(n_sequences)]
    splits = {"train": [n for i, n in enumerate(names) if i not in test], "test": [n for i, n in enumerate(names) if i in test]}
    photos = load_photos(more=True)

    from cnnkit.console import progress_bar

    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    stats = []
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root.parent, root.name)
    try:
        with bar if bar is not None else nullcontext():
            task = bar.add_task("synth sot", total=n_sequences * frames, info="", rate="") if bar is not None else None
            done = [0]

            def tick() -> None:
                done[0] += 1
                if bar is not None and (done[0] % 10 == 0 or done[0] == n_sequences * frames):
                    bar.update(task, completed=done[0])
                    bar.refresh()

            for i, name in enumerate(names):
                split = "test" if i in test else "train"
                stats.append(_write_sequence(tmp / split / name, name, [seed, i], photos, width, height, frames, distractors, tick))
        for split in splits:
            (tmp / split).mkdir(exist_ok=True)
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(root), "splits": splits, "sequences": {s: len(v) for s, v in splits.items()},
            "frames": n_sequences * frames, "width": width, "height": height, "fps": FPS,
            "mean_visibility": round(float(np.mean([s["visibility"] for s in stats])), 4),
            "occluded_sequences": sum(s["min_visibility"] < 0.7 for s in stats),
            "max_area_ratio": round(max(s["area_ratio"] for s in stats), 2),
            "seconds": round(time.perf_counter() - started, 2)}
