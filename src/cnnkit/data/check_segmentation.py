"""`cnnkit data check` for segmentation datasets (the masks layout of data/segmentation.py).

Unlike the loader, which stops at the first bad file, this reads every image and mask once (in a
thread pool: decoding PNGs releases the GIL) and collects every problem as a finding: images without
masks and masks without images, mask and image sizes that differ, values that are not classes, colour
masks where index masks are expected (with the colours found and, when they are Pascal VOC's, the
exact convert command), unreadable files, masks with nothing but background, classes that never
occur in train. It also counts, per split, the pixel share of each class and how many images
contain it.
"""

from __future__ import annotations

import os
import shlex
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ImageFile
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnkit.data.check import CheckReport, _progress, _short, _stats, print_findings
from cnnkit.data.images import displayed_size, open_image
from cnnkit.data.intensity import FEW_LEVELS, eight_bit_levels, few_levels_message
from cnnkit.data.segmentation import (MASK_IGNORE, MEDICAL_SUFFIXES, SPLITS, SegmentSample, image_size,
                                      is_segmentation_input, read_classes, read_mask, stem_of, suffix_of)
from cnnkit.data.sources import walk_files
from cnnkit.errors import CnnkitError

NAMED_EXAMPLES = 3  # files named in a finding that stands for many
LISTED_COLOURS = 12  # colours spelled out in the colour-mask finding
COLOUR_MODES = ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV")  # what read_mask refuses as colour masks
READ_THREADS = 8


@dataclass
class SegmentationReport(CheckReport):
    """CheckReport (findings, has_errors, to_dict, save) with the masks layout's own numbers in
    ``segmentation``; ``counts`` holds the images containing each class, ``modes`` the mask modes."""

    layout: str = "segmentation"
    segmentation: dict = field(default_factory=dict)


@dataclass
class SplitFiles:
    """The images and masks of one split, paired by relative path and NAME (as the loader pairs them)."""

    image_dir: Path
    mask_dir: Path
    pairs: list[SegmentSample] = field(default_factory=list)
    images_without_masks: list[Path] = field(default_factory=list)
    masks_without_images: list[Path] = field(default_factory=list)
    mask_dir_missing: bool = False

    @property
    def image_count(self) -> int:
        return len(self.pairs) + len(self.images_without_masks)

    @property
    def mask_count(self) -> int:
        return len(self.pairs) + len(self.masks_without_images)


@dataclass
class _MaskFacts:
    """What one worker learnt about one (image, mask) sample."""

    split: str
    sample: SegmentSample
    counts: np.ndarray | None = None  # 256 bins of the mask's values (None: no index mask read)
    beyond: dict[int, int] = field(default_factory=dict)  # values outside 0..255 (16-bit, NIfTI) -> pixels
    colours: Counter | None = None  # colour masks: packed 0xRRGGBB -> pixels
    mode: str | None = None
    image_size: tuple[int, int] | None = None
    colour_shape: tuple[int, int] | None = None  # (height, width) of a colour mask
    view: tuple[int, int, int] | None = None  # a 16-bit image viewed as 8 bits: (grey levels, low, high)
    problems: list[tuple[str, Path, str]] = field(default_factory=list)  # (level, path, message)


# ---------------------------------------------------------------------------------------- pairing

def pair_masks(root: Path) -> dict[str, SplitFiles]:
    """Split -> its files: images/SPLIT with masks/SPLIT, or images/ with masks/ as one train split.
    Nothing is raised: what is missing is listed, for the checker to report and the converter to refuse."""
    image_root, mask_root = root / "images", root / "masks"
    split_dirs = [s for s in SPLITS if (image_root / s).is_dir()]
    if not split_dirs:
        return {"train": _pair_folder(image_root, mask_root)}
    splits = {split: _pair_folder(image_root / split, mask_root / split) for split in split_dirs}
    for split in SPLITS:  # masks/test without images/test: every mask there is an orphan
        if split not in splits and (mask_root / split).is_dir():
            orphans = _pair_folder(image_root / split, mask_root / split)
            splits[split] = orphans
    return splits


