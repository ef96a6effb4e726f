"""Data loading: images/s from a folder of JPEGs and from WebDataset shards, decoded by PIL, OpenCV or decode_jpeg.
Beside what training tiny_cnn at 64 px takes in: is the loader ever the bottleneck on this machine? (issue: data shards)

    python benchmarks/loading.py --work W [--n 500] [--batches 30] [--workers 2] [--batch 64] [--imgsz 64]

1. The data, built once into --work (reused while --n, --source-size, --quality and --shards are unchanged):
   `cnnkit data synth objects --task classify --n N --imgsz SOURCE_SIZE` (6 classes of objects on photos among
   clutter: N training images a class, 6N in all, PNG), every image re-encoded as a JPEG of quality --quality in an
   ImageFolder copy, and that copy written as shards by cnnkit's own write_shards (what `cnnkit data shard` calls),
   with a shard size that cuts the train split into about --shards tar files.
2. The loaders, each an engine loader (cnnkit.engine.trainer.make_loader: --workers processes, batch --batch, the
   shuffled training order) over the train split, with the training transform (classify_transforms at --imgsz with
   the --augment preset, `light` as `cnnkit classify train` uses by default: resize, flip, small rotation/shift/zoom
   and colour jitter, then normalisation) and collate_skipping_none, as classification trains:
   - folder + PIL: cnnkit's ImageDataset (data/images.py load_image), what training from a folder runs;
   - folder + OpenCV: the file's bytes through cv2.imdecode (BGR turned to RGB);
   - folder + decode_jpeg: torchvision.io.read_file then torchvision.io.decode_jpeg (RGB);
   - shards + PIL: cnnkit's ShardStream over ImageDataset (stream_train_set), what `--data SHARDS` runs;
   - shards + OpenCV, shards + decode_jpeg: the same ShardStream (tar reading, shuffle buffer, samples dealt to the
     workers) over a dataset that decodes the sample's bytes from IN_MEMORY with OpenCV or decode_jpeg.
   Every row runs the same transform on the decoded uint8 picture, so rows differ only in reading and decoding.
   --warmup batches (the workers' start, the shards' shuffle buffer filling) are dropped, then --batches batches
   are timed; a loader that runs out of batches starts its next epoch (new workers, counted). Best of --repeats.
3. Training alone: tiny_cnn (cnnkit's model builder, 6 classes) at --imgsz, batch --batch, forward, cross-entropy,
   backward and an AdamW step (build_optimizer, the engine's defaults) on a random batch held in memory, with the
   torch threads training gets in the main process (torch's default, printed). Images per second over --steps steps.
4. Training fed by the loader (--fed, default folder+PIL and shards+PIL, the two paths training takes): the same
   training steps in the main process on the batches of a running loader: the real end-to-end rate.

The table gives each loader's images per second and its ratio to training alone: under 1, the loader would be the
bottleneck. The headline ratios: shards against folder with PIL, and every loader against training.

On a machine with few cores the loader's workers and the training process share them: a loader measured alone has
every core to itself while the main process waits, and a training step measured alone has every core too. The
ratio of the two is therefore an upper bound for what training sees; the fed rows (loader workers and training
running at once, competing for the same cores) are the honest end-to-end figure, and their ratio to training alone
says how much the loader costs training in practice. Timing never goes into the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cnnkit.augment.presets import augment_spec, classify_transforms
from cnnkit.data.decode import IN_MEMORY
from cnnkit.data.imagefolder import load_imagefolder
from cnnkit.data.loaders import ImageDataset, collate_skipping_none
from cnnkit.data.shards import load_shards, open_shards, stream_train_set, write_shards
from cnnkit.engine.optim import build_optimizer
from cnnkit.engine.trainer import make_loader
from cnnkit.models.backbones import build_classifier

MODEL = "tiny_cnn"
SOURCES = ("folder", "shards")
DECODERS = ("pil", "opencv", "decode_jpeg")
DECODER_NAMES = {"pil": "PIL (cnnkit)", "opencv": "OpenCV", "decode_jpeg": "decode_jpeg"}


# ------------------------------------------------------------------------------------------------- the data

def build_data(work: Path, n: int, source_size: int, quality: int, shards: int) -> tuple[Path, Path]:
    """(JPEG ImageFolder, shard folder) under ``work``, built once for these settings."""
    settings = {"n": n, "source_size": source_size, "quality": quality, "shards": shards}
    jpegs, shard_dir, record = work / "jpeg", work / "shards", work / "settings.json"
    if record.is_file() and json.loads(record.read_text()) == settings and (shard_dir / "index.json").is_file():
        print(f"reusing the data in {work}", flush=True)
        return jpegs, shard_dir
    for folder in (work / "synth", jpegs, shard_dir):
        shutil.rmtree(folder, ignore_errors=True)
    record.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnkit", "data", "synth", "objects", "--task", "classify", "--n", str(n),
                    "--imgsz", str(source_size), "--out", str(work / "synth")], check=True)
    to_jpeg(work / "synth", jpegs, quality)
    data = load_imagefolder(jpegs)
    # a shard's size as write_shards counts it: a 512-byte header and whole 512-byte blocks for each member (.jpg, .cls)
    need = sum(512 + -(-path.stat().st_size // 512) * 512 + 1024 for path, _ in data.splits["train"])
    index = write_shards(data, shard_dir, max(1024, math.ceil(need / shards)), source=str(jpegs), force=True)
    shutil.rmtree(work / "synth", ignore_errors=True)
    record.write_text(json.dumps(settings))
    train = index["splits"]["train"]
    print(f"built in {time.perf_counter() - start:.0f} s: {train['count']} training JPEGs "
          f"({train['bytes'] / 1e6:.1f} MB in {len(train['shards'])} train shards)", flush=True)
    return jpegs, shard_dir


def to_jpeg(source: Path, out: Path, quality: int) -> None:
    """Every image of the ImageFolder ``source`` as a JPEG of ``quality`` in the same place under ``out``."""
    from PIL import Image

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for path in sorted(source.rglob("*.png")):
        target = partial / path.relative_to(source).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").save(target, format="JPEG", quality=quality)
    os.replace(partial, out)


# ------------------------------------------------------------------------------------------------- the loaders

class DecodedDataset(Dataset):
    """(image tensor, label, index) like cnnkit's ImageDataset, decoded with OpenCV or torchvision's decode_jpeg.
    The bytes come from IN_MEMORY when a ShardStream put them there, else from the file."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable, decoder: str):
        self.samples, self.transform, self.decoder = samples, transform, decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label = self.samples[index]
        held = IN_MEMORY.get(str(path))
        if self.decoder == "opencv":
            import cv2

            data = held if held is not None else Path(path).read_bytes()
            image: Any = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{path}: OpenCV cannot decode it")
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            data = torch.frombuffer(bytearray(held), dtype=torch.uint8) if held is not None else read_file(str(path))
            image = decode_jpeg(data, mode=ImageReadMode.RGB)  # 3 x H x W uint8
        return self.transform(image), label, index


