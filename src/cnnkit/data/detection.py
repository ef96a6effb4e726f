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
from PIL import Image

from cnnkit.console import warn
from cnnkit.data.images import is_image_file
from cnnkit.engine.rundir import copy_file, write_json, write_text
from cnnkit.errors import CnnkitError

SPLITS = ("train", "val", "test")
_TOLERANCE = 0.01  # pixels: rounding in normalised YOLO floats is not "out of the image"


@dataclass
class DetectionImage:
    """One image and its boxes: ``boxes`` [N, 4] float64 xyxy pixels (0-based, x2/y2 exclusive edges),
    ``labels`` [N] int64 = the dataset's own category ids. N = 0 is a negative image."""

    path: Path
    image_id: int | str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    crowd: int = 0  # COCO iscrowd annotations left out of boxes
    # COCO ``segmentation`` of each box, in the same order (polygon lists or RLE dicts, as the file has
    # them; None for a box whose annotation has none); None when the dataset has no segmentation at all
    segmentations: list | None = None


@dataclass
class DetectionData:
    root: Path
    layout: str
    categories: list[tuple[int, str]]  # (id, name) in dataset order
    splits: dict[str, list[DetectionImage]]

    @property
    def classes(self) -> list[str]:
        return [name for _, name in self.categories]

    @property
    def names(self) -> dict[int, str]:
        return dict(self.categories)

    def num_boxes(self) -> int:
        return sum(len(image.boxes) for images in self.splits.values() for image in images)


# ---------------------------------------------------------------------------------------- reading

def detect_layout(root: str | Path) -> str | None:
    """'coco', 'yolo', 'voc' or None, from the files at ROOT (a data.yaml path counts as YOLO)."""
    root = Path(root)
    if root.is_file() and root.suffix in (".yaml", ".yml"):
        return "yolo"
    if any((root / "annotations" / f"{split}.json").is_file() for split in SPLITS):
        return "coco"
    if (root / "data.yaml").is_file() or (root / "data.yml").is_file():
        return "yolo"
    if (root / "Annotations").is_dir():
        return "voc"
    return None


def load_detection(root: str | Path, strict: bool = False) -> DetectionData:
    """Read a COCO, YOLO or VOC dataset. Boxes outside the image are clipped with a warning
    (strict=True: an error); every other defect is a CnnkitError naming the file."""
    root = Path(root)
    layout = detect_layout(root)
    if layout is None:
        raise CnnkitError(f"{root}: not a detection dataset",
                          "expected COCO annotations/train.json, YOLO data.yaml or VOC Annotations/")
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
    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: unreadable image ({exc})") from None


