"""A synthetic multi-object tracking benchmark in MOTChallenge layout: ``cnnkit data synth mot``.

    cnnkit data synth mot --out data/mot                      # 8 sequences x 150 frames, 640 x 360
    cnnkit data synth mot --out data/mot_small --n 2 --frames 40 --imgsz 320

    from cnnkit.data.synth_mot import synth_mot
    summary = synth_mot("data/mot", n_sequences=8, frames=150, width=640, height=360, objects=12, seed=0)

Each sequence is a camera looking at a square "world" 1.6 times the view's longer side:

- background: 2 x 2 tiles cut from real photos (scikit-learn's and scikit-image's samples), flipped at random,
  resized to the world and lit unevenly once (synth.light_and_noise). The camera pans slowly over it (about
  0.1%-0.3% of the width a frame), now and then turning, bouncing off the world's edges. Global brightness
  and contrast drift smoothly over the sequence (two slow sinusoids each) and every frame gets fresh
  Gaussian noise.
- objects: the filled shape outlines of synth.py (circle, square, triangle, star, cross), stretched up to
  1.8x taller than wide, all of about one size per sequence (sqrt of the area 6.5%-10% of the height, +-15%:
  boxes of about 30-60 px at 640 x 360), each its own colour (hues a golden-ratio step apart), with a pattern
  (plain, stripes across or along, or two-tone) and a dark rim. They move in world coordinates at a
  near-constant velocity (0.3%-1.2% of the width a frame) with small random accelerations. A sequence starts
  with about ``objects`` of them in view; new ones enter through the image borders throughout (at most 40
  degrees off the border's normal, at a rate that holds the number in view near a target of 70%-130% of
  ``objects``), and a third of those are aimed at where an object in view will be, so their paths cross.
  An object that has left the view is gone for good: a returning one would be a new id.
- occlusion: 2-3 world-fixed occluders drawn in front of everything (pillars 0.9-1.8 object sizes wide and
  the height of the world, horizontal beams, wobbly bushes; about 5%-20% of the view), so objects pass
  behind them for several frames, a few ids a sequence for 10 or more; objects are drawn far to near, so
  nearer ones hide farther ones where they cross.

Files (``out/{train,test}/SYNTH-NN/``): ``seqinfo.ini`` (30 fps), ``img1/%06d.jpg`` (JPEG quality 90),
``gt/gt.txt`` with every object whose box reaches into the image, each frame: ``frame,id,x,y,w,h,1,1,vis``
(the whole object's tight box clipped to the image, in whole pixels; vis = the share of the object's pixels
seen: not behind an occluder or a nearer object, and inside the image; class 1 = MOTChallenge's pedestrian,
the class evaluation scores), and ``det/det.txt`` public detections ``frame,-1,x,y,w,h,score,-1,-1,-1``: a
ground-truth object is detected with probability 0.95 * clip((vis - 0.1) / 0.5, 0, 1) (never below 10%
visible, 95% over 60% visible), its box jittered by 3%-9% of its size on each side (more when
occluded), with a score of 0.1 + 0.85 * clip((vis - 0.2) / 0.6, 0, 1) plus noise (occluded objects score
0.1-0.5, clear ones 0.8-0.99: what ByteTrack's second association uses); plus 1-3 false positives a frame on
average (per sequence), of the objects' sizes and scored 0.05-0.6. Rows are sorted by frame.

The same seed gives byte-identical files; sequence i draws from its own generators seeded by (seed, i), so
the first sequences do not depend on ``n_sequences``. Which sequences go to test is drawn from (seed, n).
``Scene`` is the simulation of one sequence, frame by frame; a single-object sequence is the same scene with
one object followed by its own id.
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnnkit.data.mot import SeqInfo, write_seqinfo
from cnnkit.data.synth import SHAPES, _outline, _rasterise, _swap_in, _unit_area, light_and_noise, load_photos
from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

FPS = 30
JPEG_QUALITY = 90
WORLD_SCALE = 1.6  # the world's side over the view's longer side: room for the camera to pan
PREFIX = "SYNTH"


@dataclass
class Sprite:
    mask: np.ndarray  # [h, w] bool: the object's pixels, tight (the mask's frame is its amodal box)
    bgr: np.ndarray  # [h, w, 3] uint8 its colours, BGR as OpenCV writes them
    area: int  # pixels in mask


@dataclass
class Mover:
    sprite: Sprite
    x: float  # world position of the sprite's centre, pixels
    y: float
    vx: float  # pixels a frame
    vy: float
    speed: float  # the speed it keeps to
    depth: float  # larger is farther: drawn first
    track_id: int = 0  # given when the object first shows in the view
    waited: int = 0  # frames spent outside the view before it first showed


# ------------------------------------------------------------------------------------------ appearance

def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    pixel = np.array([[[round(hue * 180) % 180, round(saturation * 255), round(value * 255)]]], dtype=np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def make_sprite(rng: np.random.Generator, size: float, hue: float) -> Sprite:
    """One object of size ``size`` (the square root of its area, pixels) and base ``hue`` in [0, 1): a shape
    outline stretched taller, coloured with one of four patterns, a top-lit shading and a dark rim."""
    cls = int(rng.integers(len(SHAPES)))
    stretch = math.sqrt(rng.uniform(1.0, 1.8))  # x / stretch, y * stretch: the same area, taller
    r = size / math.sqrt(_unit_area(cls))
    points = [(x / stretch, y * stretch) for x, y in _outline(cls, 0.0, 0.0, r, rng.uniform(0, 2 * math.pi))]
    half = max(max(abs(x), abs(y)) for x, y in points) + 2
    mask = _rasterise([(x + half, y + half) for x, y in points], math.ceil(2 * half))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    mask = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = mask.shape

    base = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    other = _hsv((hue + rng.uniform(0.25, 0.75)) % 1.0, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(3, round(size * rng.uniform(0.15, 0.3)))
    pattern = int(rng.integers(4))
    second = [np.zeros((h, w), bool), (yy // period) % 2 == 1, yy > h * rng.uniform(0.35, 0.65), (xx // period) % 2 == 1][pattern]
    bgr = np.where(second[..., None], other, base) * (1.15 - 0.3 * yy / max(h - 1, 1))[..., None]
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    rim = mask & ~inner.astype(bool)
    bgr[rim] *= 0.45
    return Sprite(mask, np.clip(bgr, 0, 255).astype(np.uint8), int(mask.sum()))


def _world(rng: np.random.Generator, photos: list[np.ndarray], side: int) -> np.ndarray:
    """[side, side, 3] uint8 BGR (side even): 2 x 2 tiles cut from the photos, unevenly lit."""
    half = side // 2
    tiles = []
    for _ in range(4):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        crop = int(min(h, w) * rng.uniform(0.6, 1.0))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        tile = photo[y:y + crop, x:x + crop]
        tile = tile[:, ::-1] if rng.random() < 0.5 else tile
        tiles.append(cv2.resize(np.ascontiguousarray(tile), (half, half), interpolation=cv2.INTER_LINEAR))
    world = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    world = light_and_noise(rng, world.astype(np.float32))
    return np.ascontiguousarray(world[..., ::-1])


def _occluders(rng: np.random.Generator, side: int, seen: tuple[int, int, int, int], size: float,
               view_width: int) -> tuple[np.ndarray, np.ndarray]:
    """World-fixed occluders inside ``seen`` (x0, y0, x1, y1: the part of the world the camera ever shows):
    (mask [side, side] bool, colours [side, side, 3] uint8 BGR). The first is always a pillar."""
    x0, y0, x1, y1 = seen
    mask = np.zeros((side, side), bool)
    bgr = np.zeros((side, side, 3), np.float32)
    for k in range(int(rng.integers(2, 4))):
        kind = "pillar" if k == 0 else rng.choice(["pillar", "beam", "bush"], p=[0.5, 0.25, 0.25])
        grey = rng.uniform(50, 170)
        colour = grey + rng.uniform(-25, 25, 3)
        if kind == "pillar":  # full height, shaded like a cylinder
            width = size * rng.uniform(0.9, 1.8)
            left = int(rng.uniform(x0, max(x0 + 1, x1 - width)))
            right = min(side, left + round(width))
            u = (np.arange(left, right) - left + 0.5) / max(right - left, 1)
            shade = (0.55 + 0.45 * np.sin(np.pi * u))[None, :, None]
            mask[:, left:right] = True
            bgr[:, left:right] = colour * shade
        elif kind == "beam":  # a horizontal bar across part of the view
            height, length = size * rng.uniform(0.8, 1.3), view_width * rng.uniform(0.25, 0.5)
            top = int(rng.uniform(y0, max(y0 + 1, y1 - height)))
            left = int(rng.uniform(x0 - length / 2, max(x0, x1 - length / 2)))
            rows, cols = slice(top, min(side, top + round(height))), slice(max(0, left), min(side, left + round(length)))
            mask[rows, cols] = True
            v = (np.arange(rows.start, rows.stop) - top + 0.5) / max(rows.stop - top, 1)
            bgr[rows, cols] = colour * (0.6 + 0.4 * np.sin(np.pi * v))[:, None, None]
        else:  # a bush: a dark green blob with a wobbly edge
            radius = size * rng.uniform(0.9, 1.4)
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            top, left = max(0, int(cy - 1.5 * radius)), max(0, int(cx - 1.5 * radius))
            yy, xx = np.mgrid[top:min(side, int(cy + 1.5 * radius)), left:min(side, int(cx + 1.5 * radius))]
            angle = np.arctan2(yy - cy, xx - cx)
            edge = radius * (1 + sum(rng.uniform(0, 0.12) * np.cos(n * angle + rng.uniform(0, 2 * np.pi)) for n in (3, 5, 7)))
            blob = np.hypot(yy - cy, xx - cx) <= edge
            window = (slice(top, top + blob.shape[0]), slice(left, left + blob.shape[1]))
            leaves = np.array([rng.uniform(20, 60), rng.uniform(70, 130), rng.uniform(20, 70)], np.float32)
            mask[window] |= blob
            bgr[window][blob] = leaves * rng.uniform(0.7, 1.3, (int(blob.sum()), 1))
    return mask, np.clip(bgr, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ motion

def _camera_path(rng: np.random.Generator, frames: int, side: int, width: int, height: int) -> np.ndarray:
    """[frames, 2] int: the view's top-left corner (x, y) in the world, a slow pan that turns now and then."""
    limit = np.array([side - width, side - height], np.float64)
    speed = rng.uniform(0.001, 0.003) * width
    position = rng.uniform(0.2, 0.8, 2) * limit
    heading = rng.uniform(0, 2 * math.pi)
    target = speed * np.array([math.cos(heading), math.sin(heading)])
    velocity = target.copy()
    path = np.zeros((frames, 2), np.int64)
    for t in range(frames):
        path[t] = np.rint(position)
        if rng.random() < 1 / 50:
            heading += rng.normal(0, 1.2)
            target = speed * np.array([math.cos(heading), math.sin(heading)])
        velocity = velocity + 0.1 * (target - velocity)
        position = position + velocity
        for axis in (0, 1):  # bounce off the world's edges
            if not 0 <= position[axis] <= limit[axis]:
                position[axis] = min(max(position[axis], 0.0), limit[axis])
                velocity[axis], target[axis] = -velocity[axis], -target[axis]
    return path