def make_dataset(source: str, decoder: str, jpegs: Path, shard_dir: Path, transform: Callable, seed: int) -> Dataset:
    """The training set of one row: a map-style dataset over the folder, or a ShardStream over the train shards."""
    def over(samples: list[tuple[Path, int]]) -> Dataset:
        return ImageDataset(samples, transform) if decoder == "pil" else DecodedDataset(samples, transform, decoder)

    if source == "folder":
        return over(load_imagefolder(jpegs).splits["train"])
    shard_set = open_shards(str(shard_dir))
    # the train split's samples under their in-memory names; val and test are not unpacked into the cache
    return stream_train_set(over(load_shards(shard_set, unpack=False).splits["train"]), shard_set, seed)


def batches_of(dataset: Dataset, args: argparse.Namespace) -> Iterator[Any]:
    """The engine's training loader over ``dataset``, epoch after epoch."""
    loader = make_loader(dataset, args.batch, args.workers, True, args.seed, collate_skipping_none)
    epoch = 0
    while True:
        if callable(getattr(loader.sampler, "set_epoch", None)):
            loader.sampler.set_epoch(epoch)
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def loader_rate(dataset: Dataset, args: argparse.Namespace) -> float:
    """Images per second out of the loader alone (best of --repeats)."""
    rates = []
    for _ in range(args.repeats):
        stream = batches_of(dataset, args)
        for _ in range(args.warmup):
            next(stream)
        images, start = 0, time.perf_counter()
        for _ in range(args.batches):
            batch = next(stream)
            images += 0 if batch is None else len(batch[0])
        rates.append(images / (time.perf_counter() - start))
        stream.close()
    return max(rates)


