"""Detection datasets: read COCO, YOLO and Pascal VOC into one model, write any of them back.

    data = load_detection("path/to/data")           # layout auto-detected
    data.splits["train"][0].boxes                   # [N, 4] float xyxy pixels, 0-based
    write_yolo(data, "out/")                        # `cnnkit data convert SRC --to yolo --out out/`

Ids stay the dataset's own: COCO category and image ids as the JSON has them, YOLO class index
(or the original ids kept in data.yaml under ``cnnkit_category_ids``), VOC index in classes.txt
(or the ids of a ``categories.json`` cnnkit wrote). YOLO and VOC have no image ids: images are
named by file stem there, and write_coco numbers string ids 1..N in order.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cnnkit.console import warn
from cnnkit.data.images import displayed_size, is_image_file, open_image
from cnnkit.data.sources import walk_files
from cnnkit.engine.rundir import copy_file, write_json, write_text
from cnnkit.errors import CnnkitError

SPLITS = ("train", "val", "test")
_TOLERANCE = 0.01  # pixels: rounding in normalised YOLO floats is not "out of the image"


@dataclass
class IgnoredObject:
    """An object neither trained on nor counted in scoring, as its dataset's protocol says: a COCO crowd
    region (``iscrowd`` 1, kind "crowd") or a Pascal VOC ``difficult`` object (kind "difficult"). Scoring
    gives it to COCOeval as iscrowd=1, COCO's ignore flag: a detection on it is neither true nor false."""

    box: tuple[float, float, float, float]  # xyxy pixels, clipped to the image
    label: int  # the dataset's own category id
    kind: str  # "crowd" or "difficult"
    segmentation: list | dict | None = None  # COCO polygons / RLE as the file has them


@dataclass
class DetectionImage:
    """One image and its boxes: ``boxes`` [N, 4] float64 xyxy pixels (0-based, x2/y2 exclusive edges),
    ``labels`` [N] int64 = the dataset's own category ids. N = 0 is a negative image. ``ignored`` holds
    the crowd regions and VOC difficult objects, apart from ``boxes`` so that training never sees them."""

    path: Path
    image_id: int | str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    crowd: int = 0  # COCO iscrowd annotations left out of boxes (kept in ``ignored``)
    # COCO ``segmentation`` of each box, in the same order (polygon lists or RLE dicts, as the file has
    # them; None for a box whose annotation has none); None when the dataset has no segmentation at all
    segmentations: list | None = None
    ignored: list[IgnoredObject] = field(default_factory=list)


@dataclass
class DetectionData:
    root: Path
    layout: str
    categories: list[tuple[int, str]]  # (id, name) in dataset order
    splits: dict[str, list[DetectionImage]]
    sources: dict[str, Path] = field(default_factory=dict)  # split -> the annotation file it came from (COCO)

    @property
    def classes(self) -> list[str]:
        return [name for _, name in self.categories]

    @property
    def names(self) -> dict[int, str]:
        return dict(self.categories)

    def num_boxes(self) -> int:
        return sum(len(image.boxes) for images in self.splits.values() for image in images)


def match_categories(dataset: DetectionData, class_names: list[str], verb: str = "detects",
                     classes: str | None = None) -> tuple[list[tuple[int, str]], list[int | None]]:
    """(the dataset's categories a model of ``class_names`` knows, by name — only those --classes names, where
    given; the dataset id of each model label, None where the dataset lacks it or --classes leaves it out).
    None known is a one-line error ("the model ``verb`` …"); the dataset's classes the model lacks are left
    out of the evaluation with a warning."""
    by_name = {name: cid for cid, name in dataset.categories}
    known = [(cid, name) for cid, name in dataset.categories if name in class_names]
    if not known:
        raise CnnkitError(f"{dataset.root}: none of its classes ({', '.join(list(by_name)[:8])}) is known to the model",
                          f"the model {verb} {', '.join(class_names[:10])}")
    unknown = [name for name in by_name if name not in class_names]
    if unknown:
        warn(f"{dataset.root}: {len(unknown)} class(es) unknown to the model left out of the evaluation: "
             f"{', '.join(unknown[:5])}")
    if classes:
        wanted = set(select_categories(dataset.categories, classes, str(dataset.root)))
        known = [(cid, name) for cid, name in known if cid in wanted]
    kept = {name for _, name in known}
    return known, [by_name.get(name) if name in kept else None for name in class_names]


