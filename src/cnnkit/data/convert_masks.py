"""`cnnkit data convert SRC --to masks --out DST`: make the masks layout of data/segmentation.py.

    cnnkit data convert coco/ --to masks --out seg/                  # COCO instances -> index masks
    cnnkit data convert voc_rgb/ --to masks --palette voc --out seg/  # colour masks -> index masks
    cnnkit data convert rgb/ --to masks --palette colours.txt --out seg/

From COCO instances (``annotations/SPLIT.json`` or another tool's COCO files, polygons, uncompressed or
compressed RLE; or a YOLO segmentation dataset's polygon rows, class k -> category id k): every
image gets ``masks/SPLIT/NAME.png`` with 0 = background and category k (in ascending category id
order) = k + 1; crowd regions are 255 (ignore), instances are painted from the largest to the
smallest so that a small object on a large one stays visible; ``classes.txt`` (background first) and
``categories.json`` (class index -> COCO category id) are written beside them.

From a masks layout: colour masks (RGB, RGBA: alpha dropped) and, with ``--palette``, palette PNGs
are mapped colour by colour through the palette (Pascal VOC's, or a file); index masks (grey, 16-bit
with values up to 255, and palette PNGs without ``--palette``) are written as grey index PNGs.

Images are hard-linked (``copy=True``: copied). DST is built in a temporary sibling folder and renamed
into place at the end, so a failed conversion leaves nothing half-written.
"""

from __future__ import annotations

import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.console import warn
from cnnkit.data.images import open_image
from cnnkit.data.palettes import VOC_BOUNDARY, VOC_CLASSES, Palette, read_palette, unpack_colour, voc_colours  # noqa: F401 - VOC_*, voc_colours: read here by others
from cnnkit.data.segmentation import MASK_IGNORE, MEDICAL_SUFFIXES, SegmentSample, is_segmentation_layout, stem_of, suffix_of
from cnnkit.engine.rundir import copy_file, temp_dir, write_json, write_text
from cnnkit.errors import CnnkitError

UNKNOWN_CHOICES = ("error", "ignore")
INDEX_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # one value per pixel
THREADS = 8


@dataclass
class MasksConversion:
    """What a conversion wrote (the CLI's summary line)."""

    source_layout: str  # "coco", "yolo" (segmentation rows) or "masks"
    out: Path
    classes: list[str]
    images: dict[str, int]  # per split
    objects: int = 0  # COCO instances painted
    crowd: int = 0  # COCO crowd regions painted as ignore
    recoloured: int = 0  # masks mapped through the palette
    unknown_pixels: int = 0  # pixels of colours not in the palette, set to 255 (--unknown ignore)


def colours_to_indices(rgb: np.ndarray, palette: Palette, lookup: dict[int, int], path: Path,
                       unknown: str) -> tuple[np.ndarray, Counter]:
    """HxWx3 colours -> HxW uint8 class indices, and the pixels of each colour not in the palette
    (mapped to 255 with ``unknown="ignore"``; a one-line CnnkitError with ``"error"``)."""
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    table = np.array([lookup.get(int(c), -1) for c in colours], dtype=np.int64)
    strange = Counter({unpack_colour(int(c)): int(n) for c, n, k in zip(colours, counts, table) if k < 0})
    if strange and unknown == "error":
        (colour, pixels), *others = strange.most_common()
        more = f" (and {len(others)} more unknown colours, {sum(n for _, n in others)} px)" if others else ""
        raise CnnkitError(f"{path}: colour {colour} ({pixels} px) is not in the palette {palette.source}{more}; "
                          f"known colours: {palette.describe()}",
                          "add the colour to the palette file, or pass --unknown ignore to map it to 255 (ignore)")
    table[table < 0] = MASK_IGNORE
    return table[inverse].reshape(packed.shape).astype(np.uint8), strange


# ---------------------------------------------------------------------------------------- entry point

