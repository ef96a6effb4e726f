"""The classification layout: ROOT/train/CLASS/*.png, ROOT/val/CLASS/…, optional ROOT/test/.

With one split only (ROOT/CLASS/… or ROOT/train/ alone) a stratified validation split is cut
with ``val_split`` and a fixed seed, so the same images land in val on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.data.images import is_image_file
from cnnkit.data.sources import walk_files
from cnnkit.errors import CnnkitError

SPLIT_NAMES = ("train", "val", "test")
# Common alternative names users have on disk for the validation split.
SPLIT_ALIASES = {"valid": "val", "validation": "val"}

Sample = tuple[Path, int]


@dataclass
class ImageFolderData:
    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    val_from_train: bool = False  # True when val was cut from train by val_split


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> folder, for the splits present under root, in train, val, test order."""
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        name = SPLIT_ALIASES.get(child.name.lower(), child.name.lower())
        if name in SPLIT_NAMES and name not in found:
            found[name] = child
    return {name: found[name] for name in SPLIT_NAMES if name in found}  # train, val, test order


def list_class_images(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, for every class folder of one split."""
    classes: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[class_dir.name] = [p for p in walk_files(class_dir) if is_image_file(p)]
    return classes


def _scan_split(split_dir: Path, classes: list[str] | None) -> tuple[list[str], list[Sample]]:
    per_class = list_class_images(split_dir)
    if not per_class:
        raise CnnkitError(f"{split_dir}: no class folders", "expected SPLIT/CLASS/image.png")
    for name, files in per_class.items():
        if not files:
            raise CnnkitError(f"{split_dir / name}: empty class folder (no images)", "add images or remove the folder")
    if classes is None:
        classes = list(per_class)
    else:
        unknown = [name for name in per_class if name not in classes]
        if unknown:
            raise CnnkitError(
                f"{split_dir}: class '{unknown[0]}' is not in the train split",
                f"train classes are {', '.join(classes[:10])}; add train images for it or remove the folder",
            )
    index = {name: i for i, name in enumerate(classes)}
    samples = [(path, index[name]) for name, files in per_class.items() for path in files]
    return classes, samples


def stratified_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Cut ``fraction`` of every class into a second list, reproducibly (at least one image per class
    stays on each side when the class has two or more)."""
    import random

    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    kept: list[Sample] = []
    held: list[Sample] = []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n_held = round(len(items) * fraction)
        if len(items) >= 2:
            n_held = min(max(n_held, 1), len(items) - 1)
        else:
            n_held = 0
        held.extend(items[:n_held])
        kept.extend(items[n_held:])
    return kept, held


def load_imagefolder(root: str | Path, val_split: float = 0.2, seed: int = 0) -> ImageFolderData:
    """Scan an ImageFolder dataset; raise CnnkitError naming the folder on any layout problem."""
    root = Path(root)
    if not root.exists():
        raise CnnkitError(f"{root}: no such dataset folder", "pass --data ROOT, or --data digits for the built-in set")
    if not root.is_dir():
        raise CnnkitError(f"{root}: not a folder", "--data expects ROOT with train/CLASS/*.png")
    split_dirs = find_split_dirs(root)
    if "train" not in split_dirs:
        if split_dirs:
            raise CnnkitError(f"{root}: has {', '.join(split_dirs)} but no train/ folder", "add ROOT/train/CLASS/…")
        split_dirs = {"train": root}  # ROOT/CLASS/*.png: one split
    try:
        classes, train = _scan_split(split_dirs["train"], None)
    except CnnkitError as exc:  # a detection export (CVAT's annotations/ + images/) is not a set of class folders
        from cnnkit.data.detection import detect_layout

        layout = detect_layout(root)
        if layout is None:
            raise
        raise CnnkitError(f"{root}: a {layout.upper()} detection dataset, not class folders ({exc.message})",
                          "use `cnnkit detect train` (or `segment train --model maskrcnn` for instances); classification "
                          "expects ROOT/train/CLASS/*.png") from None
    data = ImageFolderData(root=root, classes=classes, splits={"train": train})
    for name in ("val", "test"):
        if name in split_dirs:
            data.splits[name] = _scan_split(split_dirs[name], classes)[1]
    if "val" not in data.splits:
        if not 0.0 < val_split < 1.0:
            raise CnnkitError(f"{root}: no val/ folder and --val-split is {val_split}", "pass --val-split 0.2")
        data.splits["train"], data.splits["val"] = stratified_split(train, val_split, seed)
        data.val_from_train = True
    return data
