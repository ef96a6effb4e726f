"""Realistic classification datasets users can generate in seconds, the suite cnnkit's defaults are tuned
and checked on (benchmarks/recipes.py):

    cnnkit data synth objects --task classify --n 300 --imgsz 64 --out data/objects
    cnnkit data synth objects --task classify --n 300 --imbalance 10 --out data/objects_lt   # long-tailed
    cnnkit data synth textures --task classify --n 40 --out data/textures_small               # few images
    cnnkit data synth cells --task classify --n 200 --out data/cell_kinds

``objects``: six shape classes (circle, square, triangle, star, cross, ring), one per image, 30%-75% of the
side, rotated, in a colour that stands out from a crop of a real photo, among clutter (strokes and
irregular blobs, which sometimes cross the object), under uneven light, with sensor noise.

``textures``: six materials cut from real photos (scikit-image's brick, grass and gravel, the moon's
surface, stained tissue, a deep-sky field), all in grey and then tinted at random so colour says nothing,
at random scale (0.5-2x), rotation and crop, with uneven light, contrast and gamma changes, blur and noise.
The training crops come from the left 70% of each photo, val and test from the right 30%: no pixel of a
test image was seen in training.

``cells``: five cell phenotypes under a fluorescence microscope (round, elongated, irregular, dividing,
binucleate), one centred cell per image among parts of neighbours, with the optics and camera of
``cnnkit data synth cells`` (blur, uneven illumination, shot and read noise), saved as grey 8-bit RGB PNGs.

``--classes`` picks classes (objects: from six more, pentagon, hexagon, arrow, crescent, ellipse and
semicircle, a supervised source for transfer to the first six), ``--unlabelled N`` adds N images of random
classes in ``OUT/unlabelled/`` for self-supervised pretraining (`cnnkit ssl train --data OUT/unlabelled`):

    cnnkit data synth shapes --task classify --n 10 --eval-n 100 --unlabelled 5000 --out data/ssl_objects
    cnnkit data synth shapes --task classify --classes pentagon,hexagon,arrow,crescent,ellipse,semicircle --out data/source

The layout is ImageFolder: ``OUT/{train,val,test}/CLASS/NNNNNN.png``. ``--n`` is the number of training
images of the most frequent class; ``--imbalance R`` gives class k of K ``n * R**(-k/(K-1))`` of them (a
geometric long tail, the largest class R times the smallest); val and test have ``--eval-n`` images of
every class (balanced, so their top-1 is the mean recall). The same seed gives byte-identical files;
each image draws from its own generator seeded by (seed, split, class, index).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnkit.data.synth import SHAPES, _background, _colour, _outline, _rasterise, _swap_in, light_and_noise, load_photos
from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

KINDS = ("objects", "textures", "cells")
ALIASES = {"shapes": "objects"}  # `cnnkit data synth shapes --task classify`: the objects, one per image
OBJECTS = (*SHAPES, "ring")
# more object classes of the same domain, drawn the same way: a supervised source for transfer to OBJECTS
# (`--classes`; docs/ssl.md), each distinct under rotation from every other class
MORE_OBJECTS = ("pentagon", "hexagon", "arrow", "crescent", "ellipse", "semicircle")
ALL_OBJECTS = (*OBJECTS, *MORE_OBJECTS)
UNLABELLED = "unlabelled"  # OUT/unlabelled/: images of random classes with no class folder (--unlabelled N)
TEXTURES = ("brick", "grass", "gravel", "moon", "tissue", "stars")
CELL_KINDS = ("round", "elongated", "irregular", "dividing", "binucleate")
TRAIN_SHARE = 0.7  # textures: training crops come from the left part of each photo, val/test from the rest


def classes_of(kind: str) -> tuple[str, ...]:
    return {"objects": OBJECTS, "textures": TEXTURES, "cells": CELL_KINDS}[ALIASES.get(kind, kind)]


def train_counts(n: int, classes: int, imbalance: float) -> list[int]:
    """Training images per class: ``n`` for the first, falling geometrically to ``n / imbalance`` for the last."""
    if classes == 1:
        return [n]
    return [max(1, round(n * imbalance ** (-k / (classes - 1)))) for k in range(classes)]


# ------------------------------------------------------------------------------------------- objects

def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, count: int) -> None:
    """Strokes and irregular blobs in random colours: things in the scene that are none of the classes."""
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            points = [tuple(rng.uniform(0, size, 2)) for _ in range(int(rng.integers(2, 4)))]
            draw.line(points, fill=colour, width=int(rng.integers(1, max(2, size // 20) + 1)))
        else:  # a lumpy blob: a polygon with random radii, nothing like the regular shapes
            cx, cy, r = *rng.uniform(0, size, 2), rng.uniform(0.05, 0.15) * size
            k = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * math.pi, k))
            radii = r * rng.uniform(0.4, 1.0, k)
            draw.polygon([(cx + q * math.cos(a), cy + q * math.sin(a)) for q, a in zip(radii, angles)], fill=colour)


def _polar(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(x, y) in the unit disc -> (radius, angle), the form the outlines are rotated and placed in."""
    return [(math.hypot(x, y), math.atan2(y, x)) for x, y in points]


