"""Synthetic text lines for OCR recognition, rendered from the fonts installed on the machine.

    from cnnkit.data.synth_text import synth_text_lines
    summary = synth_text_lines("data/lines", n=5000, fonts="!Liberation*,!Nimbus*", seed=0)

    cnnkit data synth text --task rec --out data/lines --n 5000 --fonts '!Liberation*'

Text: runs of consecutive words of ``text_corpus.CORPUS`` (English prose, so words come in real order and
frequency), words of the system dictionary (``/usr/share/dict/words``, Debian's wamerican, when installed) and
the strings forms and labels carry (prices, dates, times, codes, quantities, percentages), at most
``MAX_CHARS`` characters, every character in ``CHARSET``.

Fonts: every TrueType/OpenType file under the usual font folders (and matplotlib's own DejaVu, so a machine
without fonts still has one family) whose character map covers ``CHARSET``; symbol and dingbat fonts drop
out by that rule. ``fonts`` picks families by shell patterns on the family name, comma-separated, ``!`` to
exclude (``"DejaVu*,Free*"``, ``"!Liberation*"``), so that a benchmark can hold whole families out of training.

Rendering (each line draws its own generator from (seed, index), so a line does not depend on the others):
a font size of 12-44 px; dark text on a light ground or light on dark; the ground a crop of a real photo
(scikit-learn's and scikit-image's) faded towards a plain colour, or paper (a plain colour with a gradient and
fibres); then the degradations users' images have: rotation (up to 2.5 degrees, and at most what lifts one
end of the line by a third of its letters' height), shear (italic-like slant),
a slight perspective, uneven light, Gaussian blur, sensor noise and JPEG artefacts. The line is cut with a
margin of none to a quarter of the type size (a detector's box may hug the ink or leave room) and scaled to
``height`` pixels, aspect kept: small type comes out as blurred as a page's small words do.

Files: ``out/{train,val}/labels.tsv`` (``images/000001.png<TAB>text``, PaddleOCR's and cnnkit's recognition
layout), ``out/{train,val}/images/*.png`` and ``out/fonts.txt`` (the families used). The same seed and the same
installed fonts give byte-identical files.
"""

from __future__ import annotations

import fnmatch
import math
import shutil
import string
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnkit.data.convert_mot import _check_out
from cnnkit.data.synth import _swap_in, load_photos
from cnnkit.engine.rundir import temp_dir
from cnnkit.errors import CnnkitError

CHARSET = string.digits + string.ascii_letters + " !\"#$%&'()*+,-./:;?@"
MAX_CHARS = 32
MAX_TILT_DEGREES = 2.5
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts", "/Library/Fonts",
             "C:/Windows/Fonts")
DICTIONARY = Path("/usr/share/dict/words")


@dataclass(frozen=True)
class FontFace:
    path: Path
    family: str
    style: str


