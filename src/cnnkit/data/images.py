"""Decode any image file into 8-bit RGB, the same way everywhere (train, val, predict, check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from cnnkit.errors import CnnkitError

# Suffixes we treat as images when scanning folders (lower-case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# A truncated file must fail loudly, not decode into a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and float grayscale are rescaled by their own dtype range (16-bit by 65535) rather than
    clipped at 255; alpha is composited on black, as a palette image with transparency would show.
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


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as 8-bit RGB; raise CnnkitError naming the file when it cannot be decoded."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file", "check the path") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated image ({reason})"
        raise CnnkitError(f"{path}: cannot read image: {reason}", "re-export or remove the file") from None
