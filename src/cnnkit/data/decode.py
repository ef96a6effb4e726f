"""Image files at the header level: which files are images (DICOM by its marker), their stored and displayed
size (EXIF orientation), the pixel limit against decompression bombs, and the 8-bit picture path. data/medical.py
and data/intensity.py build on this; data/images.py's load_image on all three."""

from __future__ import annotations

import io
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import Image, ImageFile

from cnnkit.errors import CnnkitError

# Suffixes we treat as images when scanning folders (lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# A truncated file must fail loudly, not decode into a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ORIENTATION = 0x0112  # the EXIF Orientation tag (274)
# how to turn the stored pixels upright for each orientation (as Pillow's ImageOps.exif_transpose)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}

# Pillow's own limit (89,478,485 pixels), cnnkit's default; --max-pixels N changes it for one command (0: none)
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
MAX_PIXELS_ENV = "CNNKIT_MAX_PIXELS"
MAX_PIXELS_HINT = ("a genuine large scan (slide, satellite)? raise the limit with --max-pixels N, or 0 for none; "
                   "segmentation then reads it at full resolution in windows with --tile")
_BOMB_LOCK = threading.Lock()
# files that live in memory under a name, not on disk: a streamed shard's sample while the task's dataset reads it
# (data/shards.py). open_image looks here before the disk.
IN_MEMORY: dict[str, bytes] = {}
# cnnkit refuses an image over the limit itself, in one line naming the file (open_image); Pillow's warning
# for images between once and twice its own limit would only repeat that, or contradict a raised --max-pixels
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def is_image_file(path: Path) -> bool:
    """Pictures by their suffix, and DICOM files (.dcm, .dicom, or the usual PACS export without a suffix)."""
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_file(path)


# DICOM files by suffix; PACS exports name them IM0001 or by their UID (1.2.840.113619.2.55.…), no suffix of their own
DICOM_SUFFIXES = (".dcm", ".dicom")
# Pillow modes holding more than 8 bits a sample: read by their values (data/intensity.py), not squeezed into 8 bits
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def is_dicom_file(path: Path) -> bool:
    """.dcm / .dicom, or a file without a suffix (or with a number for one, as UID names have) that holds the
    DICOM marker. Only those few files are opened; any other suffix answers from the name alone."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or dicom_without_suffix(path)


def dicom_without_suffix(path: Path) -> bool:
    """A DICOM file named without a DICOM suffix (IM0001, 1.2.840.…): b'DICM' after the 128-byte preamble."""
    suffix = path.suffix.lower()
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except OSError:  # a folder, unreadable: not a DICOM file
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_medical_file(path: Path) -> bool:
    """DICOM and NIfTI files: Pillow cannot open them; data/medical.py reads them."""
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz") or is_dicom_file(path)


def is_deep_colour_tiff(image: Image.Image) -> bool:
    """A 16-bit (or deeper) RGB TIFF, which Pillow opens as 8-bit RGB keeping only the high byte."""
    if image.format != "TIFF" or image.mode not in ("RGB", "RGBA"):
        return False
    bits_per_sample = getattr(image, "tag_v2", {}).get(258, (8,))  # TIFF tag 258 = BitsPerSample
    bits_per_sample = bits_per_sample if isinstance(bits_per_sample, tuple) else (bits_per_sample,)
    return max(bits_per_sample) > 8


def needs_values(image: Image.Image, intensity=None) -> bool:
    """True when an opened picture is read by its values and normalised (data/intensity.py) rather than taken as
    8-bit RGB: more than 8 bits a sample, or an intensity spec (IntensitySpec) other than the 8-bit default."""
    if intensity is not None and not intensity.eight_bit_as_is:
        return True
    return image.mode in DEEP_MODES or is_deep_colour_tiff(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and float grayscale are rescaled by their own dtype range (16-bit by 65535) rather than
    clipped at 255; alpha is composited on black, as a palette image with transparency would show.
    load_image does not come here for 16-bit and float images: it normalises their values (data/intensity.py),
    since an 8-bit view of 12-bit data in a 16-bit container keeps only 16 grey levels.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if mode == "F":
            lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
            array = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        elif mode == "I" and array.max(initial=0) <= 255 and array.min(initial=0) >= 0:
            pass  # 32-bit container holding 8-bit values (e.g. some PNG decoders)
        else:
            array = array.astype(np.float64) / 65535.0 * 255.0
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _reason(exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"truncated image ({reason})" if "truncated" in reason.lower() else reason


@contextmanager
def image_errors(path: Path) -> Iterator[None]:
    """Pillow's errors while reading ``path`` as one CnnkitError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CnnkitError(f"{path}: cannot read image: {_reason(exc)}", "re-export or remove the file") from None


def read_picture(path: str | Path) -> Image.Image:
    """A picture file as 8-bit RGB, upright, taken as it is (deep images go through data/images.load_image)."""
    path = Path(path)
    with image_errors(path), open_image(path) as image:
        turn = orientation(image)
        image.load()
        return to_rgb(upright(image, turn))