def convert_to_masks(source: str | Path, out: str | Path, palette: str | Path | None = None, unknown: str = "error",
                     copy: bool = False, progress: bool = True) -> MasksConversion:
    """COCO instances, or a masks layout with colour / palette masks, -> the masks layout at OUT (new or empty)."""
    from cnnkit.data.detection import detect_layout
    from cnnkit.data.synth import _swap_in

    source, out = Path(source), Path(out)
    if unknown not in UNKNOWN_CHOICES:
        raise CnnkitError(f"--unknown {unknown}: not one of {', '.join(UNKNOWN_CHOICES)}")
    if not source.is_dir():
        raise CnnkitError(f"{source}: no such dataset folder",
                          "pass a COCO instances dataset or a folder with images/ and masks/")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnkitError(f"{out}: exists and is not empty", "choose a new --out folder")
    layout = detect_layout(source)
    is_coco, is_masks = layout in ("coco", "yolo"), is_segmentation_layout(source)  # YOLO: segmentation rows
    if palette is not None and not is_masks:
        raise CnnkitError(f"{source}: --palette maps the colours of masks/, and there is no images/ + masks/ here",
                          "drop --palette to convert COCO instances" if is_coco else "pass a folder with images/ and masks/")
    if not (is_coco or is_masks):
        raise CnnkitError(f"{source}: neither COCO instances (annotations/SPLIT.json), a YOLO segmentation data.yaml nor a "
                          "masks layout (images/ + masks/)")
    chosen = read_palette(palette) if palette is not None else None  # a bad palette fails before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out.parent, out.name)
    try:
        if is_coco and chosen is None:
            result = _from_coco(source, tmp, copy, progress, layout)
        else:
            result = _from_masks(source, tmp, chosen, unknown, copy, progress)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.out = out
    return result


def _run(jobs: list, work, label: str, progress: bool) -> list:
    """work(job) for every job in a thread pool (PNG coding releases the GIL), in order, with a progress bar."""
    from cnnkit.console import progress_bar

    results = []
    bar = progress_bar(transient=True) if progress and jobs else None
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        if bar is None:
            return list(pool.map(work, jobs))
        with bar:
            task = bar.add_task(label, total=len(jobs), info="", rate="")
            for result in pool.map(work, jobs):
                results.append(result)
                bar.advance(task)
    return results


# ---------------------------------------------------------------------------------------- COCO

@dataclass
class _CocoImage:
    path: Path
    image_id: int | str
    width: int
    height: int
    annotations: list[dict] = field(default_factory=list)


def _read_coco_instances(root: Path, subset: str, file: Path, categories: dict[int, str]) -> list[_CocoImage]:
    from cnnkit.data.detection import _coco_image_path, _image_size, read_coco_file

    coco, known = read_coco_file(file, categories)
    try:
        images: dict = {}
        for img in coco["images"]:
            path = _coco_image_path(root, subset, str(img["file_name"]), file)
            has_size = img.get("width") and img.get("height")
            width, height = (int(img["width"]), int(img["height"])) if has_size else _image_size(path)
            if img["id"] in images:
                raise CnnkitError(f"{file}: image id {img['id']!r} appears twice")
            images[img["id"]] = _CocoImage(path, img["id"], width, height)
        for ann in coco["annotations"]:
            place = f"{file}: annotation id {ann.get('id', '?')}"
            if ann.get("image_id") not in images:
                raise CnnkitError(f"{place}: image_id {ann.get('image_id')!r} is not in 'images'")
            if ann.get("category_id") not in known:
                raise CnnkitError(f"{place}: category_id {ann.get('category_id')!r} is not in 'categories'")
            images[ann["image_id"]].annotations.append({**ann, "_place": place})
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{file}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    return list(images.values())


def instance_mask(segmentation, height: int, width: int, place: str) -> np.ndarray | None:
    """One annotation's pixels as an HxW bool array, as pycocotools' annToMask decodes them (polygons
    merged, uncompressed or compressed RLE); None when it has no usable segmentation."""
    from pycocotools import mask as mask_utils

    try:
        rle = _to_rle(segmentation, height, width, place)
        return None if rle is None else mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError) as exc:
        raise CnnkitError(f"{place}: cannot decode its segmentation ({type(exc).__name__}: {exc})") from None