def _number(value, place: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CnnkitError(f"{place}: {value!r} is not a number") from None


def read_coco(root: Path, strict: bool = False) -> DetectionData:
    categories: dict[int, str] = {}
    splits: dict[str, list[DetectionImage]] = {}
    for split in SPLITS:
        file = root / "annotations" / f"{split}.json"
        if file.is_file():
            splits[split] = _read_coco_split(root, split, file, categories, strict)
    return DetectionData(root, "coco", list(categories.items()), splits)


def read_coco_file(file: Path, categories: dict[int, str]) -> tuple[dict, set[int]]:
    """A COCO annotation file's JSON, its categories merged into ``categories`` (an id must keep its name
    across splits), and the set of category ids it declares."""
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
        return coco, {int(cat["id"]) for cat in coco["categories"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnkitError(f"{file}: a category lacks a valid 'id' or 'name' ({exc})") from None


def _read_coco_split(root: Path, split: str, file: Path, categories: dict[int, str], strict: bool) -> list[DetectionImage]:
    coco, known = read_coco_file(file, categories)
    try:
        entries = {}
        for img in coco["images"]:
            path = _coco_image_path(root, split, str(img["file_name"]), file)
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
        images.append(DetectionImage(path, image_id, width, height, boxes, labels_, crowd,
                                     [segmentations[k] for k in kept] if with_segmentation else None))
    return images


def _coco_image_path(root: Path, split: str, file_name: str, annotations: Path) -> Path:
    for candidate in (root / "images" / file_name, root / "images" / split / file_name):
        if candidate.is_file():
            return candidate
    raise CnnkitError(f"{annotations}: image '{file_name}' not found under {root / 'images'} or {root / 'images' / split}")


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
    base = Path(spec.get("path") or ".")
    base = base if base.is_absolute() else file.parent / base
    splits = {}
    for split in SPLITS:
        if spec.get(split):
            sources = spec[split] if isinstance(spec[split], list) else [spec[split]]
            images = [_read_yolo_image(path, ids, file, strict) for path in _yolo_images(base, sources, file)]
            splits[split] = images
    if not splits:
        raise CnnkitError(f"{file}: no split paths", "add e.g. 'train: images/train' and 'val: images/val'")
    return DetectionData(file.parent, "yolo", [(int(i), str(n)) for i, n in zip(ids, names)], splits)


def _yolo_images(base: Path, sources: Iterable, file: Path) -> list[Path]:
    paths: list[Path] = []
    for source in sources:
        source = base / str(source)
        if source.is_dir():
            paths += sorted(p for p in source.rglob("*") if is_image_file(p))
        elif source.is_file() and source.suffix == ".txt":  # a list of image paths
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if line.strip():
                    path = base / line.strip()
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


def _read_yolo_image(path: Path, ids: list, data_yaml: Path, strict: bool) -> DetectionImage:
    width, height = _image_size(path)
    label_file = _yolo_label_path(path)
    rows, labels, where = [], [], []
    if label_file.is_file():  # no label file: a negative image, as in YOLO
        for number, line in enumerate(label_file.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            place = f"{label_file}:{number}"
            if len(fields) != 5:
                raise CnnkitError(f"{place}: expected 5 fields 'class cx cy w h', got {len(fields)}")
            try:
                value, cx, cy, w, h = (float(v) for v in fields)
            except ValueError:
                raise CnnkitError(f"{place}: not numbers: {line.strip()!r}") from None
            cls = int(value) if value.is_integer() else -1
            if not 0 <= cls < len(ids):
                raise CnnkitError(f"{place}: class {fields[0]} not in names of {data_yaml} (0..{len(ids) - 1})")
            if w < 0 or h < 0:
                raise CnnkitError(f"{place}: negative box width or height")
            rows.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
            labels.append(int(ids[cls]))
            where.append(place)
    boxes, labels_, _ = _finish_boxes(rows, labels, where, width, height, str(label_file), strict)
    return DetectionImage(path, path.stem, width, height, boxes, labels_)


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
            for name, _, place in objects:
                if name not in by_name:
                    raise CnnkitError(f"{place}: class '{name}' not in the class list of {root}")
            boxes, labels, _ = _finish_boxes([row for _, row, _ in objects], [by_name[n] for n, _, _ in objects],
                                          [place for _, _, place in objects], width, height, str(file), strict)
            images.append(DetectionImage(path, stem, width, height, boxes, labels))
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
    """-> (filename, width, height, [(name, xyxy 0-based, place)]); VOC pixels are 1-based inclusive."""
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
        objects.append((name, (x1 - 1, y1 - 1, x2, y2), place))
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


def write_coco(data: DetectionData, out: str | Path, copy: bool = False) -> Path:
    """OUT/annotations/SPLIT.json + OUT/images/SPLIT/NAME (file_name 'SPLIT/NAME'). Integer image ids are
    kept when unique; otherwise images are numbered 1..N."""
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
        write_json(out / "annotations" / f"{split}.json", coco)
    return out


def write_yolo(data: DetectionData, out: str | Path, copy: bool = False) -> Path:
    """OUT/data.yaml + OUT/images/SPLIT/NAME + OUT/labels/SPLIT/STEM.txt. Class index = position in
    data.categories; ids other than 0..K-1 are kept in data.yaml as ``cnnkit_category_ids``."""
    import yaml

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
            for (x1, y1, x2, y2), label in zip(image.boxes.tolist(), image.labels.tolist()):
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
    categories.json when ids are not 0..K-1 (read back by read_voc). Image stems are made unique."""
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
            objects = "".join(
                f"  <object>\n    <name>{_xml(names[label])}</name>\n    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
                f"    <difficult>0</difficult>\n    <bndbox>\n"
                f"      <xmin>{_fmt(x1 + 1)}</xmin>\n      <ymin>{_fmt(y1 + 1)}</ymin>\n"
                f"      <xmax>{_fmt(x2)}</xmax>\n      <ymax>{_fmt(y2)}</ymax>\n    </bndbox>\n  </object>\n"
                for (x1, y1, x2, y2), label in zip(image.boxes.tolist(), image.labels.tolist()))
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
