"""Synthetic pages for OCR text detection: text lines laid out on photo or paper grounds, each line's
quadrilateral and transcription recorded in PaddleOCR's detection layout.

    from cnnkit.data.synth_text_pages import synth_text_pages
    summary = synth_text_pages("data/pages", n=600, fonts="!Liberation*,!Nimbus*", seed=0)

    cnnkit data synth text --task det --out data/pages --n 600

A page (480-800 x 360-640 px) holds paragraphs (lines of one font and size, left-aligned, one under the other,
as a letter or a manual has them) and scattered labels (a form's fields, a sign's words: each its own font
and size), 12-40 px high, none overlapping, and two on one row at least 1.5 line heights apart (closer, they
would read as one line). The text, fonts, grounds and inks are synth_text's; the page then
gets one slight rotation and perspective (up to 4 degrees), uneven light, blur, noise and JPEG artefacts. A
line's quadrilateral is the box around its ink, carried through the same warp, so it hugs the letters.

Files: ``out/{train,val}/det_labels.tsv`` (``images/000001.jpg<TAB>[{"transcription": "...", "points":
[[x, y] x 4]}]``, points clockwise from the top-left), ``out/{train,val}/images/*.jpg`` and ``out/fonts.txt``.
The same seed and the same installed fonts give byte-identical files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnkit.data.synth_text import FontFace, Sample, _ground, _luma, make_text, write_text_set

DET_LABELS = "det_labels.tsv"


def _free(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]], gap: int) -> bool:
    """True when ``box`` keeps ``gap`` pixels above and below every taken box and, beside one on the same row,
    1.5 times the taller one's height: two labels a word space apart read as one line, and a truth that splits
    them would be one that no reader (nor annotator) could follow."""
    x0, y0, x1, y1 = box
    for a, c, b, d in taken:
        if y1 + gap <= c or d + gap <= y0:
            continue
        side_gap = max(gap, int(1.5 * max(y1 - y0, d - c)))
        if not (x1 + side_gap <= a or b + side_gap <= x0):
            return False
    return True


def _ink(rng: np.random.Generator, ground_luma: float) -> np.ndarray:
    ink = rng.uniform(0, 70, 3) if ground_luma > 128 else rng.uniform(185, 255, 3)
    if rng.random() < 0.3:
        ink = np.clip(ink + rng.uniform(-60, 60, 3) * (1 if ground_luma > 128 else -1), 0, 255)
    return ink


def _draw_line(page: np.ndarray, rng: np.random.Generator, text: str, font: ImageFont.FreeTypeFont, x: int, y: int,
               ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """Blend ``text`` into ``page`` with its ink's top-left at (x, y); the ink's box (x0, y0, x1, y1), or None
    when the line has no ink inside the page."""
    left, top, right, bottom = font.getbbox(text)
    w, h = right - left + 2, bottom - top + 2
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
    alpha = np.asarray(mask, np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.25)
    if not len(xs):
        return None
    region = page[y:y + h, x:x + w]
    a = alpha[:region.shape[0], :region.shape[1], None] * rng.uniform(0.8, 1.0)
    region[:] = region * (1 - a) + ink * a
    return x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1


def render_page(rng: np.random.Generator, faces: list[FontFace], photos: list[np.ndarray], width: int | None = None,
                height: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """([h, w, 3] uint8 RGB page, [{"transcription", "points"}]) — see the module docstring."""
    w = int(width or rng.integers(480, 801))
    h = int(height or rng.integers(360, 641))
    page = _ground(rng, photos, w, h)
    ground_luma = _luma(page.mean(axis=(0, 1)))
    taken: list[tuple[int, int, int, int]] = []
    lines: list[tuple[tuple[int, int, int, int], str]] = []
    margin = 8

    def place(text: str, font, x: int, y: int, ink) -> bool:
        left, top, right, bottom = font.getbbox(text)
        if x + right - left + 2 > w - margin or y + bottom - top + 2 > h - margin:
            return False
        box = (x, y, x + right - left + 2, y + bottom - top + 2)
        if not _free(box, taken, 4):
            return False
        ink_box = _draw_line(page, rng, text, font, x, y, ink)
        taken.append(box)
        if ink_box is not None:
            lines.append((ink_box, text))
        return True

    for _ in range(int(rng.integers(1, 3))):  # paragraphs
        face = faces[int(rng.integers(len(faces)))]
        size = int(rng.integers(14, 34))
        font = ImageFont.truetype(str(face.path), size)
        ink = _ink(rng, ground_luma)
        x, y = int(rng.integers(margin, max(margin + 1, w // 3))), int(rng.integers(margin, max(margin + 1, h // 2)))
        step = int(size * rng.uniform(1.3, 1.9))
        for _ in range(int(rng.integers(2, 8))):
            if not place(make_text(rng, int(rng.integers(12, 40))), font, x, y, ink):
                break
            y += step
    for _ in range(int(rng.integers(2, 10))):  # scattered labels
        face = faces[int(rng.integers(len(faces)))]
        font = ImageFont.truetype(str(face.path), int(rng.integers(14, 46)))
        text = make_text(rng, int(rng.integers(4, 24)))
        for _ in range(6):
            if place(text, font, int(rng.integers(margin, w - margin)), int(rng.integers(margin, h - margin)), _ink(rng, ground_luma)):
                break

    # one warp for the whole page: rotation plus a slight perspective
    angle = math.radians(rng.uniform(-4, 4))
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    centre = np.float32([w / 2, h / 2])
    rot = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dst = (src - centre) @ rot.T + centre + rng.uniform(-0.02, 0.02, (4, 2)).astype(np.float32) * np.float32([w, h])
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    page = cv2.warpPerspective(page, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # light and sensor, as synth_text's lines
    if rng.random() < 0.5:
        gx = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        gy = np.linspace(-1, 1, h, dtype=np.float32)[:, None, None]
        page = page * (1 + rng.uniform(-0.2, 0.2) * gx + rng.uniform(-0.2, 0.2) * gy)
    page = (page - 128) * rng.uniform(0.75, 1.1) + 128 + rng.uniform(-20, 20)
    if rng.random() < 0.4:
        page = cv2.GaussianBlur(page, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.5:
        page = page + rng.normal(0, rng.uniform(2, 10), page.shape).astype(np.float32)
    image = np.clip(page, 0, 255).astype(np.uint8)

    labels = []
    for (x0, y0, x1, y1), text in lines:
        corners = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]).reshape(-1, 1, 2)
        points = cv2.perspectiveTransform(corners, matrix).reshape(4, 2)
        points = np.clip(points, 0, [w - 1, h - 1])
        labels.append({"transcription": text, "points": [[round(float(px), 1), round(float(py), 1)] for px, py in points]})
    return image, labels


def synth_text_pages(out: str | Path, n: int = 600, fonts: str | None = None, val_fraction: float = 0.1, seed: int = 0,
                     force: bool = False, progress: bool = True) -> dict:
    """Write ``n`` pages (train + val) into ``out`` (see the module docstring). Refuses a non-empty ``out``
    unless ``force`` (then it is replaced once the new one is complete).

    Returns ``{"root", "pages": {"train": count, "val": count}, "lines": count, "families": [names], "faces",
    "seconds"}``."""

    def sample(i: int, faces: list[FontFace], photos: list[np.ndarray]) -> Sample:
        rng = np.random.default_rng([seed, i, 1])
        image, labels = render_page(rng, faces, photos)
        return Sample(image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 96))], json.dumps(labels, ensure_ascii=False), len(labels))

    summary = write_text_set(out, n, fonts, val_fraction, seed, force, progress, "pages", DET_LABELS, sample)
    return {"root": summary["root"], "pages": summary["split"], "lines": summary["count"], "families": summary["families"],
            "faces": summary["faces"], "seconds": summary["seconds"]}
