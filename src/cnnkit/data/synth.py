"""Synthetic datasets users can generate in seconds: ``cnnkit data synth shapes`` and ``cnnkit data synth cells``.

    cnnkit data synth shapes --task detect --n 500 --imgsz 320 --out data/shapes
    cnnkit data synth shapes --task segment --n 200 --imgsz 256 --out data/shapes_seg
    cnnkit data synth cells --n 200 --imgsz 256 --out data/cells

``shapes``: five shape classes (circle, square, triangle, star, cross) in varied colours, sizes
(square root of the area from about 6% to 40% of the side, so COCO's small, medium and large objects all occur at 320 px) and
rotations, 1-6 per image, drawn over random crops of real photos (scikit-learn's two sample photos). Later shapes partly hide earlier ones; an object more than 80%
hidden is not drawn at all, so every visible shape is labelled. Then an uneven illumination gradient
and Gaussian noise cover the whole image.

``cells``: fluorescence-microscopy-like single-channel 16-bit images with 12-bit counts (a camera offset
of about 100, background a few hundred, the brightest cells near 4000), so naive ``/ 65535`` scaling
shows an almost black image and 8-bit clipping saturates. 5-40 cells per image, as many as cover a
random 12%-45% of it: ellipses whose boundary wobbles by a few low harmonics, mean radius 3%-9% of the
side, random orientation and brightness (a quarter of them dim), a brighter nucleus-like spot or a
smooth falloff inside, and a faint cellular texture. Cells touch and overlap: later ones cover earlier
ones, and a cell with less than 30% of itself visible (hidden, or outside the image) is not drawn, so
every visible cell is labelled. Then slight optical blur, uneven illumination (a gradient times a wide
Gaussian), Poisson shot noise and Gaussian read noise.

Layouts written into OUT (built in a temporary sibling folder and renamed into place at the end):

- ``shapes --task detect``: COCO (``annotations/{train,val}.json``, ``file_name`` relative to ``images/``)
  and YOLO (``data.yaml``, ``labels/SPLIT/NAME.txt`` as ``class cx cy w h`` normalised) sharing
  ``images/SPLIT/NAME.png``. Boxes are a shape's full extent even where another shape hides part of it.
- ``shapes --task segment``: ``images/SPLIT/NAME.png``, ``masks/SPLIT/NAME.png`` (uint8 class index of the
  visible shape, 0 = background) and ``classes.txt`` (one name per line, ``background`` first).
- ``cells`` (always segmentation; ``--task`` is not needed): ``images/SPLIT/NAME.png`` (16-bit grey),
  ``masks/SPLIT/NAME.png`` (uint8: 0 background, 1 cell), ``classes.txt`` (``background``, ``cell``),
  ``instances/SPLIT/NAME.png`` (uint16 instance ids 1..K, 0 = background) and COCO instances
  ``annotations/{train,val}.json``: one annotation per visible cell, its box, area and compressed-RLE
  segmentation all of the visible part.

The same seed gives byte-identical files; each image draws from its own generator seeded by
(seed, image index), so the first K images do not depend on --n.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

KINDS = ("shapes", "cells")
TASKS = ("detect", "segment")
SHAPES = ("circle", "square", "triangle", "star", "cross")
MIN_VISIBLE = 0.2  # an object with less than this fraction of its pixels visible is not drawn
SIZE_RANGE = (0.06, 0.40)  # sqrt(a shape's area) as a fraction of the image side
MAX_OBJECTS = 6

CELL_COVER = (0.12, 0.45)  # share of the image the cells' areas add up to (before overlap), so the count follows their size
CELL_COUNT = (5, 40)
CELL_RADIUS = (0.03, 0.09)  # a cell's mean radius as a fraction of the image side
CELL_MIN_VISIBLE = 0.3  # a cell with less than this fraction of its pixels visible is not drawn
FULL_SCALE = 4095  # a 12-bit camera


@dataclass
class Shape:
    cls: int  # index into SHAPES
    polygon: list[tuple[float, float]]  # vertices in pixels, (x, y)
    colour: tuple[int, int, int]
    mask: np.ndarray  # [S, S] bool: the full shape, as rasterised


@dataclass
class Cell:
    y0: int  # image row and column of the top-left corner of ``mask`` and ``signal``; negative where the cell
    x0: int  # crosses the top or left border
    mask: np.ndarray  # [h, w] bool: the whole cell, also any part outside the image
    signal: np.ndarray  # [h, w] float32: its brightness above the background in camera counts, 0 outside it


# ---------------------------------------------------------------------------------------- geometry

def _outline(cls: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of shape ``cls`` inscribed in the circle (cx, cy, r), rotated by ``angle`` radians."""
    name = SHAPES[cls]
    if name == "circle":
        points = [(1.0, 2 * math.pi * k / 48) for k in range(48)]
    elif name == "square":
        points = [(1.0, math.pi / 4 + math.pi / 2 * k) for k in range(4)]
    elif name == "triangle":
        points = [(1.0, -math.pi / 2 + 2 * math.pi / 3 * k) for k in range(3)]
    elif name == "star":
        points = [(1.0 if k % 2 == 0 else 0.45, -math.pi / 2 + math.pi / 5 * k) for k in range(10)]
    else:  # cross: a plus sign whose arms are 0.36 of its extent wide
        a, b = 0.18, 1.0
        xy = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]
        points = [(math.hypot(x, y) / math.hypot(a, b), math.atan2(y, x)) for x, y in xy]
    return [(cx + r * rho * math.cos(theta + angle), cy + r * rho * math.sin(theta + angle)) for rho, theta in points]


