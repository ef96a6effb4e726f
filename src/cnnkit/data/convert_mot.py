"""MOTChallenge ground truth -> the training data a tracker's two models learn from: COCO detection data for the
detector and crops per identity for the re-ID embedder (``cnnkit data convert MOT --to coco|identities``).

    cnnkit data convert data/MOT17 --to coco --every 3 --out data/mot17_det
    cnnkit detect train --data data/mot17_det --model yolo_n
    cnnkit data convert data/MOT17 --to identities --out data/mot17_reid
    cnnkit embed train --data data/mot17_reid
    cnnkit track val --data data/MOT17 --weights DETECTOR --tracker deepsort --reid EMBEDDER

    from cnnkit.data.convert_mot import mot_to_coco, mot_to_identities
    mot_to_coco("data/MOT17", "data/mot17_det", every=3)          # {"images": {"train": …, "val": …}, "boxes": …}
    mot_to_identities("data/MOT17", "data/mot17_reid")            # {"identities": …, "crops": {"train": …, "val": …}}

SOURCE is one sequence, a folder of sequences or a root of split folders (ROOT/train/SEQ, ROOT/test/SEQ), as
data.mot reads them. Sequences without gt/gt.txt are skipped (MOTChallenge's test sequences have none); a
source without any is an error naming it. Sequences whose gt.txt are byte for byte the same (MOT17 ships each
video three times, -DPM, -FRCNN and -SDP, with other public detections) are converted once, the first by name.

Rows used: the gt rows to consider (column 7 not 0, as TrackEval reads it), of every class they hold (a class
<= 0, MOT15's unknown, counts as class 1), at least ``min_visibility`` visible (an unknown visibility, -1,
counts as fully visible), their boxes clipped to the frame (x, y, w, h in pixels, kept as they are: cnnkit's
tracker writes its results in the same coordinates).

``--to coco`` writes cnnkit's COCO layout (``annotations/{train,val}.json``, ``images/SPLIT/SEQ_000001.jpg``
hard-linked to the frames, or copied), which ``cnnkit detect train --data OUT`` reads as it is. One category per
class number, its id the number: "object" when class 1 is the only one, else MOTChallenge's class names.
Images carry their ``sequence`` and ``frame``, annotations their ``track_id`` and ``visibility``. Splits keep
whole sequences apart, as a sequence's frames are near duplicates of each other (see ``coco_splits``).

``--to identities`` writes an ImageFolder whose classes are identities, ``OUT/{train,val}/SEQ_ID/*.png``: crops
at their native size (the embedder resizes). Each identity's crops are split in time, so that ``embed train``
learns every identity and both of its figures mean something: leave-one-out retrieval within val during
training, and ``embed val`` (val queries against the train gallery: the same object found again later, as a
tracker does after an occlusion). cnnkit's ImageFolder needs every val class in train, which rules out holding
out whole identities (see ``identity_split``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnkit.console import warn
from cnnkit.data.mot import MotSequence, find_sequences, read_mot_file
from cnnkit.engine.rundir import temp_dir, write_json
from cnnkit.errors import CnnkitError

# MOT17/MOT20's classes (MOTChallenge's devkit); evaluation scores class 1 only
MOT_CLASSES = {1: "pedestrian", 2: "person_on_vehicle", 3: "car", 4: "bicycle", 5: "motorbike", 6: "non_mot_vehicle",
               7: "static_person", 8: "distractor", 9: "occluder", 10: "occluder_on_ground", 11: "occluder_full",
               12: "reflection", 13: "crowd"}
VAL_FOLDERS = ("test", "val", "valid", "validation")  # a source split folder whose sequences go to val by default
HOLD_OUT = 0.2  # without split folders: this share of the sequences (the last by name) goes to val


@dataclass
class Labelled:
    """A sequence with ground truth: the split folder it was found in (lower case, None when there is none) and
    its usable gt rows [N, 10] (class and visibility filled in where the file leaves them unknown)."""

    seq: MotSequence
    folder: str | None
    rows: np.ndarray


# ------------------------------------------------------------------------------------------- sources

def is_mot_source(path: str | Path) -> bool:
    """A MOTChallenge sequence, a folder of them or a root of split folders of them: a seqinfo.ini, gt/gt.txt or
    img1/ in the folder, a subfolder or a subfolder's subfolder. Cheap on a big image folder (directory entries only)."""
    root = Path(path)
    if not root.is_dir():
        return False

    def marked(folder: Path) -> bool:
        return (folder / "seqinfo.ini").is_file() or (folder / "gt" / "gt.txt").is_file() or (folder / "img1").is_dir()

    def subfolders(folder: Path) -> list[Path]:
        try:
            with os.scandir(folder) as entries:
                return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
        except OSError:  # unreadable: not ours to judge here; reading the source names it
            return []

    return marked(root) or any(marked(sub) or any(marked(seq) for seq in subfolders(sub)) for sub in subfolders(root))


