"""Semantic segmentation datasets: images with index masks of the same size.

    data = load_segmentation("path/to/data")          # ROOT/images/SPLIT/NAME.* + ROOT/masks/SPLIT/NAME.png
    data.classes                                      # from ROOT/classes.txt, background first
    data.splits["train"][0].image, .mask, .slice_index

Layout (DESIGN.md): ``images/SPLIT/NAME.EXT`` with ``masks/SPLIT/NAME.png`` (one byte per pixel: the
class index, 255 = ignore) and ``classes.txt`` (one name per line, index 0 first). Also read:
``images/NAME.EXT`` + ``masks/NAME.png`` without split folders (all train; val is cut off later),
palette PNGs whose indices are the classes (Pascal VOC's SegmentationClass), 16-bit masks, and
medical images: DICOM (``.dcm``) and NIfTI volumes (``images/SPLIT/NAME.nii.gz`` with
``masks/SPLIT/NAME.nii.gz``: every slice along the last axis is one sample).

Every mask is checked once when the data is loaded (size against its image, values against the
classes, colour masks), so a bad file is one line naming it before training starts, not a crash
in a data-loading worker an hour later.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.console import console, warn
from cnnkit.data.images import IMAGE_EXTENSIONS, dicom_without_suffix, displayed_size, open_image, stem_of  # noqa: F401 - stem_of: read here by others
from cnnkit.data.palettes import MASK_IGNORE
from cnnkit.data.sources import walk_files
from cnnkit.errors import CnnkitError

SPLITS = ("train", "val", "test")
MEDICAL_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz")


@dataclass(frozen=True)
class SegmentSample:
    image: Path
    mask: Path | None  # None: an image to predict, without labels
    slice_index: int | None = None  # the slice of a NIfTI volume (or frame of a multi-frame DICOM)

    @property
    def name(self) -> str:
        stem = stem_of(self.image)
        return stem if self.slice_index is None else f"{stem}_{self.slice_index:04d}"


@dataclass
class SegmentationData:
    root: Path
    classes: list[str]  # index k is class k; index 0 is usually the background
    splits: dict[str, list[SegmentSample]]
    ignore_index: int = MASK_IGNORE
    pixel_counts: dict[str, np.ndarray] = field(default_factory=dict)  # per split: true pixels of each class


def suffix_of(path: Path) -> str:
    """The lower-case suffix (.nii.gz whole); ".dcm" for a DICOM file named without a suffix (the DICM marker)."""
    if path.name.lower().endswith(".nii.gz"):
        return ".nii.gz"
    return ".dcm" if dicom_without_suffix(path) else path.suffix.lower()


def is_segmentation_input(path: Path) -> bool:
    return not path.name.startswith(".") and suffix_of(path) in IMAGE_EXTENSIONS + MEDICAL_SUFFIXES


def is_segmentation_layout(root: str | Path) -> bool:
    root = Path(root)
    return (root / "masks").is_dir() and (root / "images").is_dir()


def read_classes(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise CnnkitError(f"{path}: empty", "one class name per line, the name of index 0 (usually background) first")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CnnkitError(f"{path}: class name {twice[0]!r} appears twice", "each line names one class index")
    if len(names) > MASK_IGNORE:
        raise CnnkitError(f"{path}: {len(names)} classes; index masks hold at most {MASK_IGNORE} (255 = ignore)")
    return names


def load_segmentation(root: str | Path, val_split: float = 0.2, seed: int = 0, check: bool = True,
                      ignore_index: int = MASK_IGNORE) -> SegmentationData:
    """Read and check the masks layout; a missing val split is cut from train (``val_split``, ``seed``)."""
    root = Path(root)
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such dataset folder", "pass a folder with images/ and masks/, or a built-in name: shapes, cells")
    if not is_segmentation_layout(root):
        hint = ("it looks like COCO instances: convert with `cnnkit data convert ROOT --to masks --out NEW`"
                if (root / "annotations").is_dir() else "expected ROOT/images/SPLIT/NAME.png with ROOT/masks/SPLIT/NAME.png")
        raise CnnkitError(f"{root}: not a segmentation dataset (no images/ and masks/ folders)", hint)
    splits = {}
    split_dirs = [s for s in SPLITS if (root / "images" / s).is_dir()]
    if split_dirs:
        for split in split_dirs:
            splits[split] = _pair(root / "images" / split, root / "masks" / split)
    else:
        splits["train"] = _pair(root / "images", root / "masks")
    if not splits.get("train"):
        raise CnnkitError(f"{root / 'images' / 'train'}: no images", "expected images/train/NAME.png with masks/train/NAME.png")
    splits = {s: _expand_slices(samples) for s, samples in splits.items()}
    if "val" not in splits:
        splits["train"], splits["val"] = _cut_val(splits["train"], val_split, seed)
        console.print(f"{root}: no val split; {len(splits['val'])} of {len(splits['val']) + len(splits['train'])} "
                      f"train samples held out (--val-split {val_split:g})")
    classes = read_classes(root)
    data = SegmentationData(root, classes or [], splits, ignore_index)
    if check or classes is None:
        data.pixel_counts = check_masks(data, infer_classes=classes is None)
    return data


def _pair(image_dir: Path, mask_dir: Path) -> list[SegmentSample]:
    """Images of one folder with their masks (same NAME, mask .png or the image's own suffix)."""
    if not mask_dir.is_dir():
        raise CnnkitError(f"{mask_dir}: missing", f"every image in {image_dir} needs a mask there with the same name")
    images = [p for p in walk_files(image_dir) if is_segmentation_input(p)]
    masks = {}
    for p in walk_files(mask_dir):
        if is_segmentation_input(p):
            masks.setdefault((p.parent.relative_to(mask_dir) / stem_of(p)).as_posix(), []).append(p)
    samples, missing = [], []
    for image in images:
        key = (image.parent.relative_to(image_dir) / stem_of(image)).as_posix()
        found = masks.pop(key, None)
        if not found:
            missing.append(image)
            continue
        # NAME.png first: a mask saved as JPEG would be lossy, but a NIfTI mask has the image's suffix
        found.sort(key=lambda p: (suffix_of(p) != ".png", suffix_of(p) != suffix_of(image)))
        samples.append(SegmentSample(image, found[0]))
    if missing:
        raise CnnkitError(f"{missing[0]}: no mask {mask_dir / (stem_of(missing[0]) + '.png')}"
                          + (f" (and {len(missing) - 1} more images without masks)" if len(missing) > 1 else ""),
                          "every image needs an index mask of the same name")
    if masks:
        left = sorted(p for ps in masks.values() for p in ps)
        warn(f"{mask_dir}: {len(left)} masks without an image, ignored (e.g. {left[0].name})")
    return samples


def _expand_slices(samples: list[SegmentSample]) -> list[SegmentSample]:
    """A NIfTI volume (or multi-frame DICOM) becomes one sample per slice."""
    from cnnkit.data.medical import count_slices

    out = []
    for sample in samples:
        suffix = suffix_of(sample.image)
        if suffix in (".nii", ".nii.gz", ".dcm"):
            slices = count_slices(sample.image)
            if suffix != ".dcm" or slices > 1:
                mask_slices = count_slices(sample.mask)
                if mask_slices != slices:
                    raise CnnkitError(f"{sample.mask}: {mask_slices} slices, but {sample.image} has {slices}",
                                      "a volume's mask has the volume's shape")
                out += [SegmentSample(sample.image, sample.mask, k) for k in range(slices)]
                continue
        out.append(sample)
    return out


def _cut_val(samples: list[SegmentSample], fraction: float, seed: int) -> tuple[list[SegmentSample], list[SegmentSample]]:
    """Hold out ``fraction`` of the images (all slices of a volume go the same way, so val never sees
    a neighbour of a training slice)."""
    groups: dict[Path, list[SegmentSample]] = {}
    for sample in samples:
        groups.setdefault(sample.image, []).append(sample)
    keys = list(groups)
    if len(keys) < 2:
        return samples, list(samples) if fraction > 0 else []
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val = max(1, round(len(keys) * fraction))
    held = {keys[i] for i in order[:n_val]}
    return ([s for s in samples if s.image not in held], [s for s in samples if s.image in held])


# ---------------------------------------------------------------------------------------- reading

def read_mask(sample: SegmentSample) -> np.ndarray:
    """The sample's mask as a 2-D integer array (uint8 for PNG index masks; NIfTI and 16-bit as stored)."""
    path = sample.mask
    suffix = suffix_of(path)
    if suffix in (".nii", ".nii.gz", ".dcm"):
        from cnnkit.data.medical import read_intensity

        values = read_intensity(path, sample.slice_index).pixels
        if values.ndim != 2:
            raise CnnkitError(f"{path}: a mask volume must be one channel")
        return np.rint(values).astype(np.int64)
    try:
        with open_image(path) as image:  # over the pixel limit: a CnnkitError naming the file
            image.load()
            mode = image.mode
            if mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV"):
                raise CnnkitError(_colour_mask_message(path, image), "convert the colours to class indices: "
                                  "`cnnkit data convert ROOT --to masks --palette FILE` (or save the masks as palette/grey PNGs)")
            return np.asarray(image)  # P: the palette indices are the classes (Pascal VOC)
    except FileNotFoundError:
        raise CnnkitError(f"{path}: no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CnnkitError(f"{path}: cannot read mask: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          "re-export or remove the file") from None


def _colour_mask_message(path: Path, image: Image.Image) -> str:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0, return_counts=True)
    top = [tuple(int(v) for v in colours[i]) for i in np.argsort(-counts)[:6]]
    return (f"{path}: an {image.mode} colour mask ({len(colours)} colours, e.g. {', '.join(map(str, top))}) where an index "
            "mask (one class index per pixel) is expected")