def _unit_area(cls: int) -> float:
    """Area of shape ``cls`` inscribed in the unit circle (shoelace formula)."""
    xy = np.array(_outline(cls, 0.0, 0.0, 1.0, 0.0))
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _rasterise(polygon: list[tuple[float, float]], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return np.asarray(canvas, dtype=bool)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """[H, W] bool -> the tight box of its pixels as COCO [x, y, w, h] in pixels (pixel edges, not centres)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)


# ------------------------------------------------------------------------------------ backgrounds

def load_photos(more: bool = False) -> list[np.ndarray]:
    """Real photos that ship with the installed libraries: scikit-learn's two sample photos and, with
    ``more``, four of scikit-image's. [H, W, 3] uint8 each. ``shapes`` keeps the two, so the built-in
    detection and segmentation sets (and the figures measured on them) stay as they were."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]
    if not more:
        return photos
    import skimage.data as skdata

    # bundled with the package (no download)
    return photos + [np.asarray(getattr(skdata, name)(), dtype=np.uint8) for name in ("astronaut", "coffee", "chelsea", "rocket")]


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(max(16, min(h, w) // 4), min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from ``under`` ([K, 3] background pixels it will cover):
    the best of a few draws by luminance and colour distance from their mean."""
    mean = under.reshape(-1, 3).mean(axis=0) if under.size else np.full(3, 128.0)
    best, best_score = None, -1.0
    for _ in range(8):
        colour = rng.integers(0, 256, 3).astype(np.float64)
        score = abs(_luma(colour) - _luma(mean)) + 0.3 * float(np.abs(colour - mean).max())
        if score > best_score:
            best, best_score = colour, score
        if score >= 90:
            break
    return tuple(int(c) for c in best)


# ---------------------------------------------------------------------------------------- one image

def make_shapes_image(rng: np.random.Generator, photos: list[np.ndarray],
                      size: int) -> tuple[np.ndarray, list[Shape], np.ndarray]:
    """One synthetic image: (image [S, S, 3] uint8, shapes drawn in order, owner map [S, S] int16
    = index into shapes of the visible shape at each pixel, -1 for background)."""
    image = _background(rng, photos, size).astype(np.float32)
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(SHAPES)))
        # size = sqrt(area) / side, log-uniform: at 320 px about 27% small, 58% medium, 15% large (COCO)
        side = math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1]))) * size
        r = min(max(3.0, side / math.sqrt(_unit_area(cls))), 0.48 * size)
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)  # whole shape inside the image
        polygon = _outline(cls, cx, cy, r, rng.uniform(0, 2 * math.pi))
        mask = _rasterise(polygon, size)
        if not mask.any():
            continue
        shapes.append(Shape(cls, polygon, (0, 0, 0), mask))

    # 1) visibility: later shapes hide earlier ones. Dropping a mostly hidden shape only uncovers
    # the shapes below it, so one pass from the top decides which are kept.
    covered = np.zeros((size, size), dtype=bool)
    kept: list[Shape] = []
    for shape in reversed(shapes):
        visible = shape.mask & ~covered
        if visible.sum() >= MIN_VISIBLE * shape.mask.sum():
            kept.append(shape)
            covered |= shape.mask
    kept.reverse()

    # 2) paint bottom to top, each colour chosen against what it covers
    owner = np.full((size, size), -1, dtype=np.int16)
    for k, shape in enumerate(kept):
        shape.colour = _colour(rng, image[shape.mask])
        image[shape.mask] = shape.colour
        owner[shape.mask] = k

    return light_and_noise(rng, image), kept, owner


def light_and_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """[S, S, 3] float32 -> uint8 under uneven illumination (a linear gradient in a random direction times a
    soft bright spot, and an overall exposure) with Gaussian sensor noise."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta)
    gain = 1.0 + rng.uniform(0.2, 0.7) * ramp
    sx, sy, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.5)
    gain *= 1.0 + rng.uniform(0.0, 0.35) * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * sigma**2))
    image = image * (gain[..., None] * rng.uniform(0.75, 1.1))
    image += rng.normal(0.0, rng.uniform(2.0, 12.0), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ cells

CAMERA_OFFSET = 100.0  # counts a camera adds to every pixel, so read noise never clips at 0


def _cell(rng: np.random.Generator, cx: float, cy: float, r: float) -> Cell:
    """One cell of mean radius ``r`` pixels centred at (cx, cy): an ellipse whose boundary wobbles by harmonics
    2-5 of the angle, lit as a smooth falloff from the centre plus a nucleus-like spot."""
    aspect = rng.uniform(1.0, 1.7)
    a, b = r * math.sqrt(aspect), r / math.sqrt(aspect)  # semi-axes with a * b = r * r: the same area as the circle
    angle = rng.uniform(0, math.pi)
    orders = np.arange(2, 6, dtype=np.float32)[:, None, None]
    wobble = rng.uniform(0.0, 0.16, (4, 1, 1)).astype(np.float32) / orders  # smaller for higher orders: smooth, not jagged
    phase = rng.uniform(0, 2 * math.pi, (4, 1, 1)).astype(np.float32)
    reach = a * (1.0 + float(wobble.sum())) + 1.0
    y0, x0 = math.floor(cy - reach), math.floor(cx - reach)
    side = math.ceil(2 * reach) + 2
    yy, xx = np.mgrid[y0:y0 + side, x0:x0 + side].astype(np.float32)
    cos, sin = math.cos(angle), math.sin(angle)
    p = ((xx - cx) * cos + (yy - cy) * sin) / a  # along the long axis, 1 on the unperturbed ellipse
    q = ((yy - cy) * cos - (xx - cx) * sin) / b
    edge = 1.0 + (wobble * np.cos(orders * np.arctan2(q, p) + phase)).sum(axis=0)
    d = np.hypot(p, q) / edge  # 0 at the centre, 1 on the wobbly boundary
    mask = d <= 1.0

    if rng.random() < 0.25:  # dim cells, barely above the background: the ones a model misses first
        peak = rng.uniform(150, 500)
    else:
        peak = math.exp(rng.uniform(math.log(700), math.log(2800)))  # at most ~4000 counts with texture, haze and offset
    body = rng.uniform(0.3, 0.9)  # share of the peak in the smooth body; the rest is the nucleus
    nx, ny = rng.uniform(-0.3, 0.3, 2)
    spread = rng.uniform(0.25, 0.45)
    nucleus = np.exp(-((p - nx) ** 2 + (q - ny) ** 2) / (2 * spread**2))
    signal = peak * (body * (1.0 - 0.35 * d * d) + (1.0 - body) * nucleus) * mask
    return Cell(y0, x0, mask, signal.astype(np.float32))


def _clip(cell: Cell, size: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(image slices, cell slices) of the part of ``cell`` inside the image; None if no part is."""
    h, w = cell.mask.shape
    top, left = max(cell.y0, 0), max(cell.x0, 0)
    bottom, right = min(cell.y0 + h, size), min(cell.x0 + w, size)
    if top >= bottom or left >= right:
        return None
    inside = (slice(top, bottom), slice(left, right))
    return inside, (slice(top - cell.y0, bottom - cell.y0), slice(left - cell.x0, right - cell.x0))


def make_cells_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic fluorescence-microscopy image: (image [S, S] uint16 camera counts, 12-bit range;
    instance ids [S, S] uint16, 0 = background, 1..K = the visible cells in drawing order)."""
    from scipy import ndimage

    # 1) cells of one typical size per image (one cell line), as many as cover a random share of it;
    # some are put next to an earlier cell, so clusters form where cells touch and overlap
    typical = rng.uniform(0.04, 0.075)
    cover = rng.uniform(*CELL_COVER) * size * size
    cells: list[Cell] = []
    placed: list[tuple[float, float, float]] = []  # (cx, cy, r) of each cell
    area = 0.0
    while len(cells) < CELL_COUNT[1] and (area < cover or len(cells) < CELL_COUNT[0]):
        r = max(2.0, float(np.clip(typical * math.exp(rng.normal(0.0, 0.2)), *CELL_RADIUS)) * size)
        if placed and rng.random() < 0.4:
            px, py, pr = placed[int(rng.integers(len(placed)))]
            theta, gap = rng.uniform(0, 2 * math.pi), (pr + r) * rng.uniform(0.7, 1.0)
            cx, cy = px + gap * math.cos(theta), py + gap * math.sin(theta)
        else:
            cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        cells.append(_cell(rng, cx, cy, r))
        placed.append((cx, cy, r))
        area += math.pi * r * r

    # 2) visibility: later cells cover earlier ones. As for shapes, dropping a mostly hidden cell only
    # uncovers the cells below it, so one pass from the top decides. A cell mostly outside the image
    # counts as hidden too: its sliver at the border would be a label nobody could check.
    covered = np.zeros((size, size), dtype=bool)
    kept: list[Cell] = []
    for cell in reversed(cells):
        clipped = _clip(cell, size)
        if clipped is None:
            continue
        inside, window = clipped
        visible = cell.mask[window] & ~covered[inside]
        if visible.sum() >= CELL_MIN_VISIBLE * cell.mask.sum():
            kept.append(cell)
            covered[inside] |= cell.mask[window]
    kept.reverse()

    # 3) paint bottom to top: each pixel shows, and belongs to, the topmost cell over it
    labels = np.zeros((size, size), dtype=np.uint16)
    signal = np.zeros((size, size), dtype=np.float32)
    for k, cell in enumerate(kept, start=1):
        inside, window = _clip(cell, size)
        mask = cell.mask[window]
        labels[inside][mask] = k
        signal[inside][mask] = cell.signal[window][mask]

    # 4) a faint blotchy texture inside the cells, then the optics: slight blur plus a little out-of-focus haze
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), max(1.0, size / 200))
    signal *= np.clip(1.0 + 0.12 * grain / (grain.std() + 1e-6), 0.6, 1.2)
    signal = (ndimage.gaussian_filter(signal, rng.uniform(0.7, 1.2))
              + 0.06 * ndimage.gaussian_filter(signal, 0.03 * size, truncate=3.0))  # haze: its tails need no precision

    # 5) uneven illumination: a gradient in a random direction times a wide Gaussian, brightest point = 1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    theta = rng.uniform(0, 2 * math.pi)
    field = 1.0 + rng.uniform(0.2, 0.7) * ((xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta))
    sx, sy, sigma = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.6)
    field *= 1.0 + rng.uniform(0.3, 1.0) * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * sigma**2))
    field /= field.max()

    # 6) the camera: shot noise on the light (background autofluorescence plus cells), then offset and read noise
    light = (rng.uniform(150, 400) + signal) * field
    read_noise = rng.uniform(3.0, 10.0) * rng.standard_normal((size, size), dtype=np.float32)
    counts = rng.poisson(light).astype(np.float32) + CAMERA_OFFSET + read_noise
    return np.clip(np.rint(counts), 0, FULL_SCALE).astype(np.uint16), labels


