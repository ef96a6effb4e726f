"""Whole pages: detect the lines (TextDetector), put them in reading order, rectify each crop and read it
(TextRecognizer); DESIGN's page JSON and an overlay of boxes and text.

    results = read_pages(det, rec, ["scan.png"], out="runs/ocr/predict")
    # [{"file", "lines": [{"points": [[x, y] x 4], "text", "score"}]}], overlays/scan.png in out
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnkit.engine.rundir import write_bytes
from cnnkit.errors import CnnkitError
from cnnkit.tasks.ocr.detect_post import expand_quad, reading_order, rectify

MIN_CROP = 2  # pixels: a region thinner than this has nothing to read
# a margin around each detected box before it is read, as a fraction of its height: measured on the 200 held-out
# pages of benchmarks/ocr_pages.py, 0 gave end-to-end CER 0.112, 0.1 0.117, 0.15 0.126, 0.3 0.228 (the boxes,
# grown back from the kernels, already hold the margin the recogniser learned)
CROP_MARGIN = 0.0


def write_png(path: Path, image: np.ndarray) -> Path:
    """An RGB image as a PNG, atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise CnnkitError(f"{path}: cannot encode the image")
    return write_bytes(path, buf.tobytes())


def read_lines(rec: Any, image: np.ndarray, quads: np.ndarray, device: str | None = None, beam: int = 0,
               margin: float = CROP_MARGIN) -> list[tuple[str, float]]:
    """(text, score) of each quadrilateral of the page, read from its rectified crop grown by ``margin`` times its
    height ("" for a crop too thin)."""
    crops = [rectify(image, expand_quad(q, margin)) for q in quads]
    readable = [k for k, c in enumerate(crops) if min(c.shape[:2]) >= MIN_CROP]
    readings = rec.read([crops[k] for k in readable], device, beam) if readable else []
    out = [("", 0.0)] * len(crops)
    for k, reading in zip(readable, readings):
        out[k] = reading
    return out


def _font(size: int) -> ImageFont.ImageFont:
    import matplotlib

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default()


def draw_page(image: np.ndarray, quads: np.ndarray, texts: list[str] | None) -> np.ndarray:
    """The page with each quadrilateral outlined and, with ``texts``, its reading written above it."""
    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = max(10, min(canvas.size) // 45)
    font = _font(size)
    for k, quad in enumerate(quads):
        points = [tuple(map(float, p)) for p in quad]
        draw.polygon(points, outline=(230, 30, 30), width=2)
        if texts is not None and texts[k]:
            x, y = points[0]
            box = draw.textbbox((x, max(0, y - size - 3)), texts[k], font=font)
            draw.rectangle(box, fill=(230, 30, 30))
            draw.text((x, max(0, y - size - 3)), texts[k], font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def read_pages(det: Any, rec: Any, sources, device: str = "auto", out: str | Path | None = None, beam: int = 0) -> list[dict[str, Any]]:
    """[{"file", "lines": [{"points", "text", "score"}]}] for page images, folders and globs, lines in reading
    order; ``rec`` None gives the boxes alone (text ""; score the detection's). With ``out``, an overlay of
    each page as out/overlays/NAME.png. A page without text gives an empty list."""
    from cnnkit.console import progress_bar
    from cnnkit.data.images import is_image_file
    from cnnkit.data.sources import expand_source_files
    from cnnkit.tasks.ocr.detect_data import read_page

    files = [f.path for f in expand_source_files([sources] if isinstance(sources, (str, Path)) else list(sources), is_image_file)]
    results = []
    with progress_bar() as bar:
        task = bar.add_task("ocr pages", total=len(files), info="", rate="")
        for path in files:
            image = read_page(Path(path))
            row = read_page_image(det, rec, image, str(path), device, beam, draw=out is not None)
            if out is not None:
                write_png(Path(out) / "overlays" / (Path(path).stem + ".png"), row.pop("drawn"))
            results.append(row)
            bar.update(task, advance=1)
    return results


def read_page_image(det: Any, rec: Any, image: np.ndarray, name: str, device: str | None = "auto", beam: int = 0,
                    draw: bool = False) -> dict[str, Any]:
    """One decoded page (HxWx3 uint8 RGB): {"file": name, "lines": [...]} as read_pages gives it; with ``draw``, also
    "drawn", the page with its lines outlined and their text."""
    quads, scores = det.detect(image, device)
    order = reading_order(quads)
    quads, scores = quads[order], scores[order]
    readings = read_lines(rec, image, quads, device, beam) if rec is not None else [("", float(s)) for s in scores]
    lines = [{"points": [[round(float(x), 1), round(float(y), 1)] for x, y in q], "text": text, "score": round(float(score), 5)}
             for q, (text, score) in zip(quads, readings)]
    row: dict[str, Any] = {"file": name, "lines": lines}
    if draw:
        row["drawn"] = draw_page(image, quads, [t for t, _ in readings] if rec is not None else None)
    return row