def stem_of(path: Path) -> str:
    """NAME of NAME.png, and of NAME.nii.gz; the whole name of a DICOM file named without a suffix (IM0001,
    1.2.840.…: its mask is masks/SPLIT/1.2.840.….png)."""
    name = path.name
    for suffix in (".nii.gz",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if dicom_without_suffix(path) else path.stem


# ---------------------------------------------------------------------------------------------------------------
# Orientation: phones store the sensor's pixels and an EXIF tag saying how to turn them for display

def orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened, not yet loaded image, 1..8 (1: as stored; 6: turn 90 degrees
    clockwise; 5-8 swap width and height), from the header alone. A damaged EXIF block counts as 1."""
    try:
        # the base method reads the header's EXIF (and XMP); PNG's own would decode the whole file looking
        # for an eXIf chunk after the pixels, which a size probe must never do
        value = Image.Image.getexif(image).get(ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - EXIF parsers fail in many ways on broken blocks; the pixels are still good
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as the file stores them. Pillow 11+ reports a TIFF's size already
    turned by its orientation tag (and turns its pixels on load): its ImageWidth/ImageLength tags say."""
    tags = getattr(image, "tag_v2", None)
    if image.format == "TIFF" and tags is not None and 256 in tags and 257 in tags:
        return int(tags[256]), int(tags[257])
    return image.size


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as viewers show the image (EXIF orientation applied), from the header alone."""
    width, height = stored_size(image)
    return (height, width) if orientation(image) in (5, 6, 7, 8) else (width, height)


def upright(image: Image.Image, turn: int) -> Image.Image:
    """The loaded image turned as its orientation ``turn`` (orientation(), read before loading) says."""
    method = _TRANSPOSE.get(turn)
    # Pillow 11+ turns a TIFF by its orientation tag as it loads it, and drops the tag
    if method is None or (image.format == "TIFF" and ORIENTATION not in image.tag_v2):
        return image
    return image.transpose(method)


def recorded_frame(recorded: tuple[int, int], stored: tuple[int, int], displayed: tuple[int, int]) -> str:
    """Which picture an annotation's recorded (width, height) describes: "displayed" (also when stored and
    displayed agree), "stored" (a turned photo recorded unturned), "scaled" (the displayed size times one
    factor, within a pixel of rounding) or "mismatch"."""
    if tuple(recorded) == tuple(displayed):
        return "displayed"
    if tuple(recorded) == tuple(stored):
        return "stored"
    (w, h), (width, height) = recorded, displayed
    if w > 0 and h > 0 and (abs(w * height / h - width) <= 1 or abs(h * width / w - height) <= 1):
        return "scaled"
    return "mismatch"


def size_mismatch(path: Path, recorded: tuple[int, int], stored: tuple[int, int], displayed: tuple[int, int]) -> str:
    shown = f"{displayed[0]}x{displayed[1]}"
    if displayed != stored:
        shown += f" as shown ({stored[0]}x{stored[1]} as stored, turned by its EXIF orientation)"
    return f"{path}: the annotation records {recorded[0]}x{recorded[1]} but the image is {shown}"


# ---------------------------------------------------------------------------------------------------------------
# Pixel limit: a small file can declare billions of pixels (a decompression bomb)

def max_pixels() -> int | None:
    """The pixel limit in force: --max-pixels of the running command (None: no limit), else Pillow's own."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value) or None
    except ValueError:
        raise CnnkitError(f"{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels") from None


@contextmanager
def pixel_limit(limit: int | None) -> Iterator[None]:
    """Images read inside refuse more than ``limit`` pixels (0: no limit; None: leave the limit as it is).
    Held in the environment so that data-loader workers, forked or spawned, read with the same limit."""
    if limit is None:
        yield
        return
    if limit < 0:
        raise CnnkitError(f"--max-pixels must be 0 (no limit) or more, got {limit}")
    saved = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(int(limit))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = saved


def open_image(source: str | Path | BinaryIO, name: str | Path | None = None, check_limit: bool = True) -> Image.Image:
    """Image.open (the header only; use it in a ``with``) under cnnkit's pixel limit: an image larger than the
    limit is a CnnkitError naming the file, the limit and the option that raises it. ``check_limit=False``
    for size probes, which decode nothing. Pillow's own errors (unreadable, truncated) pass through."""
    if isinstance(source, (str, Path)) and str(source) in IN_MEMORY:
        name, source = name or source, io.BytesIO(IN_MEMORY[str(source)])
    try:
        image = Image.open(source)
    except Image.DecompressionBombError:
        # Pillow refuses a header above twice its own limit before cnnkit's (maybe higher) limit can apply:
        # open it again with Pillow's check off, under a lock, only to read the size (nothing is decoded)
        with _BOMB_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                if hasattr(source, "seek"):
                    source.seek(0)
                image = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    limit = max_pixels() if check_limit else None
    width, height = image.size
    if limit is not None and width * height > limit:
        image.close()
        raise CnnkitError(f"{name or source}: {width}x{height} pixels ({_megapixels(width * height)}) exceed the pixel limit "
                          f"of {_megapixels(limit)}, a guard against decompression bombs", MAX_PIXELS_HINT)
    return image


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} MP"
