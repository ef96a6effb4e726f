"""`cnnkit data check` for detection datasets (COCO, YOLO, VOC): boxes per class and split, objects
per image, box sizes by COCO's small / medium / large areas, and findings: images without objects,
zero-area and tiny boxes, duplicate boxes. Boxes outside the image are reported by the reader
(clipped with a warning); a file the reader cannot use is one error finding naming it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from cnnkit.data.check import CheckReport, _stats
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
    report.classes = [name for _, name in data.categories]
    box_sizes: dict[str, Counter] = {name: Counter() for name in report.classes}
    objects: dict[str, dict] = {}
    for split, images in data.splits.items():
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
                        "objects_per_image": objects, "box_counts": "boxes per class (not images)"}
    return report