# ------------------------------------------------------------------------------------- the dataset

def _split(n: int, val_fraction: float, rng: np.random.Generator) -> list[str]:
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    n_val = min(n_val, n - 1)
    splits = np.array(["train"] * n, dtype=object)
    splits[rng.permutation(n)[:n_val]] = "val"
    return list(splits)


def _check_args(kind: str, task: str | None, n: int, imgsz: int, seed: int, val_fraction: float) -> str:
    """Refuse bad arguments; returns the task (None: shapes' default, detect, or the only one cells has, segment)."""
    if kind not in KINDS:
        raise CnnkitError(f"unknown synthetic dataset '{kind}'", f"valid kinds: {', '.join(KINDS)}")
    if kind == "cells":
        if task not in (None, "segment"):
            raise CnnkitError(f"--task {task}: cells writes segmentation labels (semantic masks, instance ids, "
                              "COCO instances)", "leave --task out")
        task = "segment"
    elif task is None:
        task = "detect"
    if task not in TASKS:
        raise CnnkitError(f"--task {task}: not available for '{kind}'", f"valid tasks: {', '.join(TASKS)}")
    if n < 1:
        raise CnnkitError(f"--n {n}: need at least 1 image")
    if not 32 <= imgsz <= 4096:
        raise CnnkitError(f"--imgsz {imgsz}: out of range", "use 32 to 4096 pixels")
    if seed < 0:
        raise CnnkitError(f"--seed {seed}: must not be negative")
    if not 0 <= val_fraction < 1:
        raise CnnkitError(f"--val-fraction {val_fraction}: out of range", "use a fraction in [0, 1), e.g. 0.2")
    return task


