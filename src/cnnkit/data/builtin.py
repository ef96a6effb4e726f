"""Built-in datasets, materialised once on disk in the ImageFolder layout and reused afterwards.

``digits``: scikit-learn's 1,797 real 8x8 handwritten digits (16 grey levels, scaled to 0-255),
split 60/20/20 into train/val/test, stratified with a fixed seed so every machine gets the same split.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.engine.rundir import temp_dir

BUILTIN = ("digits", "shapes", "cells")
SHAPES = {"n": 1000, "imgsz": 320, "seed": 0}  # the detection benchmark's data: 800 train / 200 val
SHAPES_SEGMENT = {"n": 1000, "imgsz": 256, "seed": 0}  # the segmentation benchmark's: 800 train / 200 val
CELLS = {"n": 300, "imgsz": 256, "seed": 0}  # 240 train / 60 val synthetic 16-bit microscopy images
DIGITS_SEED = 0


def cache_dir() -> Path:
    """$CNNKIT_HOME, else ~/.cache/cnnkit: where built-in datasets are written."""
    return Path(os.environ.get("CNNKIT_HOME", Path.home() / ".cache" / "cnnkit"))


def resolve_data(data: str, task: str | None = None) -> Path:
    """A dataset path, materialising a built-in dataset when ``data`` names one and no such folder
    exists; ``shapes`` is written in the layout of ``task`` (segment: masks; else COCO + YOLO)."""
    path = Path(data)
    if data in BUILTIN and not path.exists():
        if data == "shapes" and task == "segment":
            return materialise_synth(cache_dir() / "datasets" / "shapes_segment", "shapes", "segment", SHAPES_SEGMENT)
        if data == "shapes":
            return materialise_shapes(cache_dir() / "datasets" / data)
        if data == "cells":
            return materialise_synth(cache_dir() / "datasets" / "cells", "cells", "segment", CELLS)
        return materialise_digits(cache_dir() / "datasets" / data)
    return path


def materialise_synth(root: Path, kind: str, task: str, settings: dict) -> Path:
    """`cnnkit data synth KIND` with fixed settings, once (classes.txt marks a finished dataset: the
    generator writes into a temporary folder and renames it into place)."""
    if (root / "classes.txt").is_file():
        return root
    from cnnkit.data.synth import synth_dataset

    synth_dataset(kind, root, task=task, force=True, **settings)
    return root


def materialise_shapes(root: Path) -> Path:
    """`cnnkit data synth shapes` with the benchmark's settings (COCO + YOLO layouts), once."""
    if (root / "data.yaml").is_file():
        return root
    from cnnkit.data.synth import synth_dataset

    synth_dataset("shapes", root, task="detect", force=True, **SHAPES)
    return root


def materialise_digits(root: Path) -> Path:
    """Write digits as ROOT/{train,val,test}/{0..9}/NNNN.png; a no-op when it is already there."""
    if (root / ".complete").is_file():
        return root
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    index = np.arange(len(images))
    train, rest = train_test_split(index, test_size=0.4, stratify=digits.target, random_state=DIGITS_SEED)
    val, test = train_test_split(rest, test_size=0.5, stratify=digits.target[rest], random_state=DIGITS_SEED)
    root.parent.mkdir(parents=True, exist_ok=True)
    # build in a temporary sibling and rename: two processes (e.g. torchrun ranks) never see half a dataset
    tmp = temp_dir(root.parent, root.name)
    try:
        for split, ids in (("train", train), ("val", val), ("test", test)):
            for i in ids:
                folder = tmp / split / str(digits.target[i])
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i], "L").save(folder / f"{i:04d}.png")
        (tmp / ".complete").write_text("sklearn.datasets.load_digits, 60/20/20 stratified, seed 0\n")
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first
            if not (root / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