def _font_files() -> list[Path]:
    import matplotlib

    dirs = [Path(d).expanduser() for d in FONT_DIRS] + [Path(matplotlib.get_data_path()) / "fonts" / "ttf"]
    files = []
    for folder in dirs:
        if folder.is_dir():
            files += [p for p in folder.rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    return sorted(set(files))


def _covers(path: Path, charset: str) -> bool:
    """Whether the font maps every character of ``charset`` to a glyph, and its letters are letters: symbol,
    dingbat and fallback fonts map the Latin code points too, to other shapes (their glyphs are named
    'alpha' or 'a10', or one glyph serves every letter)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # a font fontTools cannot read is not used
        return False
    if not all(ord(c) in cmap for c in charset if c != " "):
        return False
    letters = [c for c in string.ascii_letters if c in charset]
    names = [cmap[ord(c)] for c in letters]
    if len(set(names)) < len(names):
        return False
    named_as_letters = all(n == c or n.lower() == f"uni{ord(c):04x}" for c, n in zip(letters, names))
    unnamed = all(n.startswith("glyph") for n in names)  # no glyph names in the file: nothing to go by
    return named_as_letters or unnamed


@cache
def installed_fonts(charset: str = CHARSET) -> tuple[FontFace, ...]:
    """Every installed font face that covers ``charset``, one per (family, style), in family order."""
    faces: dict[tuple[str, str], FontFace] = {}
    for path in _font_files():
        try:
            family, style = ImageFont.truetype(str(path), 24).getname()
        except OSError:
            continue
        if family and (family, style) not in faces and _covers(path, charset):
            faces[(family, style)] = FontFace(path, family, style or "Regular")
    return tuple(sorted(faces.values(), key=lambda f: (f.family, f.style)))


def select_fonts(faces: tuple[FontFace, ...] | list[FontFace], spec: str | None) -> list[FontFace]:
    """The faces whose family matches ``spec``: comma-separated shell patterns (case-insensitive); ``!PATTERN``
    excludes. Only exclusions: every other family is kept. A CnnkitError when nothing is left."""
    faces = list(faces)
    if not faces:
        raise CnnkitError("no font on this machine covers the OCR character set",
                          "install some, e.g. apt-get install fonts-dejavu fonts-liberation2 fonts-freefont-ttf")
    if not spec:
        return faces
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    include = [p.lower() for p in parts if not p.startswith("!")]
    exclude = [p[1:].strip().lower() for p in parts if p.startswith("!")]
    chosen = [f for f in faces if (not include or any(fnmatch.fnmatch(f.family.lower(), p) for p in include))
              and not any(fnmatch.fnmatch(f.family.lower(), p) for p in exclude)]
    if not chosen:
        families = sorted({f.family for f in faces})
        raise CnnkitError(f"--fonts {spec!r} matches no installed family", "installed: " + ", ".join(families))
    return chosen


# ------------------------------------------------------------------------------------------------ text

@cache
def corpus_words() -> tuple[str, ...]:
    from cnnkit.data.text_corpus import CORPUS

    return tuple(w for w in CORPUS.split() if all(c in CHARSET for c in w))


@cache
def dictionary_words() -> tuple[str, ...]:
    """The system dictionary's plain words (letters only, 2-14 long), or none when it is not installed."""
    if not DICTIONARY.is_file():
        return ()
    words = DICTIONARY.read_text(encoding="utf-8", errors="ignore").split()
    return tuple(w for w in words if 2 <= len(w) <= 14 and w.isascii() and w.isalpha())


def _structured(rng: np.random.Generator) -> str:
    """A string of the kind forms, receipts and labels carry."""
    kind = rng.integers(14)
    n = lambda lo, hi: int(rng.integers(lo, hi))  # noqa: E731
    if kind == 0:
        return f"${n(0, 1000)}.{n(0, 100):02d}"
    if kind == 1:
        return f"{n(1990, 2031)}-{n(1, 13):02d}-{n(1, 29):02d}"
    if kind == 2:
        return f"{n(0, 24):02d}:{n(0, 60):02d}"
    if kind == 3:
        letters = "".join(rng.choice(list(string.ascii_uppercase), n(1, 4)))
        return f"{letters}-{n(10, 100000)}"
    if kind == 4:
        return f"{n(1, 100)}.{n(0, 10)}%"
    if kind == 5:
        return f"{n(1, 1000)} {rng.choice(['kg', 'g', 'ml', 'cm', 'mm', 'km', 'pcs', 'x'])}"
    if kind == 6:
        return f"({n(100, 1000)}) {n(100, 1000)}-{n(1000, 10000)}"
    if kind == 7:
        return f"{n(1, 29):02d}/{n(1, 13):02d}/{n(1990, 2031)}"
    if kind == 8:
        return f"#{n(1, 10000)}"
    if kind == 9:
        word = str(rng.choice(corpus_words())).strip(".,;:!?\"'()").lower() or "info"
        return f"{word}@{rng.choice(['mail', 'example', 'shop', 'post'])}.{rng.choice(['com', 'org', 'net'])}"
    if kind == 10:
        return f"+{n(1, 99)} {n(10, 100)} {n(1000, 10000)} {n(1000, 10000)}"
    if kind == 11:
        return f"{n(2, 10)} * {n(2, 100)} + {n(1, 10)}"
    if kind == 12:
        return f"{rng.choice(corpus_words())} & {rng.choice(corpus_words())}"
    return f"No. {n(1, 10000)}"


def _punctuate(rng: np.random.Generator, words: list[str]) -> list[str]:
    """Prose's own marks that the corpus seldom has: a question or an exclamation, quotes, a slash."""
    pick = rng.random()
    if pick < 0.3 and words:
        words[-1] = words[-1].rstrip(".,;:") + str(rng.choice(["?", "!"]))
    elif pick < 0.55 and words:
        k = int(rng.integers(len(words)))
        words[k] = f"\"{words[k]}\""
    elif pick < 0.7 and len(words) > 1:
        k = int(rng.integers(len(words) - 1))
        words[k:k + 2] = [f"{words[k]}/{words[k + 1]}"]
    return words


def make_text(rng: np.random.Generator, max_chars: int = MAX_CHARS) -> str:
    """One line of text: a run of corpus words (60 %; one in seven given a question or exclamation mark, quotes
    or a slash), dictionary words (25 %, corpus words without a dictionary) or words and a form's strings mixed
    (15 %), trimmed to ``max_chars``."""
    corpus, dictionary = corpus_words(), dictionary_words()
    pick = rng.random()
    if pick < 0.6 or (pick < 0.85 and not dictionary):
        start = int(rng.integers(len(corpus)))
        words = list(corpus[start:start + int(rng.integers(1, 8))])
        if rng.random() < 0.15:
            words = _punctuate(rng, words)
    elif pick < 0.85:
        words = [str(rng.choice(dictionary)) for _ in range(int(rng.integers(1, 5)))]
        words = [w.capitalize() if rng.random() < 0.2 else (w.upper() if rng.random() < 0.05 else w) for w in words]
    else:
        words = [_structured(rng) if rng.random() < 0.5 else str(rng.choice(corpus)) for _ in range(int(rng.integers(1, 4)))]
    text = " ".join(words)
    if len(text) > max_chars:  # cut at a word boundary when there is one
        cut = text.rfind(" ", 0, max_chars + 1)
        text = text[:cut] if cut > 0 else text[:max_chars]
    return text.strip() or "text"


# ------------------------------------------------------------------------------------------------ drawing

def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _ground(rng: np.random.Generator, photos: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """[h, w, 3] float32 RGB: a faded photo crop or paper."""
    plain = rng.uniform(150, 255, 3) if rng.random() < 0.8 else rng.uniform(0, 90, 3)
    if photos and rng.random() < 0.5:
        photo = photos[int(rng.integers(len(photos)))]
        scale = rng.uniform(0.5, 2.0)
        ch = min(photo.shape[0], max(8, round(height / scale)))
        cw = min(photo.shape[1], max(8, round(width / scale)))
        y, x = int(rng.integers(photo.shape[0] - ch + 1)), int(rng.integers(photo.shape[1] - cw + 1))
        crop = cv2.resize(photo[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        fade = rng.uniform(0.5, 0.85)  # how much of the plain colour: the text must stay legible
        return fade * plain + (1 - fade) * crop
    ground = np.empty((height, width, 3), np.float32)
    ground[:] = plain
    ramp = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None] * rng.uniform(0, 25)
    ground += ramp
    for _ in range(int(rng.integers(0, 6))):  # paper fibres
        y = int(rng.integers(height))
        ground[y:y + 1] += rng.uniform(-20, 20)
    return ground


def render_line(rng: np.random.Generator, text: str, face: FontFace, photos: list[np.ndarray], height: int = 32) -> np.ndarray:
    """[height, w, 3] uint8 RGB image of ``text`` in ``face`` with the module's ground and degradations."""
    size = int(rng.integers(12, 45))  # small type too: a page's 12-px words, upscaled to the line height, read blurred
    font = ImageFont.truetype(str(face.path), size)
    left, top, right, bottom = font.getbbox(text)
    pad = int(size * 0.6)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    ground = _ground(rng, photos, w, h)
    base = float(np.mean([_luma(ground.mean(axis=(0, 1)))]))
    ink = rng.uniform(0, 70, 3) if base > 128 else rng.uniform(185, 255, 3)
    if rng.random() < 0.3:  # coloured ink, still far from the ground's brightness
        ink = np.clip(ink + rng.uniform(-60, 60, 3) * (1 if base > 128 else -1), 0, 255)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), text, font=font, fill=255)
    alpha = np.asarray(mask, np.float32)[..., None] / 255.0 * rng.uniform(0.8, 1.0)
    image = ground * (1 - alpha) + ink * alpha

    # geometry: rotation, shear and a slight perspective, one warp; the text's own box is carried along
    # a tilt lifts one end of the line by w sin(angle): past about a third of the letters' height the crop
    # around it is mostly ground, and scaled to the line height the letters end up narrower than the columns
    # CTC needs (a detector's rectified crop is not tilted so much either)
    max_tilt = min(math.radians(MAX_TILT_DEGREES), math.atan(0.35 * (bottom - top) / max(right - left, 1)))
    angle = rng.uniform(-1, 1) * max_tilt
    shear = rng.uniform(-0.25, 0.25) if rng.random() < 0.3 else 0.0
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    centre = np.float32([w / 2, h / 2])
    rot = np.float32([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # x' = x + shear * y: the top of the letters leans (an italic's slant); the baseline stays level
    dst = (src - centre) @ np.float32([[1, shear], [0, 1]]).T @ rot.T + centre
    dst += rng.uniform(-0.03, 0.03, (4, 2)).astype(np.float32) * np.float32([w, h]) * (rng.random() < 0.3)
    dst -= dst.min(axis=0)
    out_w, out_h = int(math.ceil(dst[:, 0].max())) + 1, int(math.ceil(dst[:, 1].max())) + 1
    matrix = cv2.getPerspectiveTransform(src, dst)
    image = cv2.warpPerspective(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ys, xs = np.nonzero(cv2.warpPerspective(np.asarray(mask), matrix, (out_w, out_h)) > 64)
    if len(xs):  # cut around the ink with a margin of none to a quarter of the type size: a detector's box can hug the ink
        m = int(rng.integers(0, max(2, size // 4)))
        image = image[max(0, ys.min() - m):ys.max() + m + 1, max(0, xs.min() - m):xs.max() + m + 1]

    # light and sensor
    hh, ww = image.shape[:2]
    if rng.random() < 0.4:
        gx = np.linspace(-1, 1, ww, dtype=np.float32)[None, :, None]
        image = image * (1 + rng.uniform(-0.25, 0.25) * gx)
    image = (image - 128) * rng.uniform(0.7, 1.1) + 128 + rng.uniform(-25, 25)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.3))
    if rng.random() < 0.5:
        image = image + rng.normal(0, rng.uniform(2, 12), image.shape).astype(np.float32)
    scale = height / max(hh, 1)
    image = cv2.resize(np.clip(image, 0, 255).astype(np.uint8), (max(1, round(ww * scale)), height),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(image)


def sample_lines(n: int, seed: int = 0, height: int = 32) -> list[np.ndarray]:
    """``n`` rendered lines (RGB uint8), for checks that need real-looking text without a dataset (export parity)."""
    faces, photos = select_fonts(installed_fonts(), None), load_photos(more=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 2])
        out.append(render_line(rng, make_text(rng), faces[int(rng.integers(len(faces)))], photos, height))
    return out


# ------------------------------------------------------------------------------------------------ files

@dataclass
class Sample:
    """One rendered sample for ``write_text_set``: the image, its file suffix and cv2.imwrite parameters, its
    row's label (after the tab) and how many it counts (characters, lines)."""
    image: np.ndarray  # [h, w, 3] uint8 RGB
    suffix: str
    params: list[int]
    label: str
    count: int


def write_text_set(out: str | Path, n: int, fonts: str | None, val_fraction: float, seed: int, force: bool, progress: bool,
                   what: str, labels_file: str, sample: Callable[[int, list[FontFace], list[np.ndarray]], Sample]) -> dict:
    """The writing shared by the line and the page generators: ``sample(i, faces, photos)`` for i in 0..n-1, the
    last ``val_fraction`` of them in val, each split's ``labels_file`` (NAME<TAB>label) and ``fonts.txt``, all
    built in a temporary folder that replaces ``out`` once complete (a non-empty ``out`` only with ``force``).

    Returns ``{"root", "split": {"train": count, "val": count}, "count": summed sample counts, "families": [names],
    "faces", "seconds"}``."""
    if n < 2:
        raise CnnkitError(f"--n {n}: need at least 2 {what} (train and val)")
    if not 0 < val_fraction < 1 or seed < 0:
        raise CnnkitError(f"val_fraction={val_fraction}, seed={seed}: out of range", "use a share in (0, 1) and a seed of 0 or more")
    root = _check_out(out, force)
    faces = select_fonts(installed_fonts(), fonts)
    photos = load_photos(more=True)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    started = time.perf_counter()

    from cnnkit.console import progress_bar

    bar = progress_bar(transient=True, auto_refresh=False) if progress else None
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root.parent, root.name)
    count = 0
    try:
        with bar if bar is not None else nullcontext():
            task = bar.add_task(f"synth {what}", total=n, info="", rate="") if bar is not None else None
            rows: dict[str, list[str]] = {"train": [], "val": []}
            for i in range(n):
                split = "val" if i >= n - n_val else "train"
                drawn = sample(i, faces, photos)
                name = f"images/{i + 1:06d}{drawn.suffix}"
                path = tmp / split / name
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), drawn.image[..., ::-1], drawn.params)
                rows[split].append(f"{name}\t{drawn.label}")
                count += drawn.count
                if bar is not None and ((i + 1) % 10 == 0 or i + 1 == n):
                    bar.update(task, completed=i + 1)
                    bar.refresh()
        for split, lines in rows.items():
            (tmp / split / labels_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "fonts.txt").write_text("\n".join(f"{f.family}\t{f.style}\t{f.path.name}" for f in faces) + "\n", encoding="utf-8")
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(root), "split": {s: len(v) for s, v in rows.items()}, "count": count,
            "families": sorted({f.family for f in faces}), "faces": len(faces), "seconds": round(time.perf_counter() - started, 2)}


def synth_text_lines(out: str | Path, n: int = 5000, fonts: str | None = None, height: int = 32, val_fraction: float = 0.1,
                     seed: int = 0, force: bool = False, progress: bool = True) -> dict:
    """Write ``n`` text-line images (train + val) into ``out`` (see the module docstring). Refuses a non-empty
    ``out`` unless ``force`` (then it is replaced once the new one is complete).

    Returns ``{"root", "lines": {"train": count, "val": count}, "families": [names], "faces": count,
    "characters": mean characters a line, "seconds"}``."""
    if not 8 <= height <= 256:
        raise CnnkitError(f"--imgsz {height}: out of range", "use a line height of 8 to 256 pixels")

    def sample(i: int, faces: list[FontFace], photos: list[np.ndarray]) -> Sample:
        rng = np.random.default_rng([seed, i])
        text = make_text(rng)
        face = faces[int(rng.integers(len(faces)))]
        return Sample(render_line(rng, text, face, photos, height), ".png", [], text, len(text))

    summary = write_text_set(out, n, fonts, val_fraction, seed, force, progress, "lines", "labels.tsv", sample)
    return {"root": summary["root"], "lines": summary["split"], "families": summary["families"], "faces": summary["faces"],
            "characters": round(summary["count"] / n, 1), "seconds": summary["seconds"]}