def labelled_sequences(source: str | Path, split: str | None = None) -> list[Labelled]:
    """The sequences under ``source`` (its ``split`` folder only, if given) that have ground truth, sorted by name;
    duplicates (the same gt.txt bytes) once. Raises CnnkitError naming ``source`` when none has a gt/gt.txt, and
    naming the file for a malformed one."""
    root = Path(source)
    found = find_sequences(root, split=split)
    without = [seq for seq in found if seq.gt is None]
    if len(without) == len(found):
        raise CnnkitError(f"{root}: no sequence has ground truth (gt/gt.txt)",
                          "converting needs labelled sequences, SEQ/gt/gt.txt; MOTChallenge's test sequences have none")
    if without:
        warn(f"{root}: {len(without)} sequence(s) without gt/gt.txt skipped ({', '.join(s.name for s in without[:3])}"
             f"{', …' if len(without) > 3 else ''})")
    labelled, seen, names = [], {}, {}
    for seq in found:
        if seq.gt is None:
            continue
        digest = hashlib.sha256(seq.gt.read_bytes()).hexdigest()
        if digest in seen:
            warn(f"{seq.root}: the same gt.txt as {seen[digest]} (one video, other public detections): converted once")
            continue
        if seq.name in names:
            raise CnnkitError(f"{seq.root}: another sequence is also named {seq.name} ({names[seq.name]})",
                              "sequence names become file and identity names: rename one (seqinfo.ini's name=)")
        seen[digest], names[seq.name] = seq.name, seq.root
        labelled.append(Labelled(seq, _folder_of(seq, root, split), _usable_rows(seq)))
    return labelled


def _folder_of(seq: MotSequence, root: Path, split: str | None) -> str | None:
    if split is not None:
        return split.lower()
    parent = seq.root.parent
    return parent.name.lower() if seq.root != root and parent != root and parent.parent == root else None


def _usable_rows(seq: MotSequence) -> np.ndarray:
    """gt rows to consider, class <= 0 as 1 and visibility < 0 as 1, sorted by frame (stable)."""
    rows = read_mot_file(seq.gt, "gt", length=seq.length)
    rows = rows[rows[:, 6] != 0].copy()
    rows[rows[:, 7] <= 0, 7] = 1.0
    rows[rows[:, 8] < 0, 8] = 1.0
    return rows[np.argsort(rows[:, 0], kind="stable")]


def clipped_boxes(rows: np.ndarray, width: int, height: int) -> np.ndarray:
    """MOT rows [N, >=6] (x, y, w, h top-left pixels in columns 3-6) -> [N, 4] float64 x1, y1, x2, y2 clipped to
    the width x height frame (an empty box where a row lies wholly outside)."""
    x1 = np.clip(rows[:, 2], 0, width)
    y1 = np.clip(rows[:, 3], 0, height)
    x2 = np.clip(rows[:, 2] + rows[:, 4], 0, width)
    y2 = np.clip(rows[:, 3] + rows[:, 5], 0, height)
    return np.stack([x1, y1, x2, y2], axis=1)


# ------------------------------------------------------------------------------------------- output

def _check_out(out: str | Path, force: bool) -> Path:
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise CnnkitError(f"{root}: exists and is not a folder", "pass a new folder for --out")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise CnnkitError(f"{root}: folder exists and is not empty", "choose a new --out folder")
    return root


def _build(out: Path, write) -> dict:
    """Run ``write(tmp)`` in a temporary sibling of ``out`` and rename the finished folder into place."""
    from cnnkit.data.synth import _swap_in

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out.parent, out.name)
    try:
        summary = write(tmp)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"root": str(out), **summary}


class _Ticker:
    """A progress bar over frames, redrawn at most 4 times a second (or nothing, without ``progress``)."""

    def __init__(self, label: str, total: int, progress: bool):
        from cnnkit.console import progress_bar

        self.bar = progress_bar(transient=True, auto_refresh=False) if progress else None
        self.label, self.total, self.done = label, total, 0
        self.started = self.drawn = time.perf_counter()

    def __enter__(self) -> "_Ticker":
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, info="", rate="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.bar is not None and (now - self.drawn >= 0.25 or self.done == self.total):
            self.bar.update(self.task, completed=self.done, rate=f"{self.done / max(now - self.started, 1e-9):.0f} frames/s")
            self.bar.refresh()
            self.drawn = now