def select_categories(categories: list[tuple[int, str]], classes: str, where: str) -> list[int]:
    """--classes "cat,dog" or "1,3" -> the category ids named (by name first, then as an id)."""
    by_name = {name: cid for cid, name in categories}
    ids = {int(cid) for cid, _ in categories}
    chosen = []
    for item in (part.strip() for part in str(classes).split(",")):
        if not item:
            continue
        if item in by_name:
            chosen.append(by_name[item])
        elif item.lstrip("-").isdigit() and int(item) in ids:
            chosen.append(int(item))
        else:
            raise CnnkitError(f"--classes: {item!r} is not a class of {where}", f"classes: {', '.join(list(by_name)[:12])}")
    if not chosen:
        raise CnnkitError("--classes names no class")
    return chosen


# ---------------------------------------------------------------------------------------- reading

def detect_layout(root: str | Path) -> str | None:
    """'coco', 'yolo', 'voc' or None, from the files at ROOT (a data.yaml path counts as YOLO)."""
    root = Path(root)
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return "yolo"
    if coco_files(root):
        return "coco"
    if (root / "data.yaml").is_file() or (root / "data.yml").is_file():
        return "yolo"
    if (root / "Annotations").is_dir():
        return "voc"
    return None


# the split a tool's subset name stands for (CVAT's one subset is "default"; Roboflow's val is "valid")
_SUBSET_SPLITS = {"train": "train", "training": "train", "default": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}
_SNIFF_BYTES = 1 << 20