def _pair_folder(image_dir: Path, mask_dir: Path) -> SplitFiles:
    files = SplitFiles(image_dir, mask_dir, mask_dir_missing=not mask_dir.is_dir())
    images = [p for p in walk_files(image_dir) if is_segmentation_input(p)] if image_dir.is_dir() else []
    masks: dict[str, list[Path]] = {}
    if mask_dir.is_dir():
        for path in walk_files(mask_dir):
            if is_segmentation_input(path):
                masks.setdefault((path.parent.relative_to(mask_dir) / stem_of(path)).as_posix(), []).append(path)
    for image in images:
        found = masks.pop((image.parent.relative_to(image_dir) / stem_of(image)).as_posix(), None)
        if not found:
            files.images_without_masks.append(image)
            continue
        # the loader's choice: NAME.png first (a JPEG mask is lossy), then the image's own suffix (NIfTI)
        found.sort(key=lambda p: (suffix_of(p) != ".png", suffix_of(p) != suffix_of(image)))
        files.pairs.append(SegmentSample(image, found[0]))
    files.masks_without_images = sorted(p for paths in masks.values() for p in paths)
    return files


def _expand(sample: SegmentSample) -> list[SegmentSample]:
    """One sample per slice of a NIfTI volume or multi-frame DICOM (CnnkitError when image and mask differ)."""
    if suffix_of(sample.image) not in MEDICAL_SUFFIXES:
        return [sample]
    from cnnkit.data.medical import count_slices

    slices = count_slices(sample.image)
    if suffix_of(sample.image) == ".dcm" and slices == 1:
        return [sample]
    mask_slices = count_slices(sample.mask)
    if mask_slices != slices:
        raise CnnkitError(f"{mask_slices} slices, but {sample.image} has {slices}; a volume's mask has the volume's shape")
    return [SegmentSample(sample.image, sample.mask, k) for k in range(slices)]


# ---------------------------------------------------------------------------------------- reading

def _one_line(exc: BaseException) -> str:
    if isinstance(exc, CnnkitError):
        return exc.message
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"truncated image ({text})" if "truncated" in text.lower() or isinstance(exc, EOFError) else text


def _inspect(split: str, sample: SegmentSample) -> _MaskFacts:
    """Decode the image (size, readable) and the mask (mode, values or colours); never raises."""
    facts = _MaskFacts(split, sample)
    where = f" slice {sample.slice_index}" if sample.slice_index is not None else ""
    try:
        if suffix_of(sample.image) in MEDICAL_SUFFIXES:
            facts.image_size = image_size(sample)
        else:
            with open_image(sample.image) as image:  # over the pixel limit: the loader would skip it
                facts.image_size = displayed_size(image)  # as the loader turns it (EXIF orientation)
                # PNG's verify reads every chunk and checks its CRC (a truncated or damaged file fails) at a twentieth
                # of the cost of decoding; other formats are decoded whole, so a truncated JPEG shows here, not in training
                if image.format == "PNG" and not image.mode.startswith("I"):
                    image.verify()
                else:
                    image.load()
                    facts.view = eight_bit_levels(image)  # 16-bit: does an 8-bit view keep its range?
    except CnnkitError as exc:
        facts.problems.append(("error", sample.image, str(exc).removeprefix(f"{sample.image}: ")))
    except Exception as exc:  # noqa: BLE001 - a checker reports every decoder failure, whatever its type
        facts.problems.append(("error", sample.image,
                               f"cannot read image{where}: {_one_line(exc)}; re-export or remove the file"))
    try:
        mask = _read_mask_or_colours(sample, facts)
    except Exception as exc:  # noqa: BLE001
        facts.problems.append(("error", sample.mask, f"cannot read mask{where}: {_one_line(exc)}; re-export or remove the file"))
        return facts
    if mask is None:  # a colour mask: its colours were counted
        height, width = facts.colour_shape
    elif mask.ndim != 2:
        facts.problems.append(("error", sample.mask, f"mask{where} of shape {mask.shape}; expected one value per pixel"))
        return facts
    else:
        height, width = mask.shape
        _count_values(mask, facts)
    if facts.image_size is not None and (width, height) != facts.image_size:
        facts.problems.append(("error", sample.mask, f"mask{where} is {width}x{height} but {sample.image} is "
                                                     f"{facts.image_size[0]}x{facts.image_size[1]}; a mask has its image's size"))
    return facts