def _place(source: Path, target: Path, copy: bool) -> None:
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copyfile(source, target)


# ---------------------------------------------------------------------------------------------- COCO

@dataclass
class Part:
    """Frames ``first``..``last`` (1-based, inclusive) of a sequence, in one COCO split."""

    item: Labelled
    split: str
    first: int
    last: int


def coco_splits(items: list[Labelled], split_map: dict[str, str] | None = None) -> list[Part]:
    """Which COCO split each sequence goes to, whole.

    - ``split_map``: {sequence name or source split folder: "train" or "val"}, a sequence's name before its
      folder's; sequences it does not name follow the rules below. Used as given: when nothing maps to val,
      no val.json is written (``detect train`` then cuts val from train).
    - Without it, by the folder a sequence was found in: train/ -> train, test/ (or val/) -> val.
    - Sequences in no split folder (a folder of sequences, or other folder names) go to train; if then no
      sequence is in val (also a root whose test/ has no gt), the last 20% of the train sequences by name, at
      least one, go to val.
    - One sequence alone is cut in time: its last 20% of frames go to val (its near-duplicate frames then
      meet only at the cut)."""
    mapping = {str(k).lower(): str(v).lower() for k, v in (split_map or {}).items()}
    bad = sorted({v for v in mapping.values() if v not in ("train", "val")})
    if bad:
        raise CnnkitError(f"split_map: unknown split {bad[0]!r}", "map sequence or folder names to train or val")
    decided = {}
    for item in items:
        split = mapping.get(item.seq.name.lower()) or (mapping.get(item.folder) if item.folder else None)
        if split is None:
            split = "val" if item.folder in VAL_FOLDERS else "train"
        decided[item.seq.name] = split
    if not split_map and "val" not in decided.values():
        if len(items) == 1:
            n = items[0].seq.length
            cut = n - max(1, round(n * HOLD_OUT)) if n >= 2 else n
            return [Part(items[0], "train", 1, cut)] + ([Part(items[0], "val", cut + 1, n)] if cut < n else [])
        held = min(max(1, round(len(items) * HOLD_OUT)), len(items) - 1)
        for item in items[len(items) - held:]:
            decided[item.seq.name] = "val"
    return [Part(item, decided[item.seq.name], 1, item.seq.length) for item in items]


def _kept_frames(part: Part, every: int) -> list[int]:
    """Frames 1, 1 + every, 1 + 2 every, … of the sequence that lie in the part."""
    return [k for k in range(part.first, part.last + 1) if (k - 1) % every == 0]


def _categories(items: list[Labelled]) -> list[dict]:
    classes = sorted({int(c) for item in items for c in item.rows[:, 7]}) or [1]
    if classes == [1]:
        return [{"id": 1, "name": "object", "supercategory": ""}]
    return [{"id": c, "name": MOT_CLASSES.get(c, f"class_{c}"), "supercategory": ""} for c in classes]