def coco_files(root: str | Path) -> dict[str, tuple[Path, str]]:
    """split -> (annotation file, the subset name its tool gave it) for the COCO layouts tools write, in
    train, val, test order; {} when ROOT holds none. The first kind found wins:

    - cnnkit's annotations/{train,val,test}.json;
    - annotations/instances_SUBSET.json (COCO's own instances_train2017.json, CVAT's instances_default.json,
      Datumaro and MMDetection; person_keypoints_* and captions_* files beside them are not instances);
    - Roboflow's {train,valid,test}/_annotations.coco.json;
    - any other annotations/*.json, then ROOT/*.json (Label Studio's result.json), holding COCO's lists.
    The split is read from the subset name (train2017 -> train, valid -> val, default -> train); one
    file whose name tells no split is the train split (val is then cut from it, as for any COCO set)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    found = {split: (root / "annotations" / f"{split}.json", split) for split in SPLITS
             if (root / "annotations" / f"{split}.json").is_file()}
    if found:
        return found
    folder = root / "annotations"
    files = sorted(folder.glob("instances_*.json")) if folder.is_dir() else []
    if files:
        return _coco_splits([(f, f.stem[len("instances_"):]) for f in files], root)
    files = [(child / "_annotations.coco.json", child.name) for child in sorted(root.iterdir())
             if child.is_dir() and (child / "_annotations.coco.json").is_file()]
    if files:
        return _coco_splits(files, root)
    for folder in (root / "annotations", root):
        files = [(f, f.stem) for f in sorted(folder.glob("*.json")) if _looks_like_coco(f)] if folder.is_dir() else []
        if files:
            return _coco_splits(files, root)
    return {}


def _coco_splits(files: list[tuple[Path, str]], root: Path) -> dict[str, tuple[Path, str]]:
    import re

    by_split: dict[str, tuple[Path, str]] = {}
    unnamed = []
    for file, subset in files:
        words = [word.rstrip("0123456789") for word in re.split(r"[^a-z0-9]+", subset.lower())]
        split = next((_SUBSET_SPLITS[w] for w in words if w in _SUBSET_SPLITS), None)
        if split is None:
            unnamed.append(file)
        elif split in by_split:
            raise CnnkitError(f"{root}: two COCO annotation files for the {split} split: {by_split[split][0].name} and "
                              f"{file.name}", "keep one, or move the other out of the dataset folder")
        else:
            by_split[split] = (file, subset)
    if unnamed and (by_split or len(unnamed) > 1):
        raise CnnkitError(f"{root}: cannot tell which split the COCO file {unnamed[0].name} is",
                          "name annotation files by split: train.json, val.json, test.json (or instances_train.json, …)")
    if unnamed:
        by_split["train"] = (unnamed[0], unnamed[0].stem)
    return {split: by_split[split] for split in SPLITS if split in by_split}


def _looks_like_coco(file: Path) -> bool:
    """A JSON object with COCO's "images" and "annotations" lists, judged from the start of the file (a
    COCO file can be hundreds of MB; the reader checks the whole of it)."""
    try:
        with open(file, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"images"' in head and (b'"annotations"' in head or b'"file_name"' in head)


def load_detection(root: str | Path, strict: bool = False) -> DetectionData:
    """Read a COCO, YOLO or VOC dataset. Boxes outside the image are clipped with a warning
    (strict=True: an error); every other defect is a CnnkitError naming the file."""
    root = Path(root)
    layout = detect_layout(root)
    if layout is None:
        raise CnnkitError(f"{root}: not a detection dataset",
                          "expected COCO annotations/train.json (or instances_*.json, _annotations.coco.json), "
                          "YOLO data.yaml or VOC Annotations/")
    data = {"coco": read_coco, "yolo": read_yolo, "voc": read_voc}[layout](root, strict=strict)
    if not any(data.splits.values()):
        raise CnnkitError(f"{root}: {layout} dataset without images")
    if data.num_boxes() == 0:
        raise CnnkitError(f"{root}: {layout} dataset without a single box", "a detection dataset needs annotated objects")
    return data


def _finish_boxes(rows: list[tuple[float, float, float, float]], labels: list[int], where: list[str],
                  width: int, height: int, source: str, strict: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check xyxy rows against the image: negative sizes are errors; boxes over the edge are clipped
    (a warning per file), or an error with strict; boxes wholly outside are dropped. Returns (boxes,
    labels, the indices of the rows kept) so that whatever else goes with a row can follow it."""
    boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    labels_ = np.asarray(labels, dtype=np.int64)
    for row, place in zip(boxes, where):
        if not np.isfinite(row).all():
            raise CnnkitError(f"{place}: box is not finite ({', '.join(f'{v:g}' for v in row)})")
        if row[2] < row[0] or row[3] < row[1]:
            raise CnnkitError(f"{place}: negative box width or height ({row[2] - row[0]:g} x {row[3] - row[1]:g})")
    limits = np.array([0, 0, width, height], dtype=np.float64)
    outside = (boxes[:, :2] < -_TOLERANCE).any(1) | (boxes[:, 2:] > limits[2:] + _TOLERANCE).any(1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    kept = np.arange(len(boxes))
    if outside.any():
        first = where[int(np.argmax(outside))]
        if strict:
            raise CnnkitError(f"{first}: box outside the {width}x{height} image")
        empty = outside & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        dropped = f", {int(empty.sum())} wholly outside dropped" if empty.any() else ""
        warn(f"{source}: {int(outside.sum())} box(es) outside the {width}x{height} image clipped{dropped}"
             f" (first: {first}; strict makes this an error)")
        boxes, labels_, kept = boxes[~empty], labels_[~empty], kept[~empty]
    return boxes, labels_, kept


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image is shown and loaded (a photo's EXIF orientation applied), from the header."""
    try:
        with open_image(path, check_limit=False) as image:  # reads the header only
            return displayed_size(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise CnnkitError(f"{path}: unreadable image ({exc})") from None


def _number(value, place: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CnnkitError(f"{place}: {value!r} is not a number") from None


def read_coco(root: Path, strict: bool = False) -> DetectionData:
    categories: dict[int, str] = {}
    groups: set[str] = set()
    splits: dict[str, list[DetectionImage]] = {}
    files = coco_files(root)
    for split, (file, subset) in files.items():
        splits[split] = _read_coco_split(root, subset, file, categories, strict, groups)
    # Roboflow lists its project as category 0, the supercategory of the real ones, with no annotation:
    # a group, not a class to learn (a class with no box would also skew training and scoring)
    used = {int(v) for images in splits.values() for image in images
            for v in [*image.labels.tolist(), *(obj.label for obj in image.ignored)]}
    kept = [(cat_id, name) for cat_id, name in categories.items() if cat_id in used or name not in groups]
    return DetectionData(root, "coco", kept, splits, {split: file for split, (file, _) in files.items()})


def read_coco_file(file: Path, categories: dict[int, str], groups: set[str] | None = None) -> tuple[dict, set[int]]:
    """A COCO annotation file's JSON, its categories merged into ``categories`` (an id must keep its name
    across splits), and the set of category ids it declares; ``groups`` collects the supercategory names."""
    try:
        coco = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CnnkitError(f"{file}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise CnnkitError(f"{file}: not a text file") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(key), list) for key in ("images", "annotations", "categories")):
        raise CnnkitError(f"{file}: not a COCO annotation file", "needs 'images', 'annotations' and 'categories' lists")
    try:
        for cat in coco["categories"]:
            cat_id, name = int(cat["id"]), str(cat["name"])
            if categories.setdefault(cat_id, name) != name:
                raise CnnkitError(f"{file}: category id {cat_id} is '{name}' here but '{categories[cat_id]}' in another split")
            if groups is not None and isinstance(cat, dict) and cat.get("supercategory"):
                groups.add(str(cat["supercategory"]))
        return coco, {int(cat["id"]) for cat in coco["categories"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{file}: a category lacks a valid 'id' or 'name' ({exc})") from None


def _read_coco_split(root: Path, subset: str, file: Path, categories: dict[int, str], strict: bool,
                     groups: set[str] | None = None) -> list[DetectionImage]:
    coco, known = read_coco_file(file, categories, groups)
    crowds: dict = {}
    try:
        entries = {}
        for img in coco["images"]:
            path = _coco_image_path(root, subset, str(img["file_name"]), file)
            has_size = img.get("width") and img.get("height")
            width, height = (int(img["width"]), int(img["height"])) if has_size else _image_size(path)
            entries[img["id"]] = (path, width, height)
        if len(entries) != len(coco["images"]):
            raise CnnkitError(f"{file}: duplicate image ids")
        found: dict = {image_id: ([], [], [], 0, []) for image_id in entries}
        with_segmentation = False
        for ann in coco["annotations"]:
            place = f"{file}: annotation id {ann.get('id', '?')}"
            if ann.get("image_id") not in entries:
                raise CnnkitError(f"{place}: image_id {ann.get('image_id')!r} is not in 'images'")
            if ann.get("category_id") not in known:
                raise CnnkitError(f"{place}: category_id {ann.get('category_id')!r} is not in 'categories'")
            rows, labels, where, crowd, segmentations = found[ann["image_id"]]
            if ann.get("iscrowd"):
                found[ann["image_id"]] = (rows, labels, where, crowd + 1, segmentations)
                crowds.setdefault(ann["image_id"], []).append(ann)
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise CnnkitError(f"{place}: bbox must be [x, y, width, height], got {bbox!r}")
            x, y, w, h = (_number(v, place) for v in bbox)
            rows.append((x, y, x + w, y + h))
            labels.append(int(ann["category_id"]))
            where.append(place)
            segmentations.append(ann.get("segmentation") or None)  # [] and {} mean none, as in COCO's own files
            with_segmentation = with_segmentation or segmentations[-1] is not None
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{file}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    images = []
    for image_id, (path, width, height) in entries.items():
        rows, labels, where, crowd, segmentations = found[image_id]
        boxes, labels_, kept = _finish_boxes(rows, labels, where, width, height, f"{file} (image id {image_id})", strict)
        ignored = [_ignored(_crowd_box(ann), int(ann["category_id"]), "crowd", width, height, ann.get("segmentation") or None)
                   for ann in crowds.get(image_id, [])]
        images.append(DetectionImage(path, image_id, width, height, boxes, labels_, crowd,
                                     [segmentations[k] for k in kept] if with_segmentation else None,
                                     [obj for obj in ignored if obj is not None]))
    return images


def _crowd_box(ann: dict) -> tuple[float, float, float, float] | None:
    """A crowd annotation's xyxy box, or None when its bbox is unusable (crowd regions were never
    checked as strictly as objects: they are only ever ignored)."""
    try:
        x, y, w, h = (float(v) for v in ann.get("bbox"))
    except (TypeError, ValueError):
        return None
    return (x, y, x + w, y + h) if np.isfinite([x, y, w, h]).all() and w >= 0 and h >= 0 else None


def _ignored(box, label: int, kind: str, width: int, height: int, segmentation=None) -> IgnoredObject | None:
    """An ignore region clipped to the image without a warning (it is never trained on); None when its
    box is unusable or wholly outside."""
    if box is None or not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
        return None
    x1, x2 = (min(max(float(v), 0.0), float(width)) for v in box[0::2])
    y1, y2 = (min(max(float(v), 0.0), float(height)) for v in box[1::2])
    if (x2 - x1) * (y2 - y1) <= 0 < (box[2] - box[0]) * (box[3] - box[1]):  # an area, all of it outside
        return None
    return IgnoredObject((x1, y1, x2, y2), int(label), kind, segmentation)


def _coco_image_path(root: Path, subset: str, file_name: str, annotations: Path) -> Path:
    """Where a COCO ``file_name`` lies: tools write it relative to different folders. Tried in order: the
    images folder (COCO, CVAT, cnnkit's 'SPLIT/NAME'), images/SUBSET (Datumaro), SUBSET (COCO's own
    train2017/, MMDetection), the annotation file's folder (Roboflow), the dataset root (Label Studio's
    'images/NAME'); then, for a server path such as Label Studio's 'images/../../media/upload/4/NAME' or
    '/data/upload/1/NAME', the bare file name in those folders. Backslashes count as folder separators."""
    name = file_name.replace("\\", "/")
    folders = list(dict.fromkeys([root / "images", root / "images" / subset, root / subset, annotations.parent, root]))
    for candidate in [folder / name for folder in folders] + [folder / Path(name).name for folder in folders]:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(folder) for folder in folders)
    raise CnnkitError(f"{annotations}: image file_name '{file_name}' not found (looked relative to {tried})",
                      "file_name is read relative to the images folder or the dataset root")


def read_yolo(root: Path, strict: bool = False) -> DetectionData:
    import yaml

    file = root if root.is_file() else next(p for p in (root / "data.yaml", root / "data.yml") if p.is_file())
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise CnnkitError(f"{file}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(spec, dict) or "names" not in spec:
        raise CnnkitError(f"{file}: not a YOLO data.yaml", "needs 'names' and split paths such as 'train: images/train'")
    names = spec["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise CnnkitError(f"{file}: 'names' keys must be 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise CnnkitError(f"{file}: 'names' must be a non-empty list or an index -> name mapping")
    ids = spec.get("cnnkit_category_ids") or list(range(len(names)))
    if len(ids) != len(names):
        raise CnnkitError(f"{file}: cnnkit_category_ids has {len(ids)} ids for {len(names)} names")
    base = _yolo_base(spec.get("path"), file)
    keypoints = bool(spec.get("kpt_shape"))  # a pose dataset: 'class cx cy w h' then the keypoints
    splits = {}
    for split in SPLITS:
        if spec.get(split):
            sources = spec[split] if isinstance(spec[split], list) else [spec[split]]
            images = [_read_yolo_image(path, ids, file, strict, keypoints) for path in _yolo_images(base, sources, file)]
            splits[split] = images
    if not splits:
        raise CnnkitError(f"{file}: no split paths", "add e.g. 'train: images/train' and 'val: images/val'")
    if any(image.segmentations is not None for images in splits.values() for image in images):
        # a segmentation dataset: every image carries a list (None for an object given as a box)
        for images in splits.values():
            for image in images:
                if image.segmentations is None:
                    image.segmentations = [None] * len(image.boxes)
    return DetectionData(file.parent, "yolo", [(int(i), str(n)) for i, n in zip(ids, names)], splits)


def _yolo_base(path, file: Path) -> Path:
    """The folder split paths are relative to: data.yaml's ``path`` (absolute; relative to the yaml's
    folder, else to the working directory), or the yaml's folder when there is none."""
    if not path:
        return file.parent
    path = Path(str(path)).expanduser()
    if path.is_absolute():
        return path
    return file.parent / path if (file.parent / path).is_dir() or not path.is_dir() else path


def _yolo_split_path(base: Path, source: str) -> Path:
    """A split path as Ultralytics resolves it: relative to the base folder; when that does not exist
    and the path starts with '../', the same without it (Roboflow's data.yaml sits in the dataset root
    and says 'train: ../train/images' for ROOT/train/images)."""
    path = base / source
    if not path.exists() and source.replace("\\", "/").startswith("../"):
        path = base / source[3:]
    return path


def _yolo_images(base: Path, sources: Iterable, file: Path) -> list[Path]:
    paths: list[Path] = []
    for source in sources:
        source = _yolo_split_path(base, str(source))
        if source.is_dir():
            paths += [p for p in walk_files(source) if is_image_file(p)]
        elif source.is_file() and source.suffix == ".txt":  # a list of image paths
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if line.strip():
                    # './x.jpg' is relative to the list's folder (as in Ultralytics), other paths to the base
                    line = line.strip()
                    path = source.parent / line if line.startswith("./") and (source.parent / line).is_file() else base / line
                    if not path.is_file():
                        raise CnnkitError(f"{source}:{number}: image {path} not found")
                    paths.append(path)
        else:
            raise CnnkitError(f"{file}: split path {source} not found")
    return paths


def _yolo_label_path(image: Path) -> Path:
    """images/…/x.jpg -> labels/…/x.txt (the last 'images' folder of the path), as YOLO tools do."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        index = len(parts) - 2 - parts[-2::-1].index("images")
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_yolo_image(path: Path, ids: list, data_yaml: Path, strict: bool, keypoints: bool = False) -> DetectionImage:
    """One image's label rows: boxes 'class cx cy w h' (a pose dataset's keypoints after them are left
    out), or Ultralytics' segmentation rows 'class x1 y1 x2 y2 … xn yn', a normalised polygon: its box
    is the polygon's extent and the polygon, in pixels, the object's COCO segmentation."""
    width, height = _image_size(path)
    label_file = _yolo_label_path(path)
    rows, labels, where, polygons = [], [], [], []
    if label_file.is_file():  # no label file: a negative image, as in YOLO
        for number, line in enumerate(label_file.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            place = f"{label_file}:{number}"
            polygon = not keypoints and len(fields) >= 7 and len(fields) % 2 == 1
            if len(fields) != 5 and not polygon and not (keypoints and len(fields) > 5):
                raise CnnkitError(f"{place}: expected 5 fields 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 …' "
                                  f"(an odd number, at least 7), got {len(fields)}")
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise CnnkitError(f"{place}: not numbers: {line.strip()!r}") from None
            cls = int(values[0]) if values[0].is_integer() else -1
            if not 0 <= cls < len(ids):
                raise CnnkitError(f"{place}: class {fields[0]} not in names of {data_yaml} (0..{len(ids) - 1})")
            if polygon:
                xs, ys = np.asarray(values[1::2]) * width, np.asarray(values[2::2]) * height
                rows.append((xs.min(), ys.min(), xs.max(), ys.max()))
                inside = np.stack([xs.clip(0, width), ys.clip(0, height)], axis=1)  # the box is clipped likewise
                polygons.append([[round(float(v), 4) for v in inside.ravel()]])
            else:
                cx, cy, w, h = values[1:5]
                if w < 0 or h < 0:
                    raise CnnkitError(f"{place}: negative box width or height")
                rows.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
                polygons.append(None)
            labels.append(int(ids[cls]))
            where.append(place)
    boxes, labels_, kept = _finish_boxes(rows, labels, where, width, height, str(label_file), strict)
    segmentations = [polygons[k] for k in kept] if any(p is not None for p in polygons) else None
    return DetectionImage(path, path.stem, width, height, boxes, labels_, segmentations=segmentations)


def read_voc(root: Path, strict: bool = False) -> DetectionData:
    xml_files = sorted((root / "Annotations").glob("*.xml"))
    parsed = {p.stem: _parse_voc(p) for p in xml_files}
    categories = _voc_categories(root, parsed)
    by_name = {name: cat_id for cat_id, name in categories}
    lists = root / "ImageSets" / "Main"
    split_stems = {s: _read_list(lists / f"{s}.txt") for s in SPLITS if (lists / f"{s}.txt").is_file()}
    if not split_stems:  # no ImageSets: every annotation is training data
        split_stems = {"train": list(parsed)}
    splits = {}
    for split, stems in split_stems.items():
        images = []
        for stem in stems:
            if stem not in parsed:
                raise CnnkitError(f"{lists / f'{split}.txt'}: {stem} has no Annotations/{stem}.xml")
            file, (filename, width, height, objects) = root / "Annotations" / f"{stem}.xml", parsed[stem]
            path = root / "JPEGImages" / (filename or f"{stem}.jpg")
            if not path.is_file():
                raise CnnkitError(f"{file}: image {path} not found")
            if not (width and height):
                width, height = _image_size(path)
            for name, _, place, _ in objects:
                if name not in by_name:
                    raise CnnkitError(f"{place}: class '{name}' not in the class list of {root}")
            # difficult objects are ignored by the VOC protocol: kept apart, never trained on or scored
            easy = [obj for obj in objects if not obj[3]]
            ignored = [_ignored(row, by_name[name], "difficult", width, height) for name, row, _, hard in objects if hard]
            boxes, labels, _ = _finish_boxes([row for _, row, _, _ in easy], [by_name[n] for n, _, _, _ in easy],
                                             [place for _, _, place, _ in easy], width, height, str(file), strict)
            images.append(DetectionImage(path, stem, width, height, boxes, labels,
                                         ignored=[obj for obj in ignored if obj is not None]))
        splits[split] = images
    return DetectionData(root, "voc", categories, splits)


def _read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _voc_categories(root: Path, parsed: dict) -> list[tuple[int, str]]:
    """categories.json (cnnkit's, keeps ids) > classes.txt / labels.txt (id = line index) > sorted names."""
    if (root / "categories.json").is_file():
        try:
            return [(int(c["id"]), str(c["name"])) for c in json.loads((root / "categories.json").read_text())]
        except (ValueError, KeyError, TypeError) as exc:
            raise CnnkitError(f"{root / 'categories.json'}: expected [{{'id', 'name'}}, …] ({exc})") from None
    for name in ("classes.txt", "labels.txt"):
        if (root / name).is_file():
            return list(enumerate(_read_list(root / name)))
    return list(enumerate(sorted({obj[0] for _, _, _, objects in parsed.values() for obj in objects})))


def _parse_voc(file: Path) -> tuple[str | None, int, int, list]:
    """-> (filename, width, height, [(name, xyxy 0-based, place, difficult)]); VOC pixels are 1-based inclusive."""
    try:
        tree = ET.parse(file).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise CnnkitError(f"{file}:{line}:{col}: not valid XML") from None
    size = tree.find("size")
    width = int(_number(size.findtext("width", "0"), f"{file}: size")) if size is not None else 0
    height = int(_number(size.findtext("height", "0"), f"{file}: size")) if size is not None else 0
    objects = []
    for index, obj in enumerate(tree.iter("object"), 1):
        place = f"{file}: object {index}"
        box = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if box is None or not name:
            raise CnnkitError(f"{place}: needs <name> and <bndbox>")
        x1, y1, x2, y2 = (_number(box.findtext(tag), f"{place} <{tag}>") for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true", "yes")
        objects.append((name, (x1 - 1, y1 - 1, x2, y2), place, difficult))
    return tree.findtext("filename"), width, height, objects


# ---------------------------------------------------------------------------------------- writing

class _Placer:
    """Hard-links (or copies) each source image once under a unique file name per folder."""

    def __init__(self, copy: bool):
        self.copy, self.names, self.taken = copy, {}, set()

    def name(self, image: DetectionImage, unique_stems: bool = False) -> str:
        key = image.path.resolve()
        if key not in self.names:
            stem, suffix, k = image.path.stem, image.path.suffix, 1
            name = image.path.name
            while (stem if unique_stems else name) in self.taken:
                k += 1
                stem = f"{image.path.stem}_{k}"
                name = f"{stem}{suffix}"
            self.taken.add(stem if unique_stems else name)
            self.names[key] = name
        return self.names[key]

    def place(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            return
        if not self.copy:
            try:
                os.link(source, target)
                return
            except OSError:  # another file system, or links not allowed
                pass
        copy_file(source, target)


def _namer(unique_stems: bool, across_splits: bool) -> Callable[[str, DetectionImage], str]:
    """(split, image) -> a file name unique in its split's folder (or across splits, for VOC's flat folders)."""
    placers: dict[str, _Placer] = {}
    return lambda split, image: placers.setdefault("" if across_splits else split, _Placer(False)).name(image, unique_stems)


def _drop_ignored(data: DetectionData, kinds: set[str], target: str, why: str) -> None:
    """Warn with the count of ignored objects of ``kinds`` that the target format cannot hold."""
    counts: dict[str, int] = {}
    for images in data.splits.values():
        for image in images:
            for obj in image.ignored:
                if obj.kind in kinds:
                    counts[obj.kind] = counts.get(obj.kind, 0) + 1
    if counts:
        what = " and ".join(f"{n} {'crowd regions (iscrowd 1)' if kind == 'crowd' else 'difficult objects'}"
                            for kind, n in sorted(counts.items()))
        warn(f"{data.root}: {what} dropped: {target} {why}")


def write_coco(data: DetectionData, out: str | Path, copy: bool = False) -> Path:
    """OUT/annotations/SPLIT.json + OUT/images/SPLIT/NAME (file_name 'SPLIT/NAME'). Integer image ids are
    kept when unique; otherwise images are numbered 1..N. Crowd regions stay iscrowd 1; VOC difficult
    objects become iscrowd 1 too, COCO's only "ignore" flag (as MMDetection's VOC -> COCO does)."""
    out = Path(out)
    placer = _Placer(copy)
    name_of = _namer(unique_stems=False, across_splits=False)
    categories = [{"id": cat_id, "name": name, "supercategory": ""} for cat_id, name in data.categories]
    for split, images in data.splits.items():
        ids = [image.image_id for image in images]
        keep = all(isinstance(i, (int, np.integer)) for i in ids) and len(set(ids)) == len(ids)
        coco = {"images": [], "annotations": [], "categories": categories}
        for number, image in enumerate(images, 1):
            image_id = int(image.image_id) if keep else number
            name = name_of(split, image)
            placer.place(image.path, out / "images" / split / name)
            coco["images"].append({"id": image_id, "file_name": f"{split}/{name}", "width": image.width, "height": image.height})
            segmentations = image.segmentations or [None] * len(image.boxes)
            for (x1, y1, x2, y2), label, segmentation in zip(image.boxes.tolist(), image.labels.tolist(), segmentations):
                w, h = x2 - x1, y2 - y1
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": label,
                                            "bbox": [_round(x1), _round(y1), _round(w), _round(h)],
                                            "area": _round(w * h), "iscrowd": 0,
                                            **({"segmentation": segmentation} if segmentation is not None else {})})
            for obj in image.ignored:
                x1, y1, x2, y2 = obj.box
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": obj.label,
                                            "bbox": [_round(x1), _round(y1), _round(x2 - x1), _round(y2 - y1)],
                                            "area": _round((x2 - x1) * (y2 - y1)), "iscrowd": 1,
                                            **({"segmentation": obj.segmentation} if obj.segmentation is not None else {})})
        write_json(out / "annotations" / f"{split}.json", coco)
    return out


def write_yolo(data: DetectionData, out: str | Path, copy: bool = False) -> Path:
    """OUT/data.yaml + OUT/images/SPLIT/NAME + OUT/labels/SPLIT/STEM.txt. Class index = position in
    data.categories; ids other than 0..K-1 are kept in data.yaml as ``cnnkit_category_ids``. A YOLO
    segmentation dataset's polygons are written back as polygon rows. YOLO has no crowd or difficult
    flag: those objects are left out with a warning that counts them."""
    import yaml

    _drop_ignored(data, {"crowd", "difficult"}, "YOLO", "has no crowd or difficult flag")
    out = Path(out)
    placer = _Placer(copy)
    name_of = _namer(unique_stems=True, across_splits=False)  # one label file per stem
    index = {cat_id: i for i, (cat_id, _) in enumerate(data.categories)}
    spec: dict = {}
    for split, images in data.splits.items():
        for image in images:
            name = name_of(split, image)
            placer.place(image.path, out / "images" / split / name)
            lines = []
            polygons = image.segmentations if data.layout == "yolo" and image.segmentations else [None] * len(image.boxes)
            for (x1, y1, x2, y2), label, polygon in zip(image.boxes.tolist(), image.labels.tolist(), polygons):
                if isinstance(polygon, list) and len(polygon) == 1:  # read from a polygon row: written as one
                    points = np.asarray(polygon[0], dtype=np.float64) / ([image.width, image.height] * (len(polygon[0]) // 2))
                    lines.append(f"{index[label]} {' '.join(f'{v:.7g}' for v in points)}\n")
                    continue
                cx, cy = (x1 + x2) / 2 / image.width, (y1 + y2) / 2 / image.height
                w, h = (x2 - x1) / image.width, (y2 - y1) / image.height
                lines.append(f"{index[label]} {cx:.7g} {cy:.7g} {w:.7g} {h:.7g}\n")
            write_text(out / "labels" / split / f"{Path(name).stem}.txt", "".join(lines))
        spec[split] = f"images/{split}"
    spec["nc"] = len(data.categories)
    spec["names"] = {i: name for i, (_, name) in enumerate(data.categories)}
    ids = [cat_id for cat_id, _ in data.categories]
    if ids != list(range(len(ids))):
        spec["cnnkit_category_ids"] = ids
    write_text(out / "data.yaml", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return out


def write_voc(data: DetectionData, out: str | Path, copy: bool = False) -> Path:
    """OUT/Annotations/STEM.xml, OUT/JPEGImages/NAME, OUT/ImageSets/Main/SPLIT.txt, classes.txt, and
    categories.json when ids are not 0..K-1 (read back by read_voc). Image stems are made unique.
    Difficult objects stay <difficult>1</difficult>; VOC has no crowd regions: those are left out with a
    warning that counts them."""
    _drop_ignored(data, {"crowd"}, "Pascal VOC", "has no crowd regions")
    out = Path(out)
    placer = _Placer(copy)
    name_of = _namer(unique_stems=True, across_splits=True)
    names = data.names
    for split, images in data.splits.items():
        stems = []
        for image in images:
            name = name_of(split, image)
            stem = Path(name).stem
            placer.place(image.path, out / "JPEGImages" / name)
            rows = [(box, label, 0) for box, label in zip(image.boxes.tolist(), image.labels.tolist())]
            rows += [(obj.box, obj.label, 1) for obj in image.ignored if obj.kind == "difficult"]
            objects = "".join(
                f"  <object>\n    <name>{_xml(names[label])}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
                f"    <difficult>{difficult}</difficult>\n    <bndbox>\n"
                f"      <xmin>{_fmt(x1 + 1)}</xmin>\n      <ymin>{_fmt(y1 + 1)}</ymin>\n"
                f"      <xmax>{_fmt(x2)}</xmax>\n      <ymax>{_fmt(y2)}</ymax>\n    </bndbox>\n  </object>\n"
                for (x1, y1, x2, y2), label, difficult in rows)
            write_text(out / "Annotations" / f"{stem}.xml",
                       f"<annotation>\n  <folder>JPEGImages</folder>\n  <filename>{_xml(name)}</filename>\n"
                       f"  <size>\n    <width>{image.width}</width>\n    <height>{image.height}</height>\n    <depth>3</depth>\n"
                       f"  </size>\n  <segmented>0</segmented>\n{objects}</annotation>\n")
            stems.append(stem)
        write_text(out / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{s}\n" for s in stems))
    write_text(out / "classes.txt", "".join(f"{name}\n" for _, name in data.categories))
    ids = [cat_id for cat_id, _ in data.categories]
    if ids != list(range(len(ids))):
        write_json(out / "categories.json", [{"id": i, "name": n} for i, n in data.categories])
    return out


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}


def convert(source: str | Path, to: str, out: str | Path, copy: bool = False, strict: bool = False) -> DetectionData:
    """Read SOURCE (any layout) and write it to OUT as TO; OUT must not exist or be empty."""
    if to not in WRITERS:
        raise CnnkitError(f"unknown detection format '{to}'", f"choose one of {', '.join(WRITERS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnkitError(f"{out}: exists and is not empty", "choose a new --out folder")
    data = load_detection(source, strict=strict)
    WRITERS[to](data, out, copy=copy)
    return data


def _round(value: float) -> float:
    """1e-4 px is far below annotation noise, and hides the float error of YOLO's normalised values."""
    return round(float(value), 4)


def _fmt(value: float) -> str:
    return np.format_float_positional(_round(value), trim="-")


def _xml(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
