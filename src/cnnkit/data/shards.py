"""WebDataset tar shards: `cnnkit data shard` writes them from any layout cnnkit reads, and training streams them.

A shard folder holds ``{split}-000000.tar`` … (WebDataset's format: the members of one sample share a key,
``000000042.jpg`` beside ``000000042.cls``), one ``{split}.json`` per split with every sample's key and labels (a
few bytes a sample: class counts, class weights and a detector's anchors are computed from it without reading an
image) and ``index.json`` (task, classes, counts, the shard list), written last: a folder without it is unfinished.

Training reads the train split as a stream (``ShardStream``): the shards of an epoch are dealt out to every
(rank, loader worker) pair, each pair reads its own through a shuffle buffer, and every rank yields the same number
of full batches, which DDP needs. The images never touch the disk: a sample's files live in ``IN_MEMORY`` (see
data/decode.py) under a name of the form ``shard:train/000000042.jpg`` while the task's own dataset reads them, so
every task trains from shards with its own augmentations. Val and test, which metrics read many times, are
unpacked once into the cache (``$CNNKIT_HOME/shards``).

Shard members are bytes and are decoded as images, integers and JSON only: nothing in a shard is unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cnnkit.console import progress_bar, warn
from cnnkit.data.decode import IN_MEMORY, is_medical_file
from cnnkit.errors import CnnkitError

FORMAT = "cnnkit-shards"
VERSION = 1
SPLITS = ("train", "val", "test")
PREFIX = "shard:"
TASKS = ("classify", "detect", "segment")


def parse_size(text: str) -> int:
    """'1GB', '500MB', '64k', '1e9' -> bytes (decimal units, as tar and object stores count)."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not match:
        raise CnnkitError(f"--shard-size {text}: not a size", "write e.g. 1GB, 500MB or 64kB")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match.group(2).lower()]
    if value < 1024:
        raise CnnkitError(f"--shard-size {text}: under 1 kB", "shards hold whole images: write e.g. 1GB")
    return int(value)


# ------------------------------------------------------------------------------------------------- writing

def _member_ext(path: Path) -> str:
    if is_medical_file(path):
        raise CnnkitError(f"{path}: DICOM, NIfTI and other medical files cannot be sharded",
                          "train from the folder itself, or convert the slices to PNG first")
    return path.suffix.lower().lstrip(".") or "png"


def _png_bytes(array: np.ndarray, where: Path) -> bytes:
    from PIL import Image

    if array.min() < 0 or array.max() > 255:
        raise CnnkitError(f"{where}: mask values {int(array.min())}..{int(array.max())} do not fit a PNG index mask (0..255)")
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples_of(task: str, data: Any, split: str) -> Iterator[tuple[dict[str, bytes], dict[str, Any]]]:
    """(tar members, the sample's row in {split}.json) for every sample of the split, in order."""
    if task == "classify":
        for path, label in data.splits[split]:
            ext = _member_ext(Path(path))
            yield {ext: Path(path).read_bytes(), "cls": str(label).encode()}, {"ext": ext, "label": int(label)}
    elif task == "detect":
        for image in data.splits[split]:
            ext = _member_ext(image.path)
            row = {"ext": ext, "image_id": image.image_id, "width": image.width, "height": image.height,
                   "boxes": np.asarray(image.boxes, dtype=float).round(3).tolist(), "labels": [int(c) for c in image.labels],
                   "crowd": image.crowd,
                   "ignored": [{"box": list(obj.box), "label": obj.label, "kind": obj.kind} for obj in image.ignored]}
            annotation = {k: row[k] for k in ("width", "height", "boxes", "labels")}
            yield {ext: image.path.read_bytes(), "json": json.dumps(annotation).encode()}, row
    else:
        from cnnkit.data.segmentation import read_mask

        for sample in data.splits[split]:
            ext = _member_ext(sample.image)
            if sample.mask is None:
                raise CnnkitError(f"{sample.image}: no mask to shard")
            mask = read_mask(sample)
            counts = np.bincount(mask[mask != data.ignore_index].ravel().astype(np.int64), minlength=len(data.classes))
            yield ({ext: sample.image.read_bytes(), "mask.png": _png_bytes(mask, sample.mask)},
                   {"ext": ext, "name": sample.name, "pixels": counts.tolist()})