def _read_mask_or_colours(sample: SegmentSample, facts: _MaskFacts) -> np.ndarray | None:
    """The index mask, or None for a colour mask after counting its colours into ``facts``."""
    if suffix_of(sample.mask) in MEDICAL_SUFFIXES:
        facts.mode = "volume" if sample.slice_index is not None else suffix_of(sample.mask).lstrip(".")
        return read_mask(sample)
    with open_image(sample.mask) as image:
        image.load()
        facts.mode = image.mode
        if image.mode not in COLOUR_MODES:
            return read_mask(sample) if image.mode not in ("L", "P") else np.asarray(image)
        rgb = np.asarray(image.convert("RGB"))
    facts.colour_shape = rgb.shape[:2]
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, counts = np.unique(packed, return_counts=True)
    facts.colours = Counter(dict(zip(colours.tolist(), counts.tolist())))
    return None


def _count_values(mask: np.ndarray, facts: _MaskFacts) -> None:
    if mask.dtype == np.uint8:
        facts.counts = np.bincount(mask.ravel(), minlength=MASK_IGNORE + 1)
        return
    values = mask.astype(np.int64).ravel()
    inside = (values >= 0) & (values <= MASK_IGNORE)
    facts.counts = np.bincount(values[inside], minlength=MASK_IGNORE + 1)
    if not inside.all():
        beyond, counts = np.unique(values[~inside], return_counts=True)
        facts.beyond = dict(zip(beyond.tolist(), counts.tolist()))


# ---------------------------------------------------------------------------------------- checking

def check_segmentation(root: str | Path, progress: bool = True) -> SegmentationReport:
    """Scan ROOT/images + ROOT/masks (+ classes.txt) and report every problem at once."""
    root = Path(root)
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such dataset folder", "pass the folder that holds images/ and masks/")
    report = SegmentationReport(root=str(root))
    classes = None
    try:
        classes = read_classes(root)
    except CnnkitError as exc:
        reason = exc.message.removeprefix(f"{root / 'classes.txt'}: ")
        report._add("error", root / "classes.txt", reason + (f" ({exc.hint})" if exc.hint else ""))

    splits = pair_masks(root)
    samples: list[tuple[str, SegmentSample]] = []
    for split, files in splits.items():
        _report_pairing(report, split, files)
        for pair in files.pairs:
            if suffix_of(pair.mask) in (".jpg", ".jpeg"):
                report._add("warning", pair.mask,
                            "JPEG mask: lossy compression smears class edges into other values; save masks as PNG")
            try:
                samples += [(split, s) for s in _expand(pair)]
            except CnnkitError as exc:
                report._add("error", pair.mask, exc.message)
    if "train" not in splits or not splits["train"].image_count:
        report._add("error", root / "images" / "train", "no training images; expected images/train/NAME.png with "
                                                         "masks/train/NAME.png (or images/ and masks/ without split folders)")

    facts = _read_all(samples, progress)
    for fact in facts:
        for level, path, message in fact.problems:
            report._add(level, path, message)
    inferred = classes is None
    if inferred:
        totals = sum((f.counts for f in facts if f.counts is not None), np.zeros(MASK_IGNORE + 1, np.int64))
        seen = np.flatnonzero(totals[:MASK_IGNORE])
        top = int(seen.max()) if len(seen) else 0
        classes = ["background"] + [f"class_{k}" for k in range(1, max(top, 1) + 1)]
        if not (root / "classes.txt").exists():
            report._add("warning", root / "classes.txt", f"missing: {len(classes)} classes (0..{len(classes) - 1}) inferred from "
                                                         "the masks' values, named class_K; write classes.txt (background first) "
                                                         "to name them")
    report.classes = classes
    report.segmentation["classes_source"] = "inferred" if inferred else "classes.txt"
    _values_not_in_classes(report, facts, len(classes), inferred)
    _colour_masks(report, root, facts, len(samples))
    _statistics(report, root, splits, facts)
    return report