def _to_rle(segmentation, height: int, width: int, place: str) -> dict | None:
    """pycocotools' annToRLE, with the checks it leaves out (RLE size against the image, degenerate polygons)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        # fewer than 3 points is no area (and pycocotools would read a 4-number list as a box)
        polygons = [[float(v) for v in p] for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)) if polygons else None
    if not (isinstance(segmentation, dict) and "counts" in segmentation):
        return None
    size = [int(v) for v in segmentation.get("size") or []]
    if size != [height, width]:
        raise CnnkitError(f"{place}: RLE size {size} but the image is {height}x{width} (height, width)")
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def paint_instances(image: _CocoImage, class_of: dict[int, int]) -> tuple[np.ndarray, int, int, int]:
    """(HxW uint8 mask, instances painted, crowd regions, annotations without a segmentation).
    Crowd regions first (255): an object outlined inside a crowd keeps its class. Then instances from
    the largest area to the smallest (stable for ties), so a small object lying on a large one stays visible."""
    mask = np.zeros((image.height, image.width), np.uint8)
    instances, crowds, skipped = [], [], 0
    for ann in image.annotations:
        pixels = instance_mask(ann.get("segmentation"), image.height, image.width, ann["_place"])
        if pixels is None:
            skipped += 1
        elif ann.get("iscrowd"):
            crowds.append(pixels)
        else:
            # the decoded area, not the JSON's 'area', which some tools fill with the box's
            instances.append((int(pixels.sum()), class_of[int(ann["category_id"])], pixels))
    for pixels in crowds:
        mask[pixels] = MASK_IGNORE
    for _, cls, pixels in sorted(instances, key=lambda item: -item[0]):
        mask[pixels] = cls
    return mask, len(instances), len(crowds), skipped


def _yolo_instances(root: Path) -> tuple[dict[str, list[_CocoImage]], dict[int, str]]:
    """A YOLO segmentation dataset's objects as COCO annotations (the reader turns polygon rows into COCO
    polygons in pixels; a box row has no segmentation and is left out like a COCO box without one)."""
    from cnnkit.data.detection import load_detection

    data = load_detection(root)
    splits: dict[str, list[_CocoImage]] = {}
    for split, images in data.splits.items():
        splits[split] = []
        for image in images:
            segmentations = image.segmentations or [None] * len(image.labels)
            annotations = [{"category_id": int(label), "iscrowd": 0, "segmentation": segmentation,
                            "_place": f"{image.path}: object {k + 1}"}
                           for k, (label, segmentation) in enumerate(zip(image.labels.tolist(), segmentations))]
            splits[split].append(_CocoImage(image.path, image.image_id, image.width, image.height, annotations))
    return splits, dict(data.categories)


def _from_coco(root: Path, tmp: Path, copy: bool, progress: bool, layout: str = "coco") -> MasksConversion:
    from cnnkit.data.detection import DetectionImage, _namer, _Placer, coco_files

    categories: dict[int, str] = {}
    if layout == "yolo":
        splits, categories = _yolo_instances(root)
    else:
        splits = {split: _read_coco_instances(root, subset, file, categories)
                  for split, (file, subset) in coco_files(root).items()}
    if not any(splits.values()):
        raise CnnkitError(f"{root}: COCO dataset without images")
    if len(categories) >= MASK_IGNORE:
        raise CnnkitError(f"{root}: {len(categories)} categories; index masks hold {MASK_IGNORE - 1} besides background "
                          "(255 = ignore)")
    ids = sorted(categories)
    class_of = {cat_id: k + 1 for k, cat_id in enumerate(ids)}
    classes = ["background"]
    for cat_id in ids:  # classes.txt needs distinct names: a repeated one (or 'background') gets its category id
        name = categories[cat_id]
        classes.append(f"{name}_{cat_id}" if name in classes else name)

    name_of = _namer(unique_stems=True, across_splits=False)  # one mask per stem
    placer = _Placer(copy)
    jobs = []
    for split, images in splits.items():
        for image in images:
            name = name_of(split, DetectionImage(image.path, image.image_id, image.width, image.height))
            jobs.append((split, image, name))

    def work(job):
        split, image, name = job
        mask, painted, crowd, skipped = paint_instances(image, class_of)
        placer.place(image.path, tmp / "images" / split / name)
        _save_index_png(mask, tmp / "masks" / split / f"{Path(name).stem}.png")
        return painted, crowd, skipped

    counts = _run(jobs, work, "coco -> masks", progress)
    painted, crowd, skipped = (sum(c[i] for c in counts) for i in range(3))
    if skipped:
        if not painted and not crowd:
            raise CnnkitError(f"{root}: no annotation has a segmentation (boxes alone make no mask)",
                              "segmentation masks need COCO polygons or RLE in 'segmentation', or YOLO polygon rows")
        warn(f"{root}: {skipped} annotations without a usable segmentation left out (boxes alone make no mask)")
    write_text(tmp / "classes.txt", "".join(f"{name}\n" for name in classes))
    write_json(tmp / "categories.json", {str(class_of[i]): i for i in ids})
    images = {split: len(images) for split, images in splits.items()}
    return MasksConversion(layout, tmp, classes, images, objects=painted, crowd=crowd)


# ---------------------------------------------------------------------------------------- colour masks

def _from_masks(root: Path, tmp: Path, palette: Palette | None, unknown: str, copy: bool, progress: bool) -> MasksConversion:
    from cnnkit.data.check_segmentation import pair_masks
    from cnnkit.data.detection import _Placer

    placer = _Placer(copy)
    lookup = palette.lookup() if palette else {}
    jobs = []
    splits = pair_masks(root)
    for split, files in splits.items():
        if files.images_without_masks:
            first, more = files.images_without_masks[0], len(files.images_without_masks) - 1
            more_text = f" (and {more} more images without masks)" if more else ""
            raise CnnkitError(f"{first}: no mask in {files.mask_dir}{more_text}", "every image needs a mask of the same name")
        if files.masks_without_images:
            warn(f"{files.mask_dir}: {len(files.masks_without_images)} masks without an image left out "
                 f"(e.g. {files.masks_without_images[0].name})")
        for pair in files.pairs:
            mask_rel = files.mask_dir.relative_to(root) / pair.image.parent.relative_to(files.image_dir)
            jobs.append((pair, pair.image.relative_to(root), mask_rel))
    if not jobs:
        raise CnnkitError(f"{root}: no images with masks", "expected images/SPLIT/NAME.png with masks/SPLIT/NAME.png")

    def work(job):
        pair, image_rel, mask_rel = job
        placer.place(pair.image, tmp / image_rel)
        if suffix_of(pair.mask) in MEDICAL_SUFFIXES:  # NIfTI / DICOM masks hold indices already
            placer.place(pair.mask, tmp / mask_rel / pair.mask.name)
            return False, Counter()
        indices, strange, recoloured = _index_mask(pair, palette, lookup, unknown)
        _save_index_png(indices, tmp / mask_rel / f"{stem_of(pair.mask)}.png")
        return recoloured, strange

    results = _run(jobs, work, "masks -> masks", progress)
    strange = sum((s for _, s in results), Counter())
    if strange:
        listed = ", ".join(f"{colour} {n} px" for colour, n in strange.most_common(8))
        warn(f"{sum(1 for _, s in results if s)} masks hold colours not in the palette {palette.source}, mapped to {MASK_IGNORE} "
             f"(ignore): {listed}" + (f" and {len(strange) - 8} more" if len(strange) > 8 else ""))
    if palette is not None:
        classes = palette.names
        write_text(tmp / "classes.txt", "".join(f"{name}\n" for name in classes))
    elif (root / "classes.txt").is_file():
        copy_file(root / "classes.txt", tmp / "classes.txt")
        classes = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    else:
        classes = []
        warn(f"{root}: no classes.txt; the loader will name the classes class_K from the masks' values")
    images = {split: len(files.pairs) for split, files in splits.items()}
    return MasksConversion("masks", tmp, classes, images, recoloured=sum(1 for r, _ in results if r),
                           unknown_pixels=sum(strange.values()))


def _index_mask(pair: SegmentSample, palette: Palette | None, lookup: dict[int, int],
                unknown: str) -> tuple[np.ndarray, Counter, bool]:
    """(HxW uint8 indices, unknown colours -> pixels, whether the palette mapped it) for one mask file."""
    path = pair.mask
    try:
        with open_image(path) as image:  # over the pixel limit: a CnnkitError naming the file
            image.load()
            mode = image.mode
            colour = mode not in INDEX_MODES or (mode == "P" and palette is not None)
            pixels = np.asarray(image.convert("RGB") if colour else image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CnnkitError(f"{path}: cannot read mask: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          "re-export or remove the file") from None
    if colour:
        if palette is None:
            raise CnnkitError(f"{path}: an {mode} colour mask, and no palette to map its colours to class indices",
                              "pass --palette voc (Pascal VOC colours) or --palette FILE (lines `NAME R G B`)")
        indices, strange = colours_to_indices(pixels, palette, lookup, path, unknown)
        return indices, strange, True
    values = np.rint(pixels).astype(np.int64) if pixels.dtype.kind == "f" else pixels.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > MASK_IGNORE):
        raise CnnkitError(f"{path}: values {int(values.min())}..{int(values.max())} in an index mask",
                          f"class indices go up to {MASK_IGNORE - 1}, {MASK_IGNORE} = ignore")
    return values.astype(np.uint8), Counter(), False


def _save_index_png(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "L").save(path)