def mot_to_coco(source: str | Path, out: str | Path, split_map: dict[str, str] | None = None, every: int = 1,
                min_visibility: float = 0.0, copy: bool = False, force: bool = False, progress: bool = True) -> dict:
    """MOTChallenge sequences with ground truth -> COCO detection data in ``out`` (see the module docstring; the
    splits are ``coco_splits``'). ``every``: keep frames 1, 1 + every, 1 + 2 every, … of each sequence (neighbouring
    frames are near duplicates); ``min_visibility``: leave out boxes less visible (0-1); frames are hard-linked, or
    copied with ``copy`` or where linking fails. Refuses a non-empty ``out`` unless ``force``.

    Returns ``{"root", "splits": {split: [sequence names]}, "images": {split: count}, "boxes": {split: count},
    "classes": [names]}``."""
    if every < 1:
        raise CnnkitError(f"--every {every}: must be at least 1", "1 keeps every frame, 3 every third")
    if not 0.0 <= min_visibility <= 1.0:
        raise CnnkitError(f"--min-visibility {min_visibility}: out of range", "use a share in [0, 1]")
    root = _check_out(out, force)
    items = labelled_sequences(source)
    parts = coco_splits(items, split_map)
    categories = _categories(items)
    total = sum(len(_kept_frames(part, every)) for part in parts)

    def write(tmp: Path) -> dict:
        docs = {split: {"images": [], "annotations": []} for split in ("train", "val")}
        image_id, box_id = 0, 0
        with _Ticker("mot -> coco", total, progress) as tick:
            for part in sorted(parts, key=lambda p: (p.split != "train", p.item.seq.name, p.first)):
                seq, rows = part.item.seq, part.item.rows
                rows = rows[rows[:, 8] >= min_visibility]
                boxes = clipped_boxes(rows, seq.width, seq.height)
                frames = rows[:, 0].astype(np.int64)
                folder = tmp / "images" / part.split
                folder.mkdir(parents=True, exist_ok=True)
                for k in _kept_frames(part, every):
                    path = seq.frames[k - 1]
                    name = f"{seq.name}_{k:06d}{path.suffix.lower()}"
                    _place(path, folder / name, copy)
                    image_id += 1
                    docs[part.split]["images"].append({"id": image_id, "file_name": f"{part.split}/{name}", "width": seq.width,
                                                       "height": seq.height, "sequence": seq.name, "frame": k})
                    lo, hi = np.searchsorted(frames, [k, k + 1])
                    for row, (x1, y1, x2, y2) in zip(rows[lo:hi], boxes[lo:hi]):
                        if x2 - x1 < 1 or y2 - y1 < 1:  # (nearly) all of it outside the frame
                            continue
                        box_id += 1
                        w, h = x2 - x1, y2 - y1
                        docs[part.split]["annotations"].append({
                            "id": box_id, "image_id": image_id, "category_id": int(row[7]),
                            "bbox": [round(float(v), 4) for v in (x1, y1, w, h)], "area": round(float(w * h), 4),
                            "iscrowd": 0, "track_id": int(row[1]), "visibility": round(float(row[8]), 4)})
                    tick()
        if box_id == 0:
            raise CnnkitError(f"{source}: no box to convert (no gt row to consider at least {min_visibility:g} visible)",
                              "a detection dataset needs annotated objects: check gt.txt, or lower --min-visibility")
        info = {"description": f"cnnkit data convert {Path(source).name} --to coco", "every": every,
                "min_visibility": min_visibility}
        for split, doc in docs.items():
            if doc["images"]:
                write_json(tmp / "annotations" / f"{split}.json", {"info": info, **doc, "categories": categories})
        return {"splits": {s: sorted({p.item.seq.name for p in parts if p.split == s}) for s in ("train", "val")},
                "images": {s: len(d["images"]) for s, d in docs.items()},
                "boxes": {s: len(d["annotations"]) for s, d in docs.items()},
                "classes": [c["name"] for c in categories]}

    return _build(root, write)


# ------------------------------------------------------------------------------------------ identities

def spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` of the indices 0..n-1, evenly spread and including both ends."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))


def identity_split(n: int, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """[n] bool, True for the crops of one identity (in time order) that go to val: one run of consecutive crops
    at a random place, ``val_fraction`` of them but at least 2 (so each val query has a positive to find) and
    never all (the identity must be in train: val classes are train classes). Identities of fewer than 3 crops
    stay in train. A run rather than scattered crops: a val crop's near duplicates in train are only at its ends."""
    val = np.zeros(n, dtype=bool)
    if n < 3 or val_fraction <= 0:
        return val
    n_val = min(max(2, round(n * val_fraction)), n - 1)
    start = int(rng.integers(0, n - n_val + 1))
    val[start:start + n_val] = True
    return val


def mot_to_identities(source: str | Path, out: str | Path, split: str | None = None, min_visibility: float = 0.5,
                      min_side: int = 8, per_id: int = 40, val_fraction: float = 0.2, seed: int = 0, force: bool = False,
                      progress: bool = True) -> dict:
    """Crops of every track id in the ground truth -> an ImageFolder of identities in ``out``:
    ``out/{train,val}/SEQ_ID/SEQ_ID_FRAME.png`` (see the module docstring), for ``cnnkit embed train``.

    ``split``: read only this split folder of a MOT root (default: every sequence with gt). A crop is a box at
    least ``min_visibility`` visible with both sides at least ``min_side`` pixels after clipping to the frame (its
    edges rounded to whole pixels), cut at its native size. Of an identity's usable boxes at most ``per_id`` are
    kept, evenly spread over its frames; an identity with fewer than 2 is left out. Its crops are then split in
    time by ``identity_split`` (``val_fraction``; where its val run lies is drawn from ``seed``, the sequence
    and the id). Refuses a non-empty ``out`` unless ``force``.

    Returns ``{"root", "sequences": [names], "identities": {"train": count, "val": count}, "crops": {"train":
    count, "val": count}, "dropped": identities with fewer than 2 crops}``."""
    if not 0.0 <= min_visibility <= 1.0:
        raise CnnkitError(f"--min-visibility {min_visibility}: out of range", "use a share in [0, 1]")
    if min_side < 1 or per_id < 2:
        raise CnnkitError(f"min_side={min_side}, per_id={per_id}: need min_side >= 1 and per_id >= 2")
    if not 0.0 <= val_fraction < 1.0:
        raise CnnkitError(f"val_fraction={val_fraction}: out of range", "use a share in [0, 1), e.g. 0.2")
    root = _check_out(out, force)
    items = labelled_sequences(source, split)
    plans, dropped = [], 0
    for item in items:
        plan, lost = _crop_plan(item, min_visibility, min_side, per_id, val_fraction, seed)
        plans.append(plan)
        dropped += lost
    if not any(plans):
        raise CnnkitError(f"{source}: no identity has 2 crops at least {min_visibility:g} visible and {min_side} px a side",
                          "lower --min-visibility (or min_side)")

    def write(tmp: Path) -> dict:
        crops = {"train": 0, "val": 0}
        classes: dict[str, set] = {"train": set(), "val": set()}
        with _Ticker("mot -> identities", sum(item.seq.length for item in items), progress) as tick:
            for item, plan in zip(items, plans):
                for k, path in enumerate(item.seq.frames, start=1):
                    if k in plan:
                        image = _read_frame(path, item.seq)
                        for name, split_, (x1, y1, x2, y2) in plan[k]:
                            target = tmp / split_ / name / f"{name}_{k:06d}.png"
                            target.parent.mkdir(parents=True, exist_ok=True)
                            _write_png(target, image[y1:y2, x1:x2])
                            crops[split_] += 1
                            classes[split_].add(name)
                    tick()
        for split_ in ("train", "val"):
            (tmp / split_).mkdir(exist_ok=True)
        return {"sequences": [item.seq.name for item in items], "identities": {s: len(c) for s, c in classes.items()},
                "crops": crops, "dropped": dropped}

    return _build(root, write)


def _crop_plan(item: Labelled, min_visibility: float, min_side: int, per_id: int, val_fraction: float,
               seed: int) -> tuple[dict[int, list[tuple[str, str, tuple[int, int, int, int]]]], int]:
    """({frame: [(identity folder, split, (x1, y1, x2, y2) whole pixels)]}, identities dropped for fewer than 2 crops)."""
    seq, rows = item.seq, item.rows
    boxes = np.rint(clipped_boxes(rows, seq.width, seq.height)).astype(np.int64)
    usable = (rows[:, 8] >= min_visibility) & (boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side)
    plan: dict[int, list] = {}
    dropped = 0
    for track_id in np.unique(rows[:, 1]).astype(np.int64):
        index = np.flatnonzero(usable & (rows[:, 1] == track_id))  # in frame order: the rows are sorted by frame
        index = index[spread(len(index), per_id)]
        if len(index) < 2:
            dropped += 1
            continue
        name = f"{seq.name}_{track_id}"
        val = identity_split(len(index), val_fraction, np.random.default_rng([seed, zlib.crc32(name.encode())]))
        for row, in_val in zip(index, val):
            plan.setdefault(int(rows[row, 0]), []).append((name, "val" if in_val else "train", tuple(boxes[row].tolist())))
    return plan, dropped


def _read_frame(path: Path, seq: MotSequence) -> np.ndarray:
    """BGR uint8 [H, W, 3], the size the sequence declares."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:  # a format OpenCV does not decode, or a broken file: Pillow says which
        from cnnkit.data.decode import read_picture

        image = np.ascontiguousarray(np.asarray(read_picture(path))[:, :, ::-1])
    if image.shape[:2] != (seq.height, seq.width):
        raise CnnkitError(f"{path}: frame is {image.shape[1]}x{image.shape[0]}, the sequence {seq.width}x{seq.height}",
                          "all frames of a sequence have the size seqinfo.ini (or its first frame) gives")
    return image


def _write_png(path: Path, crop: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), crop):
        raise CnnkitError(f"{path}: cannot write the crop", "check the --out folder is writable")