def image_size(sample: SegmentSample) -> tuple[int, int]:
    """(width, height) as the image is shown (a photo's EXIF orientation applied, as the loader does), from
    the file header (PIL reads it without decoding); medical files are read."""
    if suffix_of(sample.image) in MEDICAL_SUFFIXES:
        from cnnkit.data.medical import read_intensity

        height, width = read_intensity(sample.image, sample.slice_index).pixels.shape[:2]
        return width, height
    try:
        with open_image(sample.image, check_limit=False) as image:
            return displayed_size(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CnnkitError(f"{sample.image}: cannot read image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          "re-export or remove the file") from None


def check_masks(data: SegmentationData, infer_classes: bool = False) -> dict[str, np.ndarray]:
    """Read every mask once: same size as its image, values among the classes (or the ignore index),
    not a colour image. Returns the true pixel count of every class per split. With
    ``infer_classes`` (no classes.txt), the classes are 0..max value found, named class_K."""
    from cnnkit.console import progress_bar

    samples = [(split, s) for split, items in data.splits.items() for s in items if s.mask is not None]
    num_classes = len(data.classes)

    def read_one(item):
        split, sample = item
        mask = read_mask(sample)
        if mask.ndim != 2:
            raise CnnkitError(f"{sample.mask}: a mask of shape {mask.shape}; expected one value per pixel")
        width, height = image_size(sample)
        if mask.shape != (height, width):
            where = f" slice {sample.slice_index}" if sample.slice_index is not None else ""
            raise CnnkitError(f"{sample.mask}{where}: mask is {mask.shape[1]}x{mask.shape[0]} but {sample.image} is {width}x{height}",
                              "a mask has its image's size (width x height)")
        counts = np.bincount(mask.ravel().astype(np.int64), minlength=MASK_IGNORE + 1) if mask.size else np.zeros(MASK_IGNORE + 1, np.int64)
        if len(counts) > MASK_IGNORE + 1:
            extra = counts[MASK_IGNORE + 1:]
            counts = counts[: MASK_IGNORE + 1]
            if extra.any():
                raise CnnkitError(f"{sample.mask}: value {MASK_IGNORE + 1 + int(np.flatnonzero(extra)[0])} in an index mask",
                                  f"class indices go up to {MASK_IGNORE - 1}, {MASK_IGNORE} = ignore")
        return split, sample, counts

    totals = {split: np.zeros(MASK_IGNORE + 1, np.int64) for split in data.splits}
    with ThreadPoolExecutor(max_workers=4) as pool, progress_bar() as bar:
        task = bar.add_task("checking masks", total=len(samples), info="", rate="")
        for split, sample, counts in pool.map(read_one, samples):
            totals[split] += counts
            if not infer_classes:
                bad = np.flatnonzero(counts[num_classes:])
                bad = [num_classes + int(b) for b in bad if num_classes + int(b) != data.ignore_index]
                if bad:
                    raise CnnkitError(f"{sample.mask}: class index {bad[0]} but {data.root / 'classes.txt'} names "
                                      f"{num_classes} classes (0..{num_classes - 1}; {data.ignore_index} = ignore)",
                                      "add the class to classes.txt or fix the mask")
            bar.update(task, advance=1)
    if infer_classes:
        seen = np.flatnonzero(sum(totals.values())[: MASK_IGNORE])
        top = int(seen.max()) if len(seen) else 0
        data.classes = ["background"] + [f"class_{k}" for k in range(1, max(top, 1) + 1)]
        warn(f"{data.root}: no classes.txt; {len(data.classes)} classes (0..{len(data.classes) - 1}) from the masks' values, "
             "named class_K — write classes.txt to name them")
    if not samples:
        raise CnnkitError(f"{data.root}: no masks", "a segmentation dataset needs masks/SPLIT/NAME.png beside images/SPLIT/NAME.png")
    return {split: counts[: len(data.classes)] for split, counts in totals.items()}