# ------------------------------------------------------------------------------------------------- training

class Trainer:
    """tiny_cnn with AdamW, one step per batch, as the engine trains it (no AMP, no channels_last: its defaults)."""

    def __init__(self, classes: int, seed: int):
        torch.manual_seed(seed)
        self.model = build_classifier(MODEL, classes).train()
        self.optimizer = build_optimizer(self.model, "adamw", 0.002, 0.9, 0.05)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = F.cross_entropy(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def training_rate(classes: int, args: argparse.Namespace) -> float:
    """Images per second of training steps on a batch held in memory (best of --repeats)."""
    trainer = Trainer(classes, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.imgsz, args.imgsz, generator=generator)
    labels = torch.randint(classes, (args.batch,), generator=generator)
    rates = []
    for _ in range(args.repeats):
        for _ in range(args.warmup):
            trainer.step(images, labels)
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.step(images, labels)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    return max(rates)


def fed_rate(dataset: Dataset, classes: int, args: argparse.Namespace) -> float:
    """Images per second of training steps on the batches of a running loader (best of --repeats)."""
    trainer = Trainer(classes, args.seed)
    rates = []
    for _ in range(args.repeats):
        stream = batches_of(dataset, args)
        for _ in range(args.warmup):
            batch = next(stream)
            if batch is not None:
                trainer.step(batch[0], batch[1])
        images, start = 0, time.perf_counter()
        for _ in range(args.steps):
            batch = next(stream)
            if batch is not None:
                trainer.step(batch[0], batch[1])
                images += len(batch[0])
        rates.append(images / (time.perf_counter() - start))
        stream.close()
    return max(rates)


# ------------------------------------------------------------------------------------------------- the run

def parse_rows(text: str) -> list[tuple[str, str]]:
    rows = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, _, decoder = item.partition("+")
        if source not in SOURCES or decoder not in DECODERS:
            raise SystemExit(f"{item}: not a row; write SOURCE+DECODER with SOURCE in {SOURCES} and DECODER in {DECODERS}")
        rows.append((source, decoder))
    return rows


def append(path: Path | None, row: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnkit_loading",
                        help="where the data is built (once) and kept")
    parser.add_argument("--n", type=int, default=500, help="training images a class (6 classes)")
    parser.add_argument("--source-size", type=int, default=160, help="side of the stored JPEGs in pixels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--shards", type=int, default=12, help="about this many train shards")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--augment", default="light", choices=("none", "light", "medium", "heavy"),
                        help="augmentation preset of the loaders (training's default: light)")
    parser.add_argument("--warmup", type=int, default=5, help="batches (or steps) dropped before timing")
    parser.add_argument("--batches", type=int, default=30, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed (alone, and fed by each --fed loader)")
    parser.add_argument("--repeats", type=int, default=2, help="the best of this many timings counts")
    parser.add_argument("--rows", default=",".join(f"{s}+{d}" for s in SOURCES for d in DECODERS),
                        help="loaders to time, SOURCE+DECODER comma-separated")
    parser.add_argument("--fed", default="folder+pil,shards+pil",
                        help="loaders to time feeding training steps (SOURCE+DECODER, comma-separated; empty: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=None, help="also append every figure to this JSON-lines file")
    args = parser.parse_args()

    jpegs, shard_dir = build_data(args.work, args.n, args.source_size, args.quality, args.shards)
    index = json.loads((shard_dir / "index.json").read_text())
    classes, train = len(index["classes"]), index["splits"]["train"]
    transform = classify_transforms(args.imgsz, True, augment_spec(args.augment))
    threads = torch.get_num_threads()
    base = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch_threads": threads, "workers": args.workers,
            "batch": args.batch, "imgsz": args.imgsz, "source_size": args.source_size, "augment": args.augment,
            "images": train["count"], "train_shards": len(train["shards"])}
    print(f"{train['count']} training JPEGs of {args.source_size} px (quality {args.quality}), {len(train['shards'])} train "
          f"shards; loaders: {args.workers} workers, batch {args.batch}, {args.imgsz} px, augment {args.augment}; "
          f"{os.cpu_count()} CPUs, torch threads {threads} in the main process", flush=True)
    per_epoch = train["count"] // args.batch
    if args.warmup + max(args.batches, args.steps) > per_epoch:
        print(f"note: {per_epoch} batches an epoch: a timing that runs past it includes the next epoch's start "
              "(new loader workers, a refilled shuffle buffer)", flush=True)

    training = training_rate(classes, args)
    append(args.results, {**base, "kind": "training", "model": MODEL, "images_per_s": training})
    print(f"training {MODEL} alone: {training:.1f} img/s", flush=True)

    loaders: dict[tuple[str, str], float] = {}
    for source, decoder in parse_rows(args.rows):
        rate = loaders[source, decoder] = loader_rate(make_dataset(source, decoder, jpegs, shard_dir, transform, args.seed), args)
        append(args.results, {**base, "kind": "loader", "source": source, "decoder": decoder, "images_per_s": rate})
        print(f"loader {source} + {DECODER_NAMES[decoder]}: {rate:.1f} img/s", flush=True)

    fed: dict[tuple[str, str], float] = {}
    for source, decoder in parse_rows(args.fed):
        fed[source, decoder] = fed_rate(make_dataset(source, decoder, jpegs, shard_dir, transform, args.seed), classes, args)
        append(args.results, {**base, "kind": "fed", "model": MODEL, "source": source, "decoder": decoder,
                              "images_per_s": fed[source, decoder]})
        print(f"training fed by {source} + {DECODER_NAMES[decoder]}: {fed[source, decoder]:.1f} img/s", flush=True)

    print(f"\n{'source':8s} {'decoder':14s} {'img/s':>9s} {'loader/training':>16s}  bottleneck?")
    for (source, decoder), rate in loaders.items():
        ratio = rate / training
        print(f"{source:8s} {DECODER_NAMES[decoder]:14s} {rate:9.1f} {ratio:15.2f}x  {'YES' if ratio < 1 else 'no'}")
    print(f"{'training':8s} {MODEL:14s} {training:9.1f} {1:15.2f}x  (alone: {threads} torch threads, no loader)")
    if ("folder", "pil") in loaders and ("shards", "pil") in loaders:
        print(f"\nshards/folder with PIL: {loaders['shards', 'pil'] / loaders['folder', 'pil']:.2f}x")
    for decoder in DECODERS[1:]:
        for source in SOURCES:
            if (source, decoder) in loaders and (source, "pil") in loaders:
                print(f"{source}: {DECODER_NAMES[decoder]}/PIL {loaders[source, decoder] / loaders[source, 'pil']:.2f}x")
    slow = [f"{s} + {DECODER_NAMES[d]}" for (s, d), rate in loaders.items() if rate < training]
    for path in (("folder", "pil"), ("shards", "pil")):
        if path in loaders:
            ratio = loaders[path] / training
            print(f"target: {path[0]} + PIL (what training runs) >= training: {ratio:.2f}x {'PASS' if ratio >= 1 else 'FAIL'}")
    print("the loader would be the bottleneck (ratio < 1) for: " + (", ".join(slow) if slow else "none of the loaders"))
    if fed:
        print(f"\n{'training fed by':23s} {'img/s':>9s} {'of training alone':>18s} {'of the loader alone':>20s}")
        for (source, decoder), rate in fed.items():
            alone = loaders.get((source, decoder))
            print(f"{source + ' + ' + DECODER_NAMES[decoder]:23s} {rate:9.1f} {rate / training:17.2f}x "
                  + (f"{rate / alone:19.2f}x" if alone else f"{'-':>20s}"))
    print(f"\nnote: {os.cpu_count()} CPUs. The loader rows had every core to themselves (the main process only waited) and "
          f"training alone had its {threads} torch threads to itself; in a real run the {args.workers} workers and the "
          "training process compete for the same cores, so loader/training is an upper bound and the fed rows are "
          "what training actually gets.")


if __name__ == "__main__":
    main()