def _more_outline(name: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon of one of MORE_OBJECTS (all but the crescent, which is two discs) in the circle (cx, cy, r)."""
    if name in ("pentagon", "hexagon"):
        k = 5 if name == "pentagon" else 6
        points = [(1.0, -math.pi / 2 + 2 * math.pi / k * j) for j in range(k)]
    elif name == "arrow":
        points = _polar([(-1.0, -0.2), (0.15, -0.2), (0.15, -0.55), (1.0, 0.0), (0.15, 0.55), (0.15, 0.2), (-1.0, 0.2)])
    elif name == "ellipse":
        points = _polar([(math.cos(t), 0.45 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)])
    else:  # semicircle
        points = _polar([(math.cos(t), math.sin(t) - 0.4) for t in np.linspace(0, math.pi, 25)])
    return [(cx + r * rho * math.cos(theta + angle), cy + r * rho * math.sin(theta + angle)) for rho, theta in points]


def _object_mask(rng: np.random.Generator, name: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """[S, S] bool: object class ``name`` (one of ALL_OBJECTS) in the circle (cx, cy, r), at a random angle."""
    if name == "ring":
        outer = _rasterise(_outline(SHAPES.index("circle"), cx, cy, r, 0.0), size)
        return outer & ~_rasterise(_outline(SHAPES.index("circle"), cx, cy, r * rng.uniform(0.45, 0.7), 0.0), size)
    if name in SHAPES:
        return _rasterise(_outline(SHAPES.index(name), cx, cy, r, rng.uniform(0, 2 * math.pi)), size)
    if name == "crescent":  # a disc less a disc shifted towards a random side
        angle, shift = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.35, 0.55)
        disc = _rasterise(_outline(SHAPES.index("circle"), cx, cy, r, 0.0), size)
        bite = _outline(SHAPES.index("circle"), cx + shift * math.cos(angle), cy + shift * math.sin(angle), r * 0.85, 0.0)
        return disc & ~_rasterise(bite, size)
    return _rasterise(_more_outline(name, cx, cy, r, rng.uniform(0, 2 * math.pi)), size)


def make_object_image(rng: np.random.Generator, photos: list[np.ndarray], cls: int | str, size: int) -> np.ndarray:
    """One ``objects`` image of class ``cls`` (a name of ALL_OBJECTS, or an index into OBJECTS): [S, S, 3] uint8."""
    image = Image.fromarray(_background(rng, photos, size))
    draw = ImageDraw.Draw(image)
    _clutter(rng, draw, size, int(rng.integers(0, 4)))  # behind the object
    r = rng.uniform(0.15, 0.375) * size
    cx, cy = rng.uniform(r * 0.8, size - r * 0.8, 2)  # mostly inside: a corner may leave the frame
    mask = _object_mask(rng, OBJECTS[cls] if isinstance(cls, int) else cls, cx, cy, r, size)
    pixels = np.asarray(image).copy()
    pixels[mask] = _colour(rng, pixels[mask])
    image = Image.fromarray(pixels)
    if rng.random() < 0.4:  # clutter in front: the object partly hidden
        _clutter(rng, ImageDraw.Draw(image), size, int(rng.integers(1, 3)))
    return light_and_noise(rng, np.asarray(image, dtype=np.float32))


# ------------------------------------------------------------------------------------------ textures

def texture_sources() -> list[np.ndarray]:
    """The six materials as grey float32 photos, in TEXTURES order (all ship inside scikit-image)."""
    import skimage.data as skdata

    def grey(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        return image @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if image.ndim == 3 else image

    photos = {"brick": skdata.brick(), "grass": skdata.grass(), "gravel": skdata.gravel(), "moon": skdata.moon(),
              "tissue": skdata.immunohistochemistry(), "stars": skdata.hubble_deep_field()}
    return [grey(photos[name]) for name in TEXTURES]


def make_texture_image(rng: np.random.Generator, source: np.ndarray, split: str, size: int) -> np.ndarray:
    """A crop of ``source`` at random scale and rotation from the split's own part of the photo, tinted and lit."""
    h, w = source.shape
    cut = int(w * TRAIN_SHARE)
    region = source[:, :cut] if split == "train" else source[:, cut:]
    scale = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # photo pixels per output pixel
    side = min(int(round(size * scale * 1.5)), region.shape[0], region.shape[1])  # 1.5: room to rotate
    y, x = int(rng.integers(0, region.shape[0] - side + 1)), int(rng.integers(0, region.shape[1] - side + 1))
    crop = Image.fromarray(region[y:y + side, x:x + side]).rotate(rng.uniform(0, 360), Image.BILINEAR)
    inner = int(side / 1.5)
    offset = (side - inner) // 2
    crop = crop.crop((offset, offset, offset + inner, offset + inner)).resize((size, size), Image.BILINEAR)
    grey = np.asarray(crop, dtype=np.float32)
    lo, hi = np.percentile(grey, (1, 99))
    grey = np.clip((grey - lo) / max(hi - lo, 1.0), 0.0, 1.0) ** math.exp(rng.uniform(-0.5, 0.5))  # contrast, gamma
    tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
    rgb = (grey[..., None] * tint * rng.uniform(150, 255) + rng.uniform(0, 60, 3)).astype(np.float32)
    if rng.random() < 0.3:
        rgb = np.asarray(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2))), dtype=np.float32)
    return light_and_noise(rng, rgb)


