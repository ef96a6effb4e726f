"""`cnnkit data check` for detection datasets (COCO, YOLO, VOC): boxes per class and split, objects
per image, box sizes by COCO's small / medium / large areas, the ignored objects (VOC difficult, COCO
crowd) per split, and findings: images without objects,
zero-area and tiny boxes, duplicate boxes. Boxes outside the image are reported by the reader
(clipped with a warning); a file the reader cannot use is one error finding naming it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from cnnkit.data.check import CheckReport, _stats
from cnnkit.data.intensity import FEW_LEVELS, eight_bit_levels, few_levels_message
from cnnkit.errors import CnnkitError

SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO's area thresholds, in pixels
TINY_SIDE = 2.0  # a box narrower than this is almost surely an annotation slip
DUPLICATE_IOU = 0.95


def check_detection(root: str | Path, layout: str) -> CheckReport:
    import torch
    from torchvision.ops import box_iou

    from cnnkit.data.detection import load_detection

    report = CheckReport(root=str(root), layout=layout)
    try:
        data = load_detection(root)
    except CnnkitError as exc:
        report._add("error", root, exc.message)
        return report
    names = data.names
    check_images(report, data)
    report.classes = [name for _, name in data.categories]
    box_sizes: dict[str, Counter] = {name: Counter() for name in report.classes}
    objects: dict[str, dict] = {}
    ignored: dict[str, Counter] = {}
    for split, images in data.splits.items():
        ignored[split] = Counter(obj.kind for image in images for obj in image.ignored)
        per_class = Counter()
        report.sizes[split] = {"width": _stats([im.width for im in images]), "height": _stats([im.height for im in images])}
        empty = 0
        for image in images:
            if len(image.boxes) == 0:
                empty += 1
                continue
            sides = image.boxes[:, 2:] - image.boxes[:, :2]
            areas = sides.prod(axis=1)
            for label, area, (w, h) in zip(image.labels, areas, sides):
                name = names.get(int(label), str(label))
                per_class[name] += 1
                box_sizes[name]["small" if area < SMALL else "medium" if area < MEDIUM else "large"] += 1
            for index in np.flatnonzero(areas <= 0):
                report._add("error", image.path, f"box {index} has zero area ({image.boxes[index].round(2).tolist()})")
            for index in np.flatnonzero((sides.min(axis=1) > 0) & (sides.min(axis=1) < TINY_SIDE)):
                report._add("warning", image.path, f"box {index} is under {TINY_SIDE:g} px wide or high: an annotation slip?")
            if len(image.boxes) > 1:
                iou = box_iou(torch.from_numpy(image.boxes), torch.from_numpy(image.boxes)).numpy()
                same_class = image.labels[:, None] == image.labels[None, :]
                pairs = np.argwhere(np.triu((iou > DUPLICATE_IOU) & same_class, k=1))
                for a, b in pairs:
                    report._add("warning", image.path, f"boxes {a} and {b} overlap at IoU {iou[a, b]:.2f} with the same class: duplicate?")
        if empty:
            report._add("warning", f"{root} ({split})", f"{empty} of {len(images)} images have no objects (kept as negatives)")
        report.counts[split] = {name: per_class.get(name, 0) for name in report.classes}
        counts = list(report.counts[split].values())
        if counts and min(counts) > 0:
            report.imbalance_ratio[split] = max(counts) / min(counts)
        elif counts:
            report.imbalance_ratio[split] = float("inf")
        objects[split] = _stats([len(image.boxes) for image in images])
    report.detection = {"boxes_by_size": {name: dict(sizes) for name, sizes in box_sizes.items()},
                        "objects_per_image": objects, "box_counts": "boxes per class (not images)",
                        # VOC difficult objects and COCO crowd regions: not counted above, not trained on, and
                        # ignored in scoring (neither a hit nor a miss), as their datasets' protocols say
                        "ignored": {split: dict(counts) for split, counts in ignored.items() if counts}}
    return report


def check_images(report: CheckReport, data) -> None:
    """Open and decode every image once (the readers only read the annotations): an empty, text, truncated or
    over-the-pixel-limit file would otherwise pass here and be skipped, or stop training, later; and compare
    each recorded size with the picture (EXIF orientation applied) the boxes are drawn on."""
    from concurrent.futures import ThreadPoolExecutor

    images = list({image.path: image for split in data.splits.values() for image in split}.values())
    views: dict[Path, tuple[int, int, int]] = {}  # 16-bit images: their 8-bit view's (levels, low, high)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for image, (findings, view) in zip(images, pool.map(_inspect_image, images)):
            for level, message in findings:
                report._add(level, image.path, message)
            if view is not None:
                views[image.path] = view
    for split, members in data.splits.items():
        narrow = [(image.path, *views[image.path]) for image in members if image.path in views and views[image.path][0] < FEW_LEVELS]
        if narrow:
            report._add("warning", data.root, few_levels_message(split, narrow, len(members)))


def _inspect_image(image) -> tuple[list[tuple[str, str]], tuple[int, int, int] | None]:
    """((level, message) findings, the 8-bit view (levels, low, high) of a 16-bit picture) of one
    DetectionImage's file; never raises."""
    from cnnkit.data.images import displayed_size, open_image, orientation, recorded_frame, size_mismatch, stored_size

    path = image.path
    try:
        if path.stat().st_size == 0:
            return [("error", "empty file (0 bytes); re-export or remove the file")], None
        with open_image(path) as opened:
            stored, displayed, turn = stored_size(opened), displayed_size(opened), orientation(opened)
            opened.load()  # decodes it whole: a truncated file fails here, not in training
            view = eight_bit_levels(opened)
    except CnnkitError as exc:  # over the pixel limit (--max-pixels)
        return [("error", str(exc).removeprefix(f"{path}: "))], None
    except Exception as exc:  # noqa: BLE001 - a checker reports every decoder failure, whatever its type
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return [("error", f"cannot read image: {reason}; re-export or remove the file (training would skip it)")], None
    recorded = (image.width, image.height)
    frame = recorded_frame(recorded, stored, displayed)
    if frame == "mismatch":
        return [("error", size_mismatch(path, recorded, stored, displayed).removeprefix(f"{path}: ")
                 + "; its boxes cannot be placed (training skips it): record the size of the picture they were drawn on")], view
    if frame == "stored":
        return [("warning", f"the annotation records {recorded[0]}x{recorded[1]}, the unturned size of a photo shown "
                            f"{displayed[0]}x{displayed[1]} (EXIF orientation {turn}): its boxes are read as drawn on the "
                            f"unturned picture; if they were drawn on the upright photo, record {displayed[0]}x{displayed[1]}")], view
    if frame == "scaled":
        return [("warning", f"the annotation records {recorded[0]}x{recorded[1]} but the image is {displayed[0]}x{displayed[1]}: "
                            f"its boxes are scaled by {displayed[0] / recorded[0]:.3g} into the file's pixels")], view
    return [], view