def _drift(rng: np.random.Generator, frames: int, amplitudes: tuple[float, float]) -> np.ndarray:
    """[frames] float: 1 plus two slow sinusoids, for light that changes smoothly over the sequence."""
    t = np.arange(frames)
    out = np.ones(frames)
    for amplitude, periods in zip(amplitudes, ((120, 400), (40, 120))):
        out += rng.uniform(0.3, 1.0) * amplitude * np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi))
    return out


class Scene:
    """One sequence being simulated: the world, its occluders, the camera path and the objects alive.
    ``frame(t)``, called for t = 0, 1, 2, … in turn, advances to frame t and returns (image [H, W, 3] uint8 BGR,
    [(track id, x, y, w, h, visibility)] sorted by id: every object whose box reaches into the image, the box
    clipped to it in whole pixels, top-left xywh)."""

    def __init__(self, seed: list[int], photos: list[np.ndarray], width: int, height: int, frames: int, objects: float):
        scene, self.motion, noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        self.width, self.height = width, height
        side = 2 * math.ceil(WORLD_SCALE * max(width, height) / 2)
        self.world = _world(scene, photos, side)
        self.camera = _camera_path(scene, frames, side, width, height)
        self.size = height * scene.uniform(0.065, 0.1)
        seen = (*self.camera.min(axis=0), *(self.camera.max(axis=0) + (width, height)))
        self.occ_mask, self.occ_bgr = _occluders(scene, side, seen, self.size, width)
        self.gain, self.contrast = _drift(scene, frames, (0.12, 0.05)), _drift(scene, frames, (0.10, 0.04))
        margin = 32
        self.noise = np.clip(128 + noise.normal(0, scene.uniform(2, 6), (height + margin, width + margin, 3)),
                             0, 255).astype(np.uint8)
        self.noise_offsets = noise.integers(0, margin, (frames, 2))
        self.target = max(1, round(objects * scene.uniform(0.7, 1.3)))
        self.hue = scene.uniform(0, 1)
        self.movers: list[Mover] = []
        self.next_id = 1
        self.t = 0  # the next frame
        for _ in range(self.target):
            self.movers.append(self._spawn(0, inside=True))

    # 1) births: inside the view at the start, through its borders later, a third of them aimed at a crossing
    def _spawn(self, t: int, inside: bool) -> Mover:
        rng = self.motion
        sprite = make_sprite(rng, self.size * rng.uniform(0.85, 1.15), self.hue)
        self.hue = (self.hue + 0.618034) % 1.0  # golden-ratio steps: consecutive objects far apart in hue
        speed = math.exp(rng.uniform(math.log(0.003), math.log(0.012))) * self.width
        cam = self.camera[t].astype(np.float64)
        view = np.array([self.width, self.height], np.float64)
        if inside:
            position = cam + rng.uniform(0.05, 0.95, 2) * view
            heading = rng.uniform(0, 2 * math.pi)
            velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        else:
            h, w = sprite.mask.shape
            along = rng.uniform(0, 2 * (view[0] + view[1]))
            if along < view[0]:  # top, bottom, left, right; ``inward`` is the border's normal into the view
                position, inward = cam + (along, -h / 2), (0.0, 1.0)
            elif along < 2 * view[0]:
                position, inward = cam + (along - view[0], view[1] + h / 2), (0.0, -1.0)
            elif along < 2 * view[0] + view[1]:
                position, inward = cam + (-w / 2, along - 2 * view[0]), (1.0, 0.0)
            else:
                position, inward = cam + (view[0] + w / 2, along - 2 * view[0] - view[1]), (-1.0, 0.0)
            heading = math.atan2(inward[1], inward[0]) + rng.uniform(-0.7, 0.7)  # at least 50 degrees off the border
            direction = np.array([math.cos(heading), math.sin(heading)])
            shown = [m for m in self.movers if m.track_id]
            if shown and rng.random() < 1 / 3:  # aim at where an object in view will be when this one gets there
                other = shown[int(rng.integers(len(shown)))]
                where, dv = np.array([other.x, other.y]), np.array([other.vx, other.vy])
                eta = np.linalg.norm(where - position) / speed
                for _ in range(3):
                    eta = np.linalg.norm(where + dv * eta - position) / speed
                meet = where + dv * eta
                aim = (meet - position) / max(np.linalg.norm(meet - position), 1e-6)
                if eta < 200 and np.all((meet > cam + 0.1 * view) & (meet < cam + 0.9 * view)) and aim @ inward > 0.64:
                    direction = aim
            velocity = speed * direction
        return Mover(sprite, float(position[0]), float(position[1]), float(velocity[0]), float(velocity[1]), speed,
                     depth=float(rng.random()))

    # 2) motion: near-constant velocity, small random accelerations, the speed pulled back to its own
    def _move(self) -> None:
        if not self.movers:
            return
        kicks = self.motion.normal(0, 0.04, (len(self.movers), 2))
        for mover, kick in zip(self.movers, kicks):
            vx, vy = mover.vx + kick[0] * mover.speed, mover.vy + kick[1] * mover.speed
            pull = 1 + 0.1 * (mover.speed / max(math.hypot(vx, vy), 1e-6) - 1)
            mover.vx, mover.vy = vx * pull, vy * pull
            mover.x += mover.vx
            mover.y += mover.vy

    def _window(self, mover: Mover, cam: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
        """The sprite's top-left corner (x, y) in the image and the clipped box (x0, y0, x1, y1); None if outside."""
        h, w = mover.sprite.mask.shape
        left, top = round(mover.x - w / 2) - int(cam[0]), round(mover.y - h / 2) - int(cam[1])
        box = (max(left, 0), max(top, 0), min(left + w, self.width), min(top + h, self.height))
        return (left, top, *box) if box[0] < box[2] and box[1] < box[3] else None

    def frame(self, t: int) -> tuple[np.ndarray, list[tuple[int, int, int, int, int, float]]]:
        assert t == self.t, f"frames are simulated in order: next is {self.t}, not {t}"
        self.t += 1
        if t > 0:
            self._move()
            active = sum(1 for m in self.movers if m.track_id or m.waited < 5)
            for _ in range(self.motion.poisson(0.03 + 0.2 * max(0, self.target - active))):
                self.movers.append(self._spawn(t, inside=False))
        cam = self.camera[t]
        windows = [(m, self._window(m, cam)) for m in self.movers]
        # 3) objects leave for good once outside after having shown; one that never comes in is dropped
        for mover, window in windows:
            if window is None and not mover.track_id:
                mover.waited += 1
        self.movers = [m for m, window in windows if window is not None or (not m.track_id and m.waited < 60)]
        shown = sorted(((m, w) for m, w in windows if w is not None), key=lambda item: -item[0].depth)

        # 4) paint far to near, then the occluders; visibility from who owns each pixel
        cx, cy = int(cam[0]), int(cam[1])
        image = self.world[cy:cy + self.height, cx:cx + self.width].copy()
        owner = np.full((self.height, self.width), -1, np.int16)
        for k, (mover, (left, top, x0, y0, x1, y1)) in enumerate(shown):
            part = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
            mask = mover.sprite.mask[part]
            np.copyto(image[y0:y1, x0:x1], mover.sprite.bgr[part], where=mask[..., None])
            owner[y0:y1, x0:x1][mask] = k
        occluded = self.occ_mask[cy:cy + self.height, cx:cx + self.width]
        np.copyto(image, self.occ_bgr[cy:cy + self.height, cx:cx + self.width], where=occluded[..., None])
        owner[occluded] = -1
        visible = np.bincount(owner.ravel().astype(np.int64) + 1, minlength=len(shown) + 1)[1:]

        boxes = []
        for k, (mover, (_, _, x0, y0, x1, y1)) in enumerate(shown):
            if not mover.track_id:
                mover.track_id, self.next_id = self.next_id, self.next_id + 1
            boxes.append((mover.track_id, x0, y0, x1 - x0, y1 - y0, float(visible[k]) / mover.sprite.area))

        # 5) the light drifts (contrast about mid-grey, then gain) and fresh noise (stored around 128) is added
        gain, contrast = self.gain[t], self.contrast[t]
        ny, nx = self.noise_offsets[t]
        noise = self.noise[ny:ny + self.height, nx:nx + self.width]
        image = cv2.addWeighted(image, gain * contrast, noise, 1.0, gain * 128 * (1 - contrast) - 128)
        return image, sorted(boxes)


# ------------------------------------------------------------------------------------------- detections

def public_detections(rng: np.random.Generator, boxes: list[tuple[int, int, int, int, int, float]], width: int,
                      height: int, size: float, fp_rate: float) -> tuple[list[tuple[float, float, float, float, float]], int]:
    """Noisy detections of one frame's ground truth (see the module docstring): ([(x, y, w, h, score)] in a
    random order, how many of them are true)."""
    found = []
    for _, x, y, w, h, vis in boxes:
        if rng.random() >= 0.95 * min(max((vis - 0.1) / 0.5, 0.0), 1.0):
            continue
        jitter = rng.normal(0, 0.03 + 0.06 * (1 - vis), 4) * (w, h, w, h)
        x1, y1 = max(0.0, x + jitter[0]), max(0.0, y + jitter[1])
        x2, y2 = min(float(width), x + w + jitter[2]), min(float(height), y + h + jitter[3])
        score = 0.1 + 0.85 * min(max((vis - 0.2) / 0.6, 0.0), 1.0) + rng.normal(0, 0.07)
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            found.append((x1, y1, x2 - x1, y2 - y1, min(max(score, 0.01), 0.99)))
    true = len(found)
    for _ in range(rng.poisson(fp_rate)):
        side, stretch = size * rng.uniform(0.9, 1.6), math.sqrt(rng.uniform(1.0, 1.8))  # boxes are larger than sqrt(area)
        w, h = side / stretch, side * stretch
        x1, y1 = max(0.0, rng.uniform(-w / 2, width - w / 2)), max(0.0, rng.uniform(-h / 2, height - h / 2))
        x2, y2 = min(float(width), x1 + w), min(float(height), y1 + h)
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            found.append((x1, y1, x2 - x1, y2 - y1, 0.05 + 0.55 * rng.random() ** 1.5))
    return [found[i] for i in rng.permutation(len(found))], true


# ------------------------------------------------------------------------------------------------ files

def _write_sequence(folder: Path, name: str, seed: list[int], photos: list[np.ndarray], width: int, height: int,
                    frames: int, objects: float, tick) -> dict:
    scene = Scene(seed, photos, width, height, frames, objects)
    detect = np.random.default_rng([*seed, 7])
    fp_rate = detect.uniform(1.0, 3.0)
    (folder / "img1").mkdir(parents=True)
    gt_lines, det_lines, ids = [], [], set()
    visibility, true, false = 0.0, 0, 0
    for t in range(frames):
        image, boxes = scene.frame(t)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        (folder / "img1" / f"{t + 1:06d}.jpg").write_bytes(jpeg.tobytes())
        for track_id, x, y, w, h, vis in boxes:
            gt_lines.append(f"{t + 1},{track_id},{x},{y},{w},{h},1,1,{vis:.5f}\n")
            ids.add(track_id)
            visibility += vis
        found, n_true = public_detections(detect, boxes, width, height, scene.size, fp_rate)
        det_lines += [f"{t + 1},-1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},{score:.4f},-1,-1,-1\n" for x, y, w, h, score in found]
        true, false = true + n_true, false + len(found) - n_true
        tick()
    (folder / "gt").mkdir()
    (folder / "det").mkdir()
    (folder / "gt" / "gt.txt").write_text("".join(gt_lines))
    (folder / "det" / "det.txt").write_text("".join(det_lines))
    write_seqinfo(folder, SeqInfo(name=name, frame_rate=FPS, seq_length=frames, width=width, height=height))
    return {"ids": len(ids), "boxes": len(gt_lines), "visibility": visibility, "true": true, "false": false}


def _check_args(n_sequences: int, frames: int, width: int, height: int, objects: float, seed: int,
                test_fraction: float) -> None:
    if n_sequences < 1:
        raise CnnkitError(f"--n {n_sequences}: need at least 1 sequence")
    if not 2 <= frames <= 100_000:
        raise CnnkitError(f"--frames {frames}: out of range", "use 2 to 100000 frames a sequence")
    if not (96 <= width <= 4096 and 48 <= height <= 4096):
        raise CnnkitError(f"--imgsz {width} (height {height}): out of range",
                          "use a width of 96 to 4096 pixels, a height of 48 or more")
    if not 1 <= objects <= 200:
        raise CnnkitError(f"objects={objects}: out of range", "use 1 to 200 objects on screen on average")
    if seed < 0:
        raise CnnkitError(f"--seed {seed}: must not be negative")
    if not 0 <= test_fraction < 1:
        raise CnnkitError(f"test_fraction={test_fraction}: out of range", "use a fraction in [0, 1), e.g. 0.5")


def synth_mot(out: str | Path, n_sequences: int = 8, frames: int = 150, width: int = 640, height: int = 360,
              objects: float = 12, seed: int = 0, test_fraction: float = 0.5, force: bool = False,
              progress: bool = True) -> dict:
    """Write a synthetic MOTChallenge benchmark into ``out`` (``train/`` and ``test/`` sequence folders; see the
    module docstring). At least one sequence goes to each split when ``n_sequences`` >= 2 and ``test_fraction`` > 0.
    Refuses a non-empty ``out`` unless ``force`` (then it is replaced as a whole, once the new one is complete).

    Returns ``{"root", "splits": {split: [names]}, "sequences": {split: count}, "frames" (all sequences), "width",
    "height", "fps", "ids", "boxes", "mean_visibility", "detections", "detection_recall",
    "false_positives_per_frame", "seconds"}``."""
    _check_args(n_sequences, frames, width, height, objects, seed, test_fraction)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "pass a new --out, or --force to replace it")
    started = time.perf_counter()
    n_test = int(n_sequences * test_fraction)  # rounded down: an odd count gives train the extra one
    if test_fraction > 0 and n_sequences >= 2:
        n_test = min(max(n_test, 1), n_sequences - 1)
    n_test = min(n_test, n_sequences - 1)
    test = set(np.random.default_rng([seed, n_sequences, 2]).permutation(n_sequences)[:n_test].tolist())
    names = [f"{PREFIX}-{i + 1:02d}" for i in range(n_sequences)]
    splits = {"train": [n for i, n in enumerate(names) if i not in test], "test": [n for i, n in enumerate(names) if i in test]}
    photos = load_photos(more=True)

    from cnnkit.console import progress_bar

    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    totals = {"ids": 0, "boxes": 0, "visibility": 0.0, "true": 0, "false": 0}
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root.parent, root.name)
    try:
        with bar if bar is not None else nullcontext():
            task = bar.add_task("synth mot", total=n_sequences * frames, info="", rate="") if bar is not None else None

            drawn = [0.0, 0]  # when the bar was last redrawn, frames done

            def tick() -> None:  # redrawn at most 4 times a second
                drawn[1] += 1
                now = time.perf_counter()
                if bar is not None and (now - drawn[0] >= 0.25 or drawn[1] == n_sequences * frames):
                    bar.update(task, completed=drawn[1], rate=f"{drawn[1] / max(now - started, 1e-9):.0f} frames/s")
                    bar.refresh()
                    drawn[0] = now

            for i, name in enumerate(names):
                split = "test" if i in test else "train"
                stats = _write_sequence(tmp / split / name, name, [seed, i], photos, width, height, frames, objects, tick)
                for key in totals:
                    totals[key] += stats[key]
        for split in splits:  # an empty split is still a folder: the layout does not depend on --n
            (tmp / split).mkdir(exist_ok=True)
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    boxes = max(totals["boxes"], 1)
    return {"root": str(root), "splits": splits, "sequences": {s: len(v) for s, v in splits.items()},
            "frames": n_sequences * frames, "width": width, "height": height, "fps": FPS, "ids": totals["ids"],
            "boxes": totals["boxes"], "mean_visibility": round(totals["visibility"] / boxes, 4),
            "detections": totals["true"] + totals["false"], "detection_recall": round(totals["true"] / boxes, 4),
            "false_positives_per_frame": round(totals["false"] / (n_sequences * frames), 3),
            "seconds": round(time.perf_counter() - started, 2)}