# --------------------------------------------------------------------------------------------- cells

def _cell_mask(rng: np.random.Generator, size: int, cx: float, cy: float, r: float, aspect: float, wobble: float,
               angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, p, q) of one cell: an ellipse of mean radius ``r`` whose boundary wobbles by harmonics 2-5;
    p, q are the coordinates along its axes (1 on the unperturbed boundary)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b = r * math.sqrt(aspect), r / math.sqrt(aspect)
    cos, sin = math.cos(angle), math.sin(angle)
    p = ((xx - cx) * cos + (yy - cy) * sin) / a
    q = ((yy - cy) * cos - (xx - cx) * sin) / b
    orders = np.arange(2, 6, dtype=np.float32)[:, None, None]
    amplitude = rng.uniform(0.5, 1.0, (4, 1, 1)).astype(np.float32) * wobble / orders
    phase = rng.uniform(0, 2 * math.pi, (4, 1, 1)).astype(np.float32)
    edge = 1.0 + (amplitude * np.cos(orders * np.arctan2(q, p) + phase)).sum(axis=0)
    return np.hypot(p, q) <= edge, p, q


def _nucleus(p: np.ndarray, q: np.ndarray, nx: float, ny: float, spread: float) -> np.ndarray:
    return np.exp(-((p - nx) ** 2 + (q - ny) ** 2) / (2 * spread**2))