def _read_threads() -> int:
    # decoding releases the GIL, and file reads wait on the disk: a few threads per core pay off
    return min(READ_THREADS, (os.cpu_count() or 1) * 4)


def _read_all(samples: list[tuple[str, SegmentSample]], progress: bool) -> list[_MaskFacts]:
    saved_flag = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be an error, not a grey half-image
    bar = _progress() if progress and samples else None
    facts = []
    try:
        task = bar.add_task("check", total=len(samples)) if bar else None
        if bar:
            bar.start()
        with ThreadPoolExecutor(max_workers=_read_threads()) as pool:
            for fact in pool.map(lambda item: _inspect(*item), samples):  # in order: findings come out the same every run
                facts.append(fact)
                if bar:
                    bar.advance(task)
    finally:
        if bar:
            bar.stop()
        ImageFile.LOAD_TRUNCATED_IMAGES = saved_flag
    return facts


def _named(paths: list[Path], root: Path) -> str:
    shown = ", ".join(_short(str(p), str(root)) for p in paths[:NAMED_EXAMPLES])
    return shown + (f" and {len(paths) - NAMED_EXAMPLES} more" if len(paths) > NAMED_EXAMPLES else "")


def _report_pairing(report: SegmentationReport, split: str, files: SplitFiles) -> None:
    root = Path(report.root)
    if files.mask_dir_missing and files.images_without_masks:
        report._add("error", files.mask_dir, f"missing: the {len(files.images_without_masks)} images of {split} have no masks; "
                                             f"add {_short(str(files.mask_dir), report.root)}/NAME.png for each")
    elif files.images_without_masks:
        report._add("error", files.image_dir, f"{len(files.images_without_masks)} of {files.image_count} {split} images have no "
                                              f"mask ({_named(files.images_without_masks, root)}); the loader refuses them: add "
                                              "masks/SPLIT/NAME.png or move the images out")
    if files.masks_without_images:
        report._add("warning", files.mask_dir, f"{len(files.masks_without_images)} {split} masks have no image "
                                               f"({_named(files.masks_without_images, root)}); the loader ignores them")