def task_of(data: Any) -> str:
    from cnnkit.data.detection import DetectionData
    from cnnkit.data.segmentation import SegmentationData

    return "detect" if isinstance(data, DetectionData) else "segment" if isinstance(data, SegmentationData) else "classify"


def write_shards(data: Any, out: str | Path, shard_size: int, source: str = "", force: bool = False) -> dict[str, Any]:
    """Every split of ``data`` (ImageFolderData, DetectionData or SegmentationData, val already cut) as tar shards of
    at most ``shard_size`` bytes in ``out``, with {split}.json and index.json; returns the index. Written in a
    temporary folder that is moved into place, index.json last, so an interrupted run leaves no half a dataset."""
    import webdataset as wds

    task = task_of(data)
    out = Path(out)
    if (out / "index.json").exists() and not force:
        raise CnnkitError(f"{out}: already holds shards (index.json)", "pass --force to replace them, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    index: dict[str, Any] = {"format": FORMAT, "version": VERSION, "task": task, "classes": list(data.classes),
                             "source": source, "splits": {}}
    if task == "detect":
        index["categories"] = [[int(c), n] for c, n in data.categories]
    if task == "segment":
        index["ignore_index"] = int(data.ignore_index)
    total = sum(len(data.splits.get(s, [])) for s in SPLITS)
    with progress_bar() as bar:
        job = bar.add_task("sharding", total=total)
        for split in SPLITS:
            if not data.splits.get(split):
                continue
            rows, sizes = [], {}
            writer, name, used = None, "", 0
            try:
                for position, (members, row) in enumerate(_samples_of(task, data, split)):
                    key = f"{position:09d}"
                    # what the sample takes in the tar: a 512-byte header and whole 512-byte blocks per member (a whole-second
                    # mtime keeps tarfile from adding a PAX header to each)
                    need = sum(512 + -(-len(v) // 512) * 512 for v in members.values())
                    if writer is None or (used and used + need > shard_size):
                        if writer is not None:
                            writer.close()
                        name = f"{split}-{len(sizes):06d}.tar"
                        writer, used, sizes[name] = wds.TarWriter(str(partial / name), encoder=False, mtime=int(time.time())), 0, 0
                    writer.write({"__key__": key, **members})
                    used += need
                    sizes[name] += 1
                    rows.append({"key": key, **row})
                    bar.advance(job)
            finally:
                if writer is not None:
                    writer.close()
            (partial / f"{split}.json").write_text(json.dumps({"task": task, "samples": rows}))
            entry: dict[str, Any] = {"shards": list(sizes), "samples_per_shard": list(sizes.values()), "count": len(rows),
                                     "bytes": sum((partial / n).stat().st_size for n in sizes), "annotations": f"{split}.json"}
            if task == "classify":
                entry["class_counts"] = np.bincount([r["label"] for r in rows], minlength=len(data.classes)).tolist()
            if task == "segment":
                entry["pixel_counts"] = np.sum([r["pixels"] for r in rows], axis=0).tolist()
            index["splits"][split] = entry
    for old in list(out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar")) + [out / f"{s}.json" for s in SPLITS]:
        old.unlink(missing_ok=True)
    for item in partial.iterdir():
        os.replace(item, out / item.name)
    (partial / "index.json").write_text(json.dumps(index, indent=1))
    os.replace(partial / "index.json", out / "index.json")
    partial.rmdir()
    return index


# ------------------------------------------------------------------------------------------------- reading

def _is_url(text: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://|^pipe:", text))


def is_shard_source(data: str) -> bool:
    """``--data`` names shards: a folder with a cnnkit index.json, the index.json itself, a .tar path or URL, or a
    brace pattern such as shards/train-{000000..000099}.tar."""
    text = str(data)
    if text.endswith(".tar") or ("{" in text and ".." in text and ".tar" in text):
        return True
    if _is_url(text):
        return text.endswith("index.json")
    path = Path(text)
    index = path if path.name == "index.json" else path / "index.json"
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_text(location: str) -> str:
    if _is_url(location) and not location.startswith("file://"):
        import webdataset as wds

        with wds.gopen(location, "rb") as stream:
            return stream.read().decode()
    return Path(location.removeprefix("file://")).read_text()


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if base else name


@dataclass
class ShardSet:
    """Where the shards are and what index.json says of them."""

    base: str  # the folder or URL prefix that holds index.json and the shards
    index: dict[str, Any]
    train_urls: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.index["task"]

    def urls(self, split: str) -> list[str]:
        return [_join(self.base, name) for name in self.index["splits"][split]["shards"]]


def open_shards(data: str) -> ShardSet:
    """index.json of ``data`` (folder, index.json, or a pattern of train shards whose folder holds index.json);
    a pattern replaces the index's train shards with the ones it names."""
    import braceexpand

    text = str(data)
    pattern = text.endswith(".tar") or ("{" in text and ".tar" in text)
    base = text.rsplit("/", 1)[0] if pattern else (text[: -len("index.json")].rstrip("/") if text.endswith("index.json") else text)
    if pattern and "/" not in text:
        base = "."
    location = _join(base, "index.json")
    try:
        index = json.loads(_read_text(location))
    except FileNotFoundError:
        raise CnnkitError(f"{location}: no such file", "shards come with the index.json that `cnnkit data shard` writes beside them") from None
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{location}: cannot read the shard index: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CnnkitError(f"{location}: not a cnnkit shard index (no \"format\": \"{FORMAT}\")", "write shards with `cnnkit data shard`")
    if index.get("version", 0) > VERSION:
        raise CnnkitError(f"{location}: shard format version {index['version']} is newer than this cnnkit reads ({VERSION})", "upgrade cnnkit")
    splits = index.get("splits")
    if not isinstance(splits, dict) or "train" not in splits:
        raise CnnkitError(f"{location}: the index lists no train split", "write the shards again with `cnnkit data shard`")
    for name, entry in [("", index)] + list(splits.items()):
        needed = ("task", "classes") if not name else ("shards", "samples_per_shard", "count", "annotations")
        missing = [key for key in needed if not isinstance(entry, dict) or key not in entry]
        if missing:
            where = f"split '{name}'" if name else "the index"
            raise CnnkitError(f"{location}: {where} has no {', '.join(missing)}", "write the shards again with `cnnkit data shard`")
    shard_set = ShardSet(base, index)
    shard_set.train_urls = list(braceexpand.braceexpand(text)) if pattern else shard_set.urls("train")
    if pattern:
        known = set(index["splits"]["train"]["shards"])
        unknown = [u for u in shard_set.train_urls if u.rsplit("/", 1)[-1] not in known]
        if unknown:
            raise CnnkitError(f"{unknown[0]}: not a train shard of {location}", "the pattern must name train shards that the index lists")
    for url in shard_set.train_urls + [u for split in index["splits"] if split != "train" for u in shard_set.urls(split)]:
        if not _is_url(url) and not Path(url).is_file():
            raise CnnkitError(f"{url}: no such shard", f"{location} lists it: copy the whole shard folder")
    return shard_set


def read_shard(url: str) -> Iterator[dict]:
    """The samples of one tar shard (webdataset: a dict of the files sharing a key); a shard that cannot be opened or
    read is a CnnkitError naming it."""
    import tarfile

    import webdataset as wds

    try:
        yield from wds.tarfile_samples([{"url": url}])
    except (OSError, tarfile.TarError, ValueError, EOFError) as exc:
        first = exc.args[0] if exc.args else ""  # webdataset appends the stream and the url to the arguments
        reason = str(first).splitlines()[0] if str(first) else type(exc).__name__
        raise CnnkitError(f"{url}: cannot read the shard: {reason}", "write the shards again with `cnnkit data shard`") from None


# a sample's key and a member's extension become file names in the cache: nothing that could leave its folder
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_EXT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def safe_name(key: str, ext: str, where: str) -> str:
    """``key.ext`` when both are plain names, else a CnnkitError naming ``where`` (a shard or an annotations file)."""
    if not (_SAFE_KEY.fullmatch(str(key)) and _SAFE_EXT.fullmatch(str(ext))):
        raise CnnkitError(f"{where}: member {str(key)[:60]!r}.{str(ext)[:20]} is not a plain file name",
                          "shards written by `cnnkit data shard` name members NUMBER.EXT")
    return f"{key}.{ext}"


def virtual_path(split: str, key: str, ext: str) -> Path:
    return Path(f"{PREFIX}{split}/{key}.{ext}")


def _unpack(shard_set: ShardSet, split: str, folder: Path) -> None:
    """The split's images (and masks) as files in ``folder`` (``{key}.{ext}``, masks as ``{key}.mask.png``), once."""
    done = folder / ".complete"
    if done.is_file():
        return
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for url in shard_set.urls(split):
        for sample in read_shard(url):
            for ext, value in sample.items():
                if not ext.startswith("__") and ext not in ("cls", "json"):
                    (partial / safe_name(sample["__key__"], ext, url)).write_bytes(value)
    (partial / ".complete").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def cache_folder(shard_set: ShardSet) -> Path:
    from cnnkit.data.builtin import cache_dir

    digest = hashlib.sha1(json.dumps([str(Path(shard_set.base).resolve()) if not _is_url(shard_set.base) else shard_set.base,
                                      shard_set.index], sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "shards" / digest


def load_shards(shard_set: ShardSet, unpack: bool = True) -> Any:
    """The task's dataset object over the shards: train samples under their in-memory names (the stream supplies
    the bytes), val and test unpacked into the cache (``unpack``; under DDP rank 0 unpacks, the others wait)."""
    index, task = shard_set.index, shard_set.task
    if task not in TASKS:
        raise CnnkitError(f"{shard_set.base}: shards of task '{task}' cannot be trained here", f"cnnkit trains shards of {', '.join(TASKS)}")
    cache = cache_folder(shard_set)
    rows: dict[str, list[dict]] = {}
    folders: dict[str, Path | None] = {}
    for split, entry in index["splits"].items():
        location = _join(shard_set.base, entry["annotations"])
        try:
            rows[split] = json.loads(_read_text(location))["samples"]
        except (OSError, ValueError, KeyError) as exc:
            raise CnnkitError(f"{location}: cannot read the split's annotations ({type(exc).__name__})",
                              "the shard folder is incomplete: write it again with `cnnkit data shard`") from None
        folders[split] = None if split == "train" else cache / split
        if split != "train" and unpack:
            _unpack(shard_set, split, cache / split)

    try:
        return _dataset_of(task, index, rows, cache, folders)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CnnkitError(f"{shard_set.base}: the shards' annotations lack or garble a field ({type(exc).__name__}: {exc})",
                          "write the shards again with `cnnkit data shard`") from None


def _dataset_of(task: str, index: dict, rows: dict[str, list[dict]], cache: Path, folders: dict[str, Path | None]) -> Any:
    """The task's data object from the rows of {split}.json."""
    def path_of(split: str, row: dict, ext: str | None = None) -> Path:
        name = safe_name(row["key"], ext or row["ext"], index["splits"][split]["annotations"])
        folder = folders[split]
        return Path(f"{PREFIX}{split}/{name}") if folder is None else folder / name

    classes = list(index["classes"])
    if task == "classify":
        from cnnkit.data.imagefolder import ImageFolderData

        splits = {s: [(path_of(s, r), int(r["label"])) for r in rs] for s, rs in rows.items()}
        return ImageFolderData(cache, classes, splits)
    if task == "detect":
        from cnnkit.data.detection import DetectionData, DetectionImage, IgnoredObject

        splits = {s: [DetectionImage(path_of(s, r), r["image_id"], int(r["width"]), int(r["height"]),
                                     np.asarray(r["boxes"], dtype=np.float64).reshape(-1, 4), np.asarray(r["labels"], dtype=np.int64),
                                     int(r.get("crowd", 0)), None,
                                     [IgnoredObject(tuple(o["box"]), int(o["label"]), o["kind"]) for o in r.get("ignored", [])])
                      for r in rs] for s, rs in rows.items()}
        return DetectionData(cache, "coco", [(int(c), n) for c, n in index["categories"]], splits)
    from cnnkit.data.segmentation import SegmentationData, SegmentSample

    splits = {s: [SegmentSample(path_of(s, r), path_of(s, r, "mask.png")) for r in rs] for s, rs in rows.items()}
    counts = {s: np.asarray(e["pixel_counts"], dtype=np.int64) for s, e in index["splits"].items() if "pixel_counts" in e}
    return SegmentationData(cache, classes, splits, int(index.get("ignore_index", 255)), counts)


def read_shards_for(data: str, task: str) -> Any:
    """``data``'s dataset when it names shards of ``task`` (val, predict on a split, and the like: val and test are
    unpacked into the cache; the train split, a training stream only, is left out), else None."""
    if not is_shard_source(data):
        return None
    shard_set = open_shards(data)
    if shard_set.task != task:
        raise CnnkitError(f"{data}: shards of a {shard_set.task} dataset", f"`cnnkit {shard_set.task}` reads them")
    dataset = load_shards(shard_set)
    del dataset.splits["train"]  # a training stream only: scoring reads val or test, unpacked
    return dataset


def url_of(sample: dict) -> str:
    return str(sample.get("__url__", "a train shard"))


# ------------------------------------------------------------------------------------------------- streaming

class ShardStream(IterableDataset):
    """The train split, streamed: wraps the task's training dataset (``base``, indexed by sample position) and feeds
    it each sample's bytes. ``plan`` (called by the engine's make_loader) fixes the per-rank batch, the rank and the
    loader workers; an epoch then yields ``batches`` full batches on every rank.

    The shards of an epoch, in an order drawn from (seed, epoch), are dealt to the rank × worker readers (with fewer
    shards than readers, each reader keeps every n-th sample of all of them). A reader streams its share through a
    shuffle buffer of ``buffer`` samples and stops at its quota; one that runs out first starts its share again, so
    uneven shards can repeat or skip a few samples in an epoch, as with any streamed dataset. The order depends only
    on (seed, epoch, rank, worker), which is what lets --resume replay an epoch exactly."""

    def __init__(self, base: Any, urls: list[str], count: int, seed: int, buffer: int = 1000):
        self.base, self.urls, self.count, self.seed, self.buffer = base, list(urls), count, seed, buffer
        self.epoch, self.batch, self.rank, self.world = 0, 1, 0, 1
        if hasattr(base, "choose_partners"):  # mosaic tiles a sample with others: those in the shuffle buffer
            base.choose_partners = self._partners
        self._buffer: list[dict] = []  # the shuffle buffer of the sample being read, and its position
        self._current, self._held = 0, []

    def plan(self, batch: int, rank: int, world: int, workers: int) -> None:
        """``workers`` is the loader's count; each worker reads it again from get_worker_info."""
        self.batch, self.rank, self.world = batch, rank, world

    @property
    def batches(self) -> int:
        return max(1, (self.count // self.world) // self.batch)

    def __len__(self) -> int:
        return self.batches * self.batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if callable(getattr(self.base, "set_epoch", None)):
            self.base.set_epoch(epoch)

    def _partners(self, k: int) -> list[int]:
        if not self._buffer:
            return [self._current] * k
        chosen = [self._buffer[int(i)] for i in torch.randint(len(self._buffer), (k,))]
        for sample in chosen:
            self._hold(sample)
        return [int(sample["__key__"]) for sample in chosen]

    def _share(self, worker: int, workers: int) -> tuple[list[str], int, int]:
        """(this reader's shards, keep every ``stride``-th sample from ``offset``)."""
        readers, reader = self.world * workers, self.rank * workers + worker
        order = list(self.urls)
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        if len(order) >= readers:
            return order[reader::readers], 1, 0
        return order, readers, reader

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        quota = (self.batches // workers + (worker < self.batches % workers)) * self.batch
        urls, stride, offset = self._share(worker, workers)
        rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}")
        buffer: list[dict] = []
        yielded = 0
        while yielded < quota:  # a pass over this reader's share; another only if the quota is not met yet
            read = 0
            for n, sample in enumerate(sample for url in urls for sample in self._read(url)):
                if n % stride != offset:
                    continue
                read += 1
                if not self._known(sample, url_of(sample)):
                    continue
                buffer.append(sample)
                if len(buffer) >= self.buffer:
                    yield self._take(buffer, rng)
                    yielded += 1
                    if yielded >= quota:
                        return
            if not read:
                raise CnnkitError(f"{urls[0] if urls else 'the train shards'}: no samples to stream", "write the shards again")
            while buffer and yielded < quota:
                yield self._take(buffer, rng)
                yielded += 1

    def _known(self, sample: dict, url: str) -> bool:
        """A sample whose key is a position of the train split (what `cnnkit data shard` writes); any other is
        skipped with a warning naming it, as an unreadable image is."""
        key = str(sample.get("__key__", ""))
        if key.isdigit() and int(key) < len(self.base):
            return True
        warn(f"{url}: sample {key[:60]!r} is not one of the {len(self.base)} train samples the index lists (skipped)", once_key=url)
        return False

    @staticmethod
    def _read(url: str) -> Iterator[dict]:
        """A shard's samples; a shard that breaks off (corrupt, gone from the store) is skipped from there with a
        warning, as an unreadable image is, so one bad file does not end a long run."""
        try:
            yield from read_shard(url)
        except CnnkitError as exc:
            warn(f"{exc.message} (the rest of it skipped)", once_key=url)

    def _take(self, buffer: list[dict], rng: random.Random) -> Any:
        i = rng.randrange(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        sample = buffer.pop()
        self._buffer, self._current, self._held = buffer, int(sample["__key__"]), []
        try:
            self._hold(sample)
            return self.base[self._current]
        finally:
            for name in self._held:
                IN_MEMORY.pop(name, None)

    def _hold(self, sample: dict) -> None:
        """The sample's files readable under their in-memory names until the task's dataset is done with it."""
        for ext, value in sample.items():
            if not ext.startswith("__") and ext not in ("cls", "json"):
                name = str(virtual_path("train", sample["__key__"], ext))
                if name not in IN_MEMORY:
                    IN_MEMORY[name] = value
                    self._held.append(name)


def train_count(shard_set: ShardSet) -> int:
    """Samples in the train shards the run streams (all of the index's, or those a pattern names)."""
    entry = shard_set.index["splits"]["train"]
    per_shard = dict(zip(entry["shards"], entry["samples_per_shard"]))
    return sum(per_shard[url.rsplit("/", 1)[-1]] for url in shard_set.train_urls)


def stream_train_set(train_set: Any, shard_set: ShardSet, seed: int) -> ShardStream:
    """The task's training dataset fed from the train shards the run names."""
    return ShardStream(train_set, shard_set.train_urls, train_count(shard_set), seed)