def make_cell_image(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """One ``cells`` image of phenotype ``cls`` (index into CELL_KINDS), centred, among neighbours: [S, S, 3] uint8 grey."""
    from scipy import ndimage

    kind = CELL_KINDS[cls]
    signal = np.zeros((size, size), dtype=np.float32)
    for _ in range(int(rng.integers(0, 4))):  # neighbours: ordinary cells, mostly cut by the frame
        theta = rng.uniform(0, 2 * math.pi)
        cx, cy = size / 2 + 0.55 * size * math.cos(theta), size / 2 + 0.55 * size * math.sin(theta)
        mask, p, q = _cell_mask(rng, size, cx, cy, rng.uniform(0.12, 0.22) * size, rng.uniform(1.0, 1.8),
                                rng.uniform(0.0, 0.3), rng.uniform(0, math.pi))
        signal = np.where(mask, rng.uniform(0.3, 1.0) * (0.7 + 0.3 * _nucleus(p, q, 0, 0, 0.4)), signal)
    r = rng.uniform(0.16, 0.26) * size
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    angle = rng.uniform(0, math.pi)
    aspect = {"round": rng.uniform(1.0, 1.25), "elongated": rng.uniform(2.2, 3.5)}.get(kind, rng.uniform(1.0, 1.6))
    wobble = rng.uniform(0.9, 1.4) if kind == "irregular" else rng.uniform(0.0, 0.25)
    if kind == "dividing":  # two daughter cells pinched apart along one axis: a figure of eight
        offset = r * rng.uniform(0.55, 0.75)
        masks = [_cell_mask(rng, size, cx + s * offset * math.cos(angle), cy + s * offset * math.sin(angle),
                            r * 0.72, rng.uniform(1.0, 1.2), wobble, angle) for s in (-1, 1)]
        mask = masks[0][0] | masks[1][0]
        body = np.maximum(*(0.6 + 0.4 * _nucleus(p, q, 0, 0, 0.35) for _, p, q in masks))
    else:
        mask, p, q = _cell_mask(rng, size, cx, cy, r, aspect, wobble, angle)
        if kind == "binucleate":
            d = rng.uniform(0.35, 0.5)
            body = 0.4 + 0.6 * np.maximum(_nucleus(p, q, -d, 0, 0.2), _nucleus(p, q, d, 0, 0.2))
        else:
            body = 0.55 + 0.45 * _nucleus(p, q, *rng.uniform(-0.2, 0.2, 2), rng.uniform(0.3, 0.45))
    signal = np.where(mask, rng.uniform(0.5, 1.0) * body, signal)
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 1.0)
    signal *= np.clip(1.0 + 0.15 * grain / (grain.std() + 1e-6), 0.6, 1.3)
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    theta = rng.uniform(0, 2 * math.pi)
    field = 1.0 + rng.uniform(0.1, 0.6) * ((xx - 0.5) * math.cos(theta) + (yy - 0.5) * math.sin(theta))
    light = (rng.uniform(0.05, 0.2) + signal * rng.uniform(0.6, 1.0)) * field * rng.uniform(300, 1500)
    counts = rng.poisson(np.maximum(light, 0)).astype(np.float32) + rng.normal(0, rng.uniform(3, 12), light.shape)
    lo, hi = np.percentile(counts, (0.5, 99.8))
    grey = np.clip((counts - lo) / max(hi - lo, 1.0) * 255, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


# ------------------------------------------------------------------------------------------ dataset

def synth_classification(kind: str, out: str | Path, n: int = 300, imgsz: int = 64, seed: int = 0, imbalance: float = 1.0,
                         eval_n: int = 50, force: bool = False, progress: bool = True, classes: list[str] | None = None,
                         unlabelled: int = 0) -> dict:
    """Write a classification dataset of ``kind`` into ``out`` (ImageFolder, see the module docstring).
    ``classes``: objects only, which of ALL_OBJECTS (default OBJECTS); ``unlabelled``: that many more images of
    random classes in OUT/unlabelled/ (no class folders: self-supervised pretraining, `cnnkit ssl train`).
    Returns ``{"root", "task": "classify", "classes", "images": {split: count}, "per_class": {split: [counts]}}``."""
    from cnnkit.data.synth import _numbered

    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise CnnkitError(f"--task classify: no '{kind}' dataset", f"valid kinds: {', '.join(KINDS)} (shapes = objects)")
    if n < 1 or eval_n < 1:
        raise CnnkitError(f"--n {n} and --eval-n {eval_n}: need at least 1 image per class")
    if unlabelled < 0:
        raise CnnkitError(f"--unlabelled {unlabelled}: a number of images, 0 or more")
    if not imbalance >= 1:  # `not >=`: NaN fails too
        raise CnnkitError(f"--imbalance {imbalance}: the largest class over the smallest, at least 1")
    if seed < 0:  # numpy's seed sequences take non-negative integers only
        raise CnnkitError(f"--seed {seed}: must not be negative")
    if not 16 <= imgsz <= 1024:
        raise CnnkitError(f"--imgsz {imgsz}: out of range", "use 16 to 1024 pixels")
    names = _chosen_classes(kind, classes)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "pass a new --out, or --force to replace it")
    pool = ALL_OBJECTS if kind == "objects" else classes_of(kind)
    counts = {"train": train_counts(n, len(names), imbalance), "val": [eval_n] * len(names), "test": [eval_n] * len(names)}
    jobs = [(split, k, i) for split in ("train", "val", "test") for k in range(len(names)) for i in range(counts[split][k])]
    # an unlabelled image draws its class from its own stream, then the image as a labelled one would
    jobs += [(UNLABELLED, int(np.random.default_rng([seed, 3, i]).integers(len(names))), i) for i in range(unlabelled)]
    photos = load_photos(more=True) if kind == "objects" else []
    sources = texture_sources() if kind == "textures" else []
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root.parent, root.name)
    try:
        for split in counts:
            for name in names:
                (tmp / split / name).mkdir(parents=True)
        if unlabelled:
            (tmp / UNLABELLED).mkdir()
        for j, _, _ in _numbered([split for split, _, _ in jobs], f"synth {kind}", progress):
            split, k, i = jobs[j]
            # seeded by the class's place among all of the kind's classes: a subset draws the images it would in the whole
            rng = np.random.default_rng([seed, ("train", "val", "test", UNLABELLED).index(split), pool.index(names[k]), i])
            if kind == "objects":
                image = make_object_image(rng, photos, names[k], imgsz)
            elif kind == "textures":
                image = make_texture_image(rng, sources[pool.index(names[k])], "train" if split == UNLABELLED else split, imgsz)
            else:
                image = make_cell_image(rng, pool.index(names[k]), imgsz)
            folder = tmp / UNLABELLED if split == UNLABELLED else tmp / split / names[k]
            Image.fromarray(image, "RGB").save(folder / f"{i:06d}.png")
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    images = {split: sum(c) for split, c in counts.items()}
    if unlabelled:
        images[UNLABELLED] = unlabelled
    return {"root": str(root), "task": "classify", "classes": list(names), "per_class": counts, "images": images}


def _chosen_classes(kind: str, classes: list[str] | None) -> tuple[str, ...]:
    """--classes: a subset of the kind's classes (objects: of ALL_OBJECTS), in the order given; default the kind's own."""
    if not classes:
        return classes_of(kind)
    pool = ALL_OBJECTS if kind == "objects" else classes_of(kind)
    unknown = [name for name in classes if name not in pool]
    if unknown:
        raise CnnkitError(f"--classes: '{unknown[0]}' is not a {kind} class", f"choose from {', '.join(pool)}")
    if len(set(classes)) != len(classes):
        raise CnnkitError(f"--classes {','.join(classes)}: a class is named twice")
    return tuple(classes)