def _values_not_in_classes(report: SegmentationReport, facts: list[_MaskFacts], num_classes: int, inferred: bool) -> None:
    """Index values other than the classes and 255 (ignore): one error per mask, with the values and their pixels."""
    limit = MASK_IGNORE if inferred else num_classes  # inferred classes reach up to 254
    known = f"{report.root}/classes.txt names {num_classes} classes (0..{num_classes - 1}; {MASK_IGNORE} = ignore)"
    if inferred:
        known = f"index masks hold 0..{MASK_IGNORE - 1} ({MASK_IGNORE} = ignore)"
    for fact in facts:
        if fact.counts is None:
            continue
        bad = {int(v): int(fact.counts[v]) for v in np.flatnonzero(fact.counts[limit:]) + limit if v != MASK_IGNORE}
        bad.update(fact.beyond)
        if bad:
            where = f" slice {fact.sample.slice_index}" if fact.sample.slice_index is not None else ""
            values = ", ".join(map(str, sorted(bad)[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
            report._add("error", fact.sample.mask, f"values{where} {values} ({sum(bad.values())} px) are not classes: {known}; "
                                                   "add the classes to classes.txt or fix the mask")


def _colour_masks(report: SegmentationReport, root: Path, facts: list[_MaskFacts], total: int) -> None:
    """One error for all colour masks: the colours found, and whether they are Pascal VOC's (then the convert command)."""
    coloured = [f for f in facts if f.colours is not None]
    if not coloured:
        return
    from cnnkit.data.palettes import VOC_BOUNDARY, VOC_CLASSES, voc_colours

    colours = sum((f.colours for f in coloured), Counter())
    voc = {colour: index for index, colour in enumerate(voc_colours())}
    voc[VOC_BOUNDARY] = MASK_IGNORE
    found = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c, _ in colours.most_common()]
    rows = [{"rgb": list(rgb), "pixels": int(colours[(rgb[0] << 16) | (rgb[1] << 8) | rgb[2]]), "voc_index": voc.get(rgb)}
            for rgb in found]
    all_voc = all(row["voc_index"] is not None for row in rows)
    listed = ", ".join(f"{tuple(row['rgb'])} {row['pixels']} px" for row in rows[:LISTED_COLOURS])
    more = f" and {len(rows) - LISTED_COLOURS} more" if len(rows) > LISTED_COLOURS else ""
    modes = ", ".join(sorted({f.mode for f in coloured}))
    message = (f"{len(coloured)} of {total} masks are {modes} colour images ({_named([f.sample.mask for f in coloured], root)}) "
               f"where index masks (one class index per pixel) are expected; {len(rows)} colours: {listed}{more}; ")
    target = shlex.quote(str(root.parent / f"{root.name}-index"))
    if all_voc:
        mapped = ", ".join(f"{tuple(row['rgb'])} -> {row['voc_index']} "
                           f"{VOC_CLASSES[row['voc_index']] if row['voc_index'] < len(VOC_CLASSES) else 'ignore (VOC boundary)'}"
                           for row in sorted(rows, key=lambda r: r["voc_index"]))
        message += (f"all are Pascal VOC palette colours ({mapped}); convert them: "
                    f"`cnnkit data convert {shlex.quote(str(root))} --to masks --palette voc --out {target}`")
    else:
        strange = next(tuple(row["rgb"]) for row in rows if row["voc_index"] is None)
        grey = all(r == g == b for r, g, b in found)
        message += (f"not the Pascal VOC palette (e.g. {strange} is not a VOC colour)"
                    + ("; every colour is grey (v, v, v): if v is the class index, save the masks as single-channel PNGs"
                       if grey else "")
                    + "; write a palette file (lines `NAME R G B` in class-index order) and convert: "
                    f"`cnnkit data convert {shlex.quote(str(root))} --to masks --palette FILE --out {target}`")
    report._add("error", coloured[0].sample.mask, message)
    report.segmentation["colour_masks"] = {"files": len(coloured), "colours": rows, "voc_palette": all_voc,
                                           "examples": [str(f.sample.mask) for f in coloured[:NAMED_EXAMPLES]]}


def _statistics(report: SegmentationReport, root: Path, splits: dict[str, SplitFiles], facts: list[_MaskFacts]) -> None:
    """Per split: file counts, pixel counts and shares, images containing each class, empty masks, sizes, modes."""
    names = report.classes
    k = len(names)
    by_split: dict[str, list[_MaskFacts]] = {split: [] for split in splits}
    for fact in facts:
        by_split[fact.split].append(fact)
    seg = report.segmentation
    seg.update({"counts": "images containing each class", "files": {}, "pixel_counts": {}, "pixel_share": {}, "ignore_pixels": {}, "empty_masks": {}})
    for split, files in splits.items():
        indexed = [f for f in by_split[split] if f.counts is not None]
        totals = sum((f.counts for f in indexed), np.zeros(MASK_IGNORE + 1, np.int64))
        pixels = totals[:k]
        share = pixels / pixels.sum() if pixels.sum() else np.zeros(k)
        empty = [f for f in indexed if not f.counts[1:MASK_IGNORE].any() and not f.beyond]
        seg["files"][split] = {"images": files.image_count, "masks": files.mask_count, "pairs": len(files.pairs),
                               "samples": len(by_split[split]), "images_without_masks": len(files.images_without_masks),
                               "masks_without_images": len(files.masks_without_images)}
        seg["pixel_counts"][split] = {name: int(n) for name, n in zip(names, pixels)}
        seg["pixel_share"][split] = {name: float(s) for name, s in zip(names, share)}
        seg["ignore_pixels"][split] = int(totals[MASK_IGNORE])
        seg["empty_masks"][split] = len(empty)
        report.counts[split] = {name: sum(int(f.counts[c] > 0) for f in indexed) for c, name in enumerate(names)}
        sizes = [f.image_size for f in by_split[split] if f.image_size is not None]
        report.sizes[split] = {"width": _stats([w for w, _ in sizes]), "height": _stats([h for _, h in sizes])} if sizes else {}
        report.modes[split] = dict(Counter(f.mode for f in by_split[split] if f.mode).most_common())
        narrow = [(f.sample.image, *f.view) for f in by_split[split] if f.view is not None and f.view[0] < FEW_LEVELS]
        if narrow:
            report._add("warning", files.image_dir, few_levels_message(split, narrow, len(sizes)))
        if empty:
            report._add("warning", files.mask_dir, f"{len(empty)} of {len(indexed)} {split} masks are all background or ignore "
                                                   f"({_named([f.sample.mask for f in empty], root)}); fine as negatives, "
                                                   "a mistake if they should show objects")
    train = seg["pixel_counts"].get("train")
    if train and any(train.values()):
        absent = [name for name, n in train.items() if n == 0]
        if absent:
            report._add("warning", root / "masks", f"classes with no pixels in train: {', '.join(absent)}; the model cannot "
                                                   "learn them: add examples or drop them from classes.txt")


# ---------------------------------------------------------------------------------------- printing

def _size_text(size: dict | None) -> str:
    """64x64 when every image has that size, else 48-64 x 60-80 (width range x height range)."""
    if not size:
        return "-"
    width, height = size["width"], size["height"]
    span = lambda d: f"{d['min']}" if d["min"] == d["max"] else f"{d['min']}-{d['max']}"  # noqa: E731
    return f"{span(width)}x{span(height)}" if width["min"] == width["max"] and height["min"] == height["max"] \
        else f"{span(width)} x {span(height)}"


def print_segmentation_report(report: SegmentationReport, console: Console | None = None) -> None:
    """Files per split, pixel share and images per class, sizes and mask modes, findings, verdict."""
    console = console or Console()
    seg = report.segmentation
    splits = list(seg.get("files", {}))
    title = f"{report.root} (segmentation, classes from {seg.get('classes_source', '?')})"
    files = Table(title=Text(title), title_justify="left")
    for column in ("split", "images", "masks", "pairs", "no mask", "no image", "empty", "image size", "mask modes"):
        files.add_column(column, justify="left" if column in ("split", "image size", "mask modes") else "right")
    for split in splits:
        counts = seg["files"][split]
        numbers = ("images", "masks", "pairs", "images_without_masks", "masks_without_images")
        files.add_row(split, *(str(counts[key]) for key in numbers), str(seg["empty_masks"][split]),
                      _size_text(report.sizes.get(split)),
                      ", ".join(f"{m} {n}" for m, n in report.modes.get(split, {}).items()) or "-")
    console.print(files)

    shares = Table(title="pixel share (images) per class", title_justify="left")
    shares.add_column("index", justify="right")
    shares.add_column("class")
    for split in splits:
        shares.add_column(split, justify="right")
    for index, name in enumerate(report.classes):
        cells = [f"{seg['pixel_share'][s][name]:.1%} ({report.counts[s][name]})" for s in splits]
        shares.add_row(str(index), Text(name), *cells)
    shares.add_section()
    shares.add_row("255", "ignore", *(f"{seg['ignore_pixels'][s]} px" for s in splits))
    console.print(shares)

    print_findings(report, f"{sum(seg['files'][s]['pairs'] for s in splits)} image/mask pairs", console)

