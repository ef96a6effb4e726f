"""Class colours: the palette cnnkit draws masks with (Pascal VOC's bit-spread colours), VOC's class names
and boundary colour, and palette files (`data convert --to masks --palette`, `data check`'s colour masks)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.errors import CnnkitError

MASK_IGNORE = 255  # the ignore value of index masks
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOC_BOUNDARY = (224, 224, 192)  # the outline VOC draws around objects: "don't care", i.e. ignore


def palette(num_classes: int) -> np.ndarray:
    """[num_classes, 3] uint8 colours: black background, then Pascal VOC's bit-spread colours (distinct
    and the same in every tool that uses them)."""
    colours = np.zeros((max(num_classes, 1), 3), np.uint8)
    for k in range(num_classes):
        c, r, g, b = k, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[k] = (r, g, b)
    return colours


@dataclass
class Palette:
    """Class names with their colours (index k = names[k]); ``ignore`` colours become 255."""

    source: str  # "voc" or the file
    names: list[str]
    colours: list[tuple[int, int, int]]
    ignore: list[tuple[int, int, int]] = field(default_factory=list)

    def lookup(self) -> dict[int, int]:
        """Packed 0xRRGGBB -> class index (or 255)."""
        table = {pack_colour(c): MASK_IGNORE for c in self.ignore}
        table.update({pack_colour(c): k for k, c in enumerate(self.colours)})
        return table

    def describe(self) -> str:
        known = [f"{c} {n}" for c, n in zip(self.colours, self.names)] + [f"{c} ignore" for c in self.ignore]
        return ", ".join(known)


def pack_colour(colour) -> int:
    r, g, b = (int(v) for v in colour)
    return (r << 16) | (g << 8) | b


def unpack_colour(packed: int) -> tuple[int, int, int]:
    return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255



def voc_colours() -> list[tuple[int, int, int]]:
    """Pascal VOC's 21 class colours, as cnnkit draws them (palette)."""
    return [tuple(int(v) for v in colour) for colour in palette(len(VOC_CLASSES))]


def read_palette(spec: str | Path) -> Palette:
    """``voc``, or a file: text lines ``NAME R G B`` (``#`` comments) or JSON ``{"name": [r, g, b], …}``,
    in class-index order (background first)."""
    if str(spec).lower() == "voc":
        return Palette("voc", list(VOC_CLASSES), voc_colours(), [VOC_BOUNDARY])
    path = Path(spec)
    if not path.is_file():
        raise CnnkitError(f"--palette {spec}: no such file", "pass voc, or a file with lines `NAME R G B` in class-index order")
    text = path.read_text(encoding="utf-8")
    entries: list[tuple[str, object, str]] = []  # (name, colour as written, where)
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CnnkitError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or not data:
            raise CnnkitError(f"{path}: expected a JSON object {{\"name\": [r, g, b], …}} in class-index order")
        entries = [(str(name), colour, f"{path}: {name!r}") for name, colour in data.items()]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                fields = line.rsplit(maxsplit=3)  # a name may hold spaces; the colour is the last three fields
                entries.append((fields[0] if len(fields) == 4 else "", fields[1:], f"{path}:{number}"))
    names, colours = [], []
    for name, colour, where in entries:
        if not name or not isinstance(colour, list) or len(colour) != 3:
            raise CnnkitError(f"{where}: expected `NAME R G B`",
                              "one class per line, in class-index order, e.g. `background 0 0 0`")
        try:
            rgb = tuple(int(v) for v in colour)
        except (TypeError, ValueError):
            raise CnnkitError(f"{where}: colour {colour} is not three integers") from None
        if not all(0 <= v <= 255 for v in rgb):
            raise CnnkitError(f"{where}: colour {rgb} out of range 0..255")
        if name in names:
            raise CnnkitError(f"{where}: class name {name!r} appears twice", "each line names one class index")
        if rgb in colours:
            raise CnnkitError(f"{where}: colour {rgb} is also class {colours.index(rgb)} ({names[colours.index(rgb)]})",
                              "each class needs its own colour")
        names.append(name)
        colours.append(rgb)
    if not names:
        raise CnnkitError(f"{path}: no classes", "one line `NAME R G B` per class, background first")
    if len(names) > MASK_IGNORE:
        raise CnnkitError(f"{path}: {len(names)} classes; index masks hold at most {MASK_IGNORE} (255 = ignore)")
    return Palette(str(path), names, colours)