def synth_dataset(kind: str, out: str | Path, task: str | None = None, n: int = 500, imgsz: int = 320, seed: int = 0,
                  val_fraction: float = 0.2, force: bool = False, progress: bool = True) -> dict:
    """Generate a synthetic dataset into ``out`` (see the module docstring for the layouts).

    ``task``: for shapes detect (the default, None) or segment; cells always writes segmentation labels.
    Returns a summary: ``{"root", "task", "classes", "images": {split: count}, "objects": count}``.
    Refuses a non-empty existing ``out`` unless ``force`` (then it is replaced as a whole).
    """
    task = _check_args(kind, task, n, imgsz, seed, val_fraction)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "pass a new --out, or --force to replace it")
    photos = load_photos() if kind == "shapes" else []
    splits = _split(n, val_fraction, np.random.default_rng([seed, n, 1]))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root.parent, root.name)
    try:
        if kind == "shapes":
            summary = _write_shapes(tmp, task, splits, photos, imgsz, seed, progress)
        else:
            summary = _write_cells(tmp, splits, imgsz, seed, progress)
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary["root"] = str(root)
    return summary


def _swap_in(tmp: Path, root: Path) -> None:
    """Rename the finished folder to ``root``; an existing ``root`` (empty, or replaced under --force)
    is moved aside first and deleted only once the new one is in place."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old."))
        os.replace(root, old / "data")
    try:
        os.replace(tmp, root)
    except OSError:
        if old is not None:
            os.replace(old / "data", root)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _numbered(splits: list[str], label: str, progress: bool):
    """(index, split, file stem) of each image in turn, counted by a progress bar redrawn at most 4 times a second."""
    from cnnkit.console import progress_bar

    n = len(splits)
    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    started = last_draw = time.perf_counter()
    with bar if bar is not None else nullcontext():
        bar_task = bar.add_task(label, total=n, info="", rate="") if bar is not None else None
        for i, split in enumerate(splits):
            yield i, split, f"{i:06d}"
            now = time.perf_counter()
            if bar is not None and (now - last_draw >= 0.25 or i + 1 == n):
                bar.update(bar_task, completed=i + 1, rate=f"{(i + 1) / max(now - started, 1e-9):.0f} img/s")
                bar.refresh()
                last_draw = now


def _write_coco(tmp: Path, coco: dict, categories: list[dict], description: str, seed: int) -> None:
    """``annotations/{val,train}.json`` from ``coco[split] = {"images": [...], "annotations": [...]}``."""
    (tmp / "annotations").mkdir()
    for split in ("val", "train"):
        doc = {"info": {"description": description, "seed": seed},
               "images": coco[split]["images"], "annotations": coco[split]["annotations"], "categories": categories}
        (tmp / "annotations" / f"{split}.json").write_text(json.dumps(doc) + "\n")


def _write_shapes(tmp: Path, task: str, splits: list[str], photos: list[np.ndarray], size: int, seed: int,
                  progress: bool) -> dict:
    names = ("val", "train")
    for split in names:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / ("labels" if task == "detect" else "masks") / split).mkdir(parents=True)
    coco = {split: {"images": [], "annotations": []} for split in names}
    objects = 0
    for i, split, name in _numbered(splits, "synth shapes", progress):
        image, shapes, owner = make_shapes_image(np.random.default_rng([seed, i]), photos, size)
        Image.fromarray(image, "RGB").save(tmp / "images" / split / f"{name}.png")
        objects += len(shapes)
        if task == "detect":
            _add_detect(tmp, coco[split], split, name, i + 1, shapes, size)
        else:
            classes = np.array([0] + [s.cls + 1 for s in shapes], dtype=np.uint8)
            Image.fromarray(classes[owner + 1], "L").save(tmp / "masks" / split / f"{name}.png")
    if task == "detect":
        categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)]
        _write_coco(tmp, coco, categories, "cnnkit synthetic shapes", seed)
        (tmp / "data.yaml").write_text(
            "# cnnkit data synth shapes: YOLO layout (the COCO one is in annotations/)\n"
            f"path: .\ntrain: images/train\nval: images/val\nnc: {len(SHAPES)}\nnames: [{', '.join(SHAPES)}]\n")
    else:
        (tmp / "classes.txt").write_text("\n".join(("background", *SHAPES)) + "\n")
    return {"task": task, "classes": list(SHAPES), "objects": objects,
            "images": {split: splits.count(split) for split in ("train", "val")}}


def _write_cells(tmp: Path, splits: list[str], size: int, seed: int, progress: bool) -> dict:
    names = ("val", "train")
    for split in names:
        for folder in ("images", "masks", "instances"):
            (tmp / folder / split).mkdir(parents=True)
    coco = {split: {"images": [], "annotations": []} for split in names}
    objects = 0
    for i, split, name in _numbered(splits, "synth cells", progress):
        image, labels = make_cells_image(np.random.default_rng([seed, i]), size)
        # uint16 -> PIL mode I;16, a 16-bit PNG; zlib's fastest level, as the noise hardly compresses anyway
        Image.fromarray(image).save(tmp / "images" / split / f"{name}.png", compress_level=1)
        Image.fromarray((labels > 0).astype(np.uint8)).save(tmp / "masks" / split / f"{name}.png")
        Image.fromarray(labels).save(tmp / "instances" / split / f"{name}.png")
        objects += _add_cells(coco[split], split, name, i + 1, labels)
    _write_coco(tmp, coco, [{"id": 1, "name": "cell", "supercategory": "cell"}], "cnnkit synthetic cells", seed)
    (tmp / "classes.txt").write_text("background\ncell\n")
    return {"task": "segment", "classes": ["cell"], "objects": objects,
            "images": {split: splits.count(split) for split in ("train", "val")}}


def _add_cells(coco: dict, split: str, name: str, image_id: int, labels: np.ndarray) -> int:
    """One COCO annotation per instance id in ``labels``, all of its visible part; returns how many."""
    from pycocotools import mask as mask_utils

    height, width = labels.shape
    coco["images"].append({"id": image_id, "file_name": f"{split}/{name}.png", "width": width, "height": height})
    count = int(labels.max())
    for k in range(1, count + 1):
        visible = labels == k
        rle = mask_utils.encode(np.asfortranarray(visible, dtype=np.uint8))  # pycocotools wants column-major uint8
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id, "category_id": 1, "bbox": list(mask_box(visible)),
            "area": float(visible.sum()), "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })
    return count


def _add_detect(tmp: Path, coco: dict, split: str, name: str, image_id: int, shapes: list[Shape], size: int) -> None:
    coco["images"].append({"id": image_id, "file_name": f"{split}/{name}.png", "width": size, "height": size})
    lines = []
    for shape in shapes:
        x, y, w, h = mask_box(shape.mask)
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id, "category_id": shape.cls + 1, "bbox": [x, y, w, h],
            "area": float(shape.mask.sum()), "iscrowd": 0,
            "segmentation": [[round(v, 2) for point in shape.polygon for v in point]],
        })
        lines.append(f"{shape.cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
    (tmp / "labels" / split / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
