"""Synthetic datasets users can generate in seconds: ``cnnkit data synth shapes``.

    cnnkit data synth shapes --task detect --n 500 --imgsz 320 --out data/shapes
    cnnkit data synth shapes --task segment --n 200 --imgsz 256 --out data/shapes_seg

``shapes``: five shape classes (circle, square, triangle, star, cross) in varied colours, sizes
(square root of the area from about 6% to 40% of the side, so COCO's small, medium and large objects all occur at 320 px) and
rotations, 1-6 per image, drawn over random crops of real photos (scikit-learn's sample photos, plus
scikit-image's when it is installed). Later shapes partly hide earlier ones; an object more than 80%
hidden is not drawn at all, so every visible shape is labelled. Then an uneven illumination gradient
and Gaussian noise cover the whole image.

Layouts written into OUT (built in a temporary sibling folder and renamed into place at the end):

- ``--task detect``: COCO (``annotations/{train,val}.json``, ``file_name`` relative to ``images/``)
  and YOLO (``data.yaml``, ``labels/SPLIT/NAME.txt`` as ``class cx cy w h`` normalised) sharing
  ``images/SPLIT/NAME.png``. Boxes are a shape's full extent even where another shape hides part of it.
- ``--task segment``: ``images/SPLIT/NAME.png``, ``masks/SPLIT/NAME.png`` (uint8 class index of the
  visible shape, 0 = background) and ``classes.txt`` (one name per line, ``background`` first).

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

from cnnkit.errors import CnnkitError

KINDS = ("shapes",)
TASKS = ("detect", "segment")
SHAPES = ("circle", "square", "triangle", "star", "cross")
MIN_VISIBLE = 0.2  # an object with less than this fraction of its pixels visible is not drawn
SIZE_RANGE = (0.06, 0.40)  # sqrt(a shape's area) as a fraction of the image side
MAX_OBJECTS = 6


@dataclass
class Shape:
    cls: int  # index into SHAPES
    polygon: list[tuple[float, float]]  # vertices in pixels, (x, y)
    colour: tuple[int, int, int]
    mask: np.ndarray  # [S, S] bool: the full shape, as rasterised


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

def load_photos() -> list[np.ndarray]:
    """Real photos that ship with the installed libraries: scikit-learn's two sample photos, and
    some of scikit-image's where it is installed. [H, W, 3] uint8 each."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]
    try:
        import skimage.data as skdata
    except ImportError:
        return photos
    for name in ("astronaut", "coffee", "chelsea", "rocket"):  # bundled with the package: no download
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception:  # noqa: BLE001 - an optional extra: a missing or changed image is skipped
            continue
        if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
            photos.append(image)
    return photos


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

    # 3) uneven illumination: a linear gradient in a random direction times a soft bright spot
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta)
    gain = 1.0 + rng.uniform(0.2, 0.7) * ramp
    sx, sy, sigma = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 0.5)
    gain *= 1.0 + rng.uniform(0.0, 0.35) * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * sigma**2))
    image *= gain[..., None] * rng.uniform(0.75, 1.1)

    # 4) sensor noise
    image += rng.normal(0.0, rng.uniform(2.0, 12.0), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), kept, owner


# ------------------------------------------------------------------------------------- the dataset

def _split(n: int, val_fraction: float, rng: np.random.Generator) -> list[str]:
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    n_val = min(n_val, n - 1)
    splits = np.array(["train"] * n, dtype=object)
    splits[rng.permutation(n)[:n_val]] = "val"
    return list(splits)


def _check_args(kind: str, task: str, n: int, imgsz: int, seed: int, val_fraction: float) -> None:
    if kind not in KINDS:
        raise CnnkitError(f"unknown synthetic dataset '{kind}'", f"valid kinds: {', '.join(KINDS)}")
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


def synth_dataset(kind: str, out: str | Path, task: str = "detect", n: int = 500, imgsz: int = 320, seed: int = 0,
                  val_fraction: float = 0.2, force: bool = False, progress: bool = True) -> dict:
    """Generate a synthetic dataset into ``out`` (see the module docstring for the layouts).

    Returns a summary: ``{"root", "task", "classes", "images": {split: count}, "objects": count}``.
    Refuses a non-empty existing ``out`` unless ``force`` (then it is replaced as a whole).
    """
    _check_args(kind, task, n, imgsz, seed, val_fraction)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "pass a new --out, or --force to replace it")
    photos = load_photos()
    splits = _split(n, val_fraction, np.random.default_rng([seed, n, 1]))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        summary = _write(tmp, task, splits, photos, imgsz, seed, progress)
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


def _write(tmp: Path, task: str, splits: list[str], photos: list[np.ndarray], size: int, seed: int, progress: bool) -> dict:
    from cnnkit.engine.callbacks import progress_bar

    names = ("val", "train")
    for split in names:
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / ("labels" if task == "detect" else "masks") / split).mkdir(parents=True)
    coco = {split: {"images": [], "annotations": []} for split in names}
    objects = 0
    n = len(splits)
    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    started = last_draw = time.perf_counter()
    with bar if bar is not None else nullcontext():
        bar_task = bar.add_task("synth shapes", total=n, info="", rate="") if bar is not None else None
        for i, split in enumerate(splits):
            image, shapes, owner = make_shapes_image(np.random.default_rng([seed, i]), photos, size)
            name = f"{i:06d}"
            Image.fromarray(image, "RGB").save(tmp / "images" / split / f"{name}.png")
            objects += len(shapes)
            if task == "detect":
                _add_detect(tmp, coco[split], split, name, i + 1, shapes, size)
            else:
                classes = np.array([0] + [s.cls + 1 for s in shapes], dtype=np.uint8)
                Image.fromarray(classes[owner + 1], "L").save(tmp / "masks" / split / f"{name}.png")
            now = time.perf_counter()
            if bar is not None and (now - last_draw >= 0.25 or i + 1 == n):
                bar.update(bar_task, completed=i + 1, rate=f"{(i + 1) / max(now - started, 1e-9):.0f} img/s")
                bar.refresh()
                last_draw = now
    if task == "detect":
        categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)]
        (tmp / "annotations").mkdir()
        for split in names:
            doc = {"info": {"description": "cnnkit synthetic shapes", "seed": seed},
                   "images": coco[split]["images"], "annotations": coco[split]["annotations"], "categories": categories}
            (tmp / "annotations" / f"{split}.json").write_text(json.dumps(doc) + "\n")
        (tmp / "data.yaml").write_text(
            "# cnnkit data synth shapes: YOLO layout (the COCO one is in annotations/)\n"
            f"path: .\ntrain: images/train\nval: images/val\nnc: {len(SHAPES)}\nnames: [{', '.join(SHAPES)}]\n")
    else:
        (tmp / "classes.txt").write_text("\n".join(("background", *SHAPES)) + "\n")
    return {"task": task, "classes": list(SHAPES), "objects": objects,
            "images": {split: splits.count(split) for split in ("train", "val")}}


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
