"""Text-detection data: PaddleOCR's det_labels.tsv, pages resized for the detector, training crops with DBNet's
targets.

    ROOT/train/det_labels.tsv   images/p1.jpg<TAB>[{"transcription": "Total", "points": [[x, y], [x, y], [x, y], [x, y]]}, …]
    ROOT/val/det_labels.tsv     the same; without it --val-split of train is held out

A transcription of "###" marks text that is there but unreadable (ICDAR's "do not care"): it is neither taught
as text nor counted as missed. Every problem is a one-line CnnkitError naming the file and line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cnnkit.errors import CnnkitError
from cnnkit.tasks.ocr.data import hold_out_val, to_tensor
from cnnkit.tasks.ocr.detect_post import db_targets

DET_LABELS = "det_labels.tsv"
DONT_CARE = "###"
ALIGN = 32  # DBNet's input sides are multiples of its deepest stride


@dataclass(frozen=True)
class Page:
    path: Path
    polygons: tuple[np.ndarray, ...]  # each [K, 2] float32 pixels, K >= 4
    texts: tuple[str, ...]
    where: str


@dataclass
class PageData:
    root: Path
    classes: list[str]  # ["text"]
    splits: dict[str, list[Page]]


def read_det_labels(path: Path) -> list[Page]:
    """The pages of one det_labels.tsv (see the module docstring); images checked to exist."""
    if not path.is_file():
        raise CnnkitError(f"{path}: no such labels file", f"each split folder needs {DET_LABELS}: PATH<TAB>[JSON list of lines]")
    pages = []
    for number, row in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not row.strip():
            continue
        where = f"{path}:{number}"
        if "\t" not in row:
            raise CnnkitError(f"{where}: no tab between the image path and the JSON list", "write PATH<TAB>[{\"transcription\", \"points\"}, …]")
        name, payload = row.split("\t", 1)
        try:
            items = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise CnnkitError(f"{where}: the labels of {name} are not JSON ({exc.msg} at column {exc.pos + 1})") from None
        if not isinstance(items, list):
            raise CnnkitError(f"{where}: the labels of {name} must be a JSON list of {{\"transcription\", \"points\"}}")
        polygons, texts = [], []
        for k, item in enumerate(items):
            points = item.get("points") if isinstance(item, dict) else None
            try:
                array = np.asarray(points, np.float32)
            except (TypeError, ValueError):
                array = np.zeros(0)
            if array.ndim != 2 or array.shape[1] != 2 or len(array) < 4 or not np.isfinite(array).all():
                raise CnnkitError(f"{where}: text {k} of {name} needs \"points\" as a list of at least 4 [x, y] pairs")
            polygons.append(array)
            texts.append(str(item.get("transcription", "")))
        image = path.parent / name
        try:
            with Image.open(image):  # the header alone: the file exists and is an image
                pass
        except FileNotFoundError:
            raise CnnkitError(f"{where}: image {name} does not exist", f"paths are relative to {path.parent}") from None
        except (OSError, Image.DecompressionBombError) as exc:
            raise CnnkitError(f"{where}: image {name} cannot be read ({exc})") from None
        pages.append(Page(image, tuple(polygons), tuple(texts), where))
    if not pages:
        raise CnnkitError(f"{path}: no pages", "write PATH<TAB>[JSON list of lines] per page")
    return pages


def load_page_data(cfg, root: Path) -> PageData:
    root = Path(root)
    train = read_det_labels(root / "train" / DET_LABELS)
    if (root / "val" / DET_LABELS).is_file():
        val = read_det_labels(root / "val" / DET_LABELS)
    else:
        train, val = hold_out_val(train, cfg.val_split, cfg.seed, root, "page")
    return PageData(root, ["text"], {"train": train, "val": val})


def read_page(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise CnnkitError(f"{path}: cannot be read as an image")
    return np.ascontiguousarray(image[..., ::-1])


def inference_size(height: int, width: int, imgsz: int) -> tuple[int, int, float]:
    """(h, w, scale): the page scaled so that its longer side is ``imgsz``, each side rounded to a multiple of 32."""
    scale = imgsz / max(height, width)
    h = max(ALIGN, int(math.ceil(height * scale / ALIGN) * ALIGN))
    w = max(ALIGN, int(math.ceil(width * scale / ALIGN) * ALIGN))
    return h, w, scale


def page_input(image: np.ndarray, imgsz: int, square: bool = False) -> tuple[np.ndarray, float]:
    """The page scaled (aspect kept, longer side ``imgsz``) onto a black canvas whose sides are multiples of 32
    (``square``: imgsz x imgsz, so that pages batch together), and the scale from page pixels to input pixels."""
    h, w, scale = inference_size(*image.shape[:2], imgsz)
    if square:
        h = w = int(math.ceil(imgsz / ALIGN) * ALIGN)
    sh, sw = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[:sh, :sw] = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return canvas, scale


def train_crop(imgsz: int) -> int:
    """The side of DBNet's training crops: 0.6 of --imgsz (a multiple of 32), so that a step costs a third of a
    whole page while the text keeps the scale it has at inference."""
    return max(ALIGN, int(round(imgsz * 0.6 / ALIGN)) * ALIGN)


def _train_view(rng: np.random.Generator, image: np.ndarray, polygons: list[np.ndarray], imgsz: int):
    """A train_crop(imgsz) square: the page scaled as for inference (longer side imgsz) times 0.7-1.3, turned up
    to 10 degrees, a window of it at random, with light and blur changes; text cut by the window's border is
    ignored, not taught."""
    h, w = image.shape[:2]
    size = train_crop(imgsz)
    scale = imgsz / max(h, w) * rng.uniform(0.7, 1.3)
    angle = rng.uniform(-10, 10) if rng.random() < 0.5 else 0.0
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out_w, out_h = w * scale, h * scale
    matrix[0, 2] += (size - out_w) / 2 + rng.uniform(-1, 1) * max(0.0, out_w - size) / 2
    matrix[1, 2] += (size - out_h) / 2 + rng.uniform(-1, 1) * max(0.0, out_h - size) / 2
    view = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    moved = [np.asarray(p, np.float32) @ matrix[:, :2].T.astype(np.float32) + matrix[:, 2].astype(np.float32) for p in polygons]
    inside = [bool(np.all((p >= 0) & (p <= size - 1))) for p in moved]
    out = view.astype(np.float32)
    out = (out - 128) * rng.uniform(0.75, 1.25) + 128 + rng.uniform(-20, 20)
    if rng.random() < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.0))
    return np.clip(out, 0, 255).astype(np.uint8), moved, inside


class PageSet(Dataset):
    """Training: (crop [3, S, S], targets dict of [S, S] maps; S = train_crop(imgsz)) with a fresh augmentation every epoch. Validation:
    (page [3, H, W] at inference size, the page's polygons scaled to it, their don't-care flags)."""

    def __init__(self, pages: list[Page], imgsz: int, mean, std, train: bool = False, seed: int = 0):
        self.pages, self.imgsz, self.mean, self.std, self.train, self.seed = pages, imgsz, mean, std, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, k: int):
        page = self.pages[k]
        image = read_page(page.path)
        ignore = [t == DONT_CARE for t in page.texts]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, k])
            view, polygons, inside = _train_view(rng, image, list(page.polygons), self.imgsz)
            size = view.shape[0]
            maps = db_targets(polygons, [i or not ok for i, ok in zip(ignore, inside)], size, size)
            return to_tensor(view, self.mean, self.std), {k: torch.from_numpy(v) for k, v in maps.items()}
        canvas, scale = page_input(image, self.imgsz, square=True)
        return to_tensor(canvas, self.mean, self.std), [p * scale for p in page.polygons], ignore


def collate_pages(batch: list):
    """Training: (images [B, 3, S, S], {map: [B, S, S]}). Validation: (images [B, 3, S, S], polygons per page,
    don't-care flags per page)."""
    if isinstance(batch[0][1], dict):
        return torch.stack([b[0] for b in batch]), {k: torch.stack([b[1][k] for b in batch]) for k in batch[0][1]}
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
