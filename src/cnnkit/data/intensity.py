"""How pixel values become the model's input, the same for every task: the intensity settings a run records in
its weights (--normalize, --window) and the one reader that applies them.

- 8-bit pictures (photos, most datasets) are read as they are, 8-bit RGB: the fast path, unchanged.
- Deeper data (16-bit PNG/TIFF, float TIFF, DICOM, NIfTI) is read with its own values (data/medical.py) and
  mapped to [0, 1] by medical.normalise. The default, "auto", takes a DICOM's own window, else each image's
  0.5-99.5 percentiles. An 8-bit view of a 16-bit container (value / 257, or / 65535 x 255) is what CT, MR, X-ray
  and microscopy exports must not get: their 10-12 significant bits come out as 4-16 grey levels.

Segmentation keeps the float [0, 1] values (read_pixels); classification and detection, whose transforms and
drawings work on 8-bit RGB, take them quantised to 256 levels (read_rgb8, through images.load_image), which is
still 16 times more than the 8-bit view of 12-bit data holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NORMALIZE_CHOICES = ("auto", "percentile", "range", "window")


@dataclass(frozen=True)
class IntensitySpec:
    """``normalize`` auto | percentile | range | window, and the ``window`` (low, high) in the files' units for
    window (auto uses it when given). Recorded in the weights as {"normalize", "window"}."""

    normalize: str = "auto"
    window: tuple[float, float] | None = None

    @property
    def eight_bit_as_is(self) -> bool:
        """True when 8-bit pictures are read as they are (/255 later), the fast path."""
        return self.normalize in ("auto", "range") and self.window is None

    def to_dict(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "window": list(self.window) if self.window else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, missing: str = "auto") -> "IntensitySpec":
        """The spec a weights file records; ``missing``: the normalisation of files that record none."""
        if not data:
            return cls(missing)
        window = data.get("window")
        return cls(data.get("normalize", "auto"), tuple(float(v) for v in window) if window else None)

    @classmethod
    def from_options(cls, normalize: str = "auto", window: str | None = None) -> "IntensitySpec":
        """From --normalize and --window "LOW,HIGH" (a window implies window normalisation)."""
        from cnnkit.config import parse_window

        low_high = parse_window(window) if window else None
        return cls("window" if low_high else normalize, low_high)


# Classifiers and detectors saved before their weights recorded an intensity spec read 16-bit images divided by
# 65535 ("range"): reading them so keeps their predictions as they were. 8-bit images are the same either way.
BEFORE_RECORD = "range"


def spec_of(cfg: Any) -> IntensitySpec:
    """The intensity spec of a training config (its --normalize and --window; the defaults where it has none)."""
    return IntensitySpec.from_options(getattr(cfg, "normalize", "auto"), getattr(cfg, "window", None))


def read_values(path: str | Path, spec: IntensitySpec | None = None, slice_index: int | None = None) -> np.ndarray:
    """float32 HxWx3 in [0, 1]: the file's own values (medical.read_intensity) normalised by ``spec``."""
    from cnnkit.data.medical import normalise, read_intensity, to_rgb_float

    spec = spec or IntensitySpec()
    scaled = normalise(read_intensity(path, slice_index), spec.normalize, spec.window)
    return scaled.astype(np.float32, copy=False) if scaled.ndim == 3 else to_rgb_float(scaled)


def read_pixels(path: str | Path, spec: IntensitySpec | None = None, slice_index: int | None = None) -> np.ndarray:
    """HxWx3: uint8 for 8-bit pictures read as they are (the spec allows it), else float32 in [0, 1] (read_values)."""
    from cnnkit.data.decode import is_medical_file, needs_values, open_image, read_picture

    spec = spec or IntensitySpec()
    path = Path(path)
    if not is_medical_file(path) and spec.eight_bit_as_is:
        try:
            with open_image(path, check_limit=False) as probe:  # the header only: read_picture applies the limit
                eight_bit = not needs_values(probe, spec)
        except (OSError, ValueError, SyntaxError):
            eight_bit = True  # read_picture raises the one-line error
        if eight_bit:
            return np.asarray(read_picture(path))
    return read_values(path, spec, slice_index)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 (rounded); uint8 passes through."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def read_rgb8(path: str | Path, spec: IntensitySpec | None = None):
    """The file's values normalised by ``spec`` as an 8-bit RGB PIL image (the input of classify and detect)."""
    from PIL import Image

    return Image.fromarray(to_uint8(read_values(path, spec)), "RGB")


# An 8-bit view that keeps fewer grey levels than this has lost most of the data's range (data check warns)
FEW_LEVELS = 64


def eight_bit_levels(image) -> tuple[int, int, int] | None:
    """(grey levels left, lowest value, highest value) of a decoded 16-bit picture viewed as 8 bits by its
    container (value * 255 / 65535, rounded: what a plain 8-bit conversion or --normalize range keeps);
    None for any other picture. 12-bit data (0..4095) keeps 17 levels (0..16)."""
    if not (image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")):
        return None
    values = np.asarray(image)
    if values.size == 0:
        return None
    low, high = int(values.min()), int(values.max())
    scale = 255.0 / 65535.0
    return int(round(high * scale) - round(low * scale)) + 1, low, high


def few_levels_message(split: str, found: list[tuple[Path, int, int, int]], total: int) -> str:
    """One warning for the 16-bit images of a split whose 8-bit view keeps under FEW_LEVELS grey levels;
    ``found``: (path, levels, low, high) of each."""
    levels = max(f[1] for f in found)
    low, high = min(f[2] for f in found), max(f[3] for f in found)
    return (f"{len(found)} of {total} {split} images are 16-bit with values only in {low}..{high} of 0..65535 "
            f"(e.g. {found[0][0].name}): an 8-bit view (value/257) keeps at most {levels} grey levels; cnnkit reads "
            "them by their values (--normalize auto, the default, or --window LOW,HIGH): avoid --normalize range "
            "and converting them to 8-bit files")
