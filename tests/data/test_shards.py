"""`cnnkit data shard` and training from WebDataset shards: the index and the tar members, how a stream deals
samples to ranks and loader workers, every task training from shards, and one-line errors for bad shards."""

from __future__ import annotations

import csv
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cnnkit.data.segmentation import load_segmentation, read_mask
from cnnkit.data.shards import ShardStream, open_shards
from cnnkit.errors import CnnkitError
from tests.conftest import run_cli, run_cnnkit


def _keys(tar: Path) -> list[str]:
    with tarfile.open(tar) as archive:
        return archive.getnames()


def test_shards_hold_every_sample_once_with_its_label(digits_root, tmp_path):
    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "s", "--shard-size", "400kB"])
    assert code == 0, err
    index = json.loads((tmp_path / "s/index.json").read_text())
    assert index["format"] == "cnnkit-shards" and index["task"] == "classify" and len(index["classes"]) == 10
    files = {split: sorted((digits_root / split).rglob("*.png")) for split in ("train", "val", "test")}
    for split, entry in index["splits"].items():
        assert entry["count"] == len(files[split]) == sum(entry["samples_per_shard"])
        assert len(entry["shards"]) >= (2 if split == "train" else 1)
        for name in entry["shards"]:
            # whole 512-byte tar blocks: the size limit holds up to one sample's worth
            assert (tmp_path / "s" / name).stat().st_size <= 400_000 + 10_240 + 4096
        members = [m for name in entry["shards"] for m in _keys(tmp_path / "s" / name)]
        assert len(members) == 2 * entry["count"]  # NAME.png and NAME.cls
        rows = json.loads((tmp_path / "s" / entry["annotations"]).read_text())["samples"]
        labels = sorted(index["classes"].index(p.parent.name) for p in files[split])
        assert sorted(r["label"] for r in rows) == labels
        assert entry["class_counts"] == [labels.count(k) for k in range(10)]
    # the bytes are the source files' own: the first train sample is one of the digit PNGs, unchanged
    with tarfile.open(tmp_path / "s" / index["splits"]["train"]["shards"][0]) as archive:
        first = archive.extractfile(archive.getmember("000000000.png")).read()
        label = int(archive.extractfile(archive.getmember("000000000.cls")).read())
    assert any(p.read_bytes() == first for p in (digits_root / "train" / index["classes"][label]).glob("*.png"))


class _Keys(torch.utils.data.Dataset):
    """The position the stream asks for: which samples each rank reads."""

    def __len__(self):
        return 10**6

    def __getitem__(self, index):
        return index


def _write_tars(folder: Path, shards: int, per_shard: int) -> list[str]:
    import webdataset as wds

    urls, position = [], 0
    for s in range(shards):
        url = folder / f"train-{s:06d}.tar"
        with wds.TarWriter(str(url), encoder=False) as writer:
            for _ in range(per_shard):
                writer.write({"__key__": f"{position:09d}", "png": b"x"})
                position += 1
        urls.append(str(url))
    return urls


def _epoch(stream: ShardStream, rank: int, world: int, workers: int, batch: int, epoch: int) -> list[list[int]]:
    stream.plan(batch, rank, world, workers)
    stream.set_epoch(epoch)
    loader = DataLoader(stream, batch_size=batch, num_workers=workers)
    batches = [b.tolist() for b in loader]
    assert len(batches) == len(loader) == stream.batches
    return batches


@pytest.mark.parametrize("shards", [8, 3])  # as many as rank x worker readers; fewer (each keeps every n-th sample)
def test_stream_deals_every_sample_to_one_rank_and_worker(tmp_path, shards):
    count = 240
    urls = _write_tars(tmp_path, shards, count // shards)
    seen = []
    for rank in range(2):
        stream = ShardStream(_Keys(), urls, count, seed=3, buffer=16)
        batches = _epoch(stream, rank, 2, 2, 10, epoch=0)
        assert len(batches) == 12 and all(len(b) == 10 for b in batches)  # 120 a rank, all batches full
        seen += [k for b in batches for k in b]
        again = _epoch(ShardStream(_Keys(), urls, count, seed=3, buffer=16), rank, 2, 2, 10, epoch=0)
        assert again == batches  # the order is a function of (seed, epoch, rank, worker): --resume replays it
        other = _epoch(ShardStream(_Keys(), urls, count, seed=3, buffer=16), rank, 2, 2, 10, epoch=1)
        assert other != batches
    assert sorted(seen) == list(range(count))  # each sample once over both ranks and their workers


def test_classifier_trains_from_shards_as_from_the_folder(digits_root, tmp_path):
    """Digits as shards, trained streaming with two loader workers: it learns as from the folder; a pattern of some
    train shards (as a URL) streams only those; val and test come from their own shards."""
    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "s", "--shard-size", "300kB"])
    assert code == 0, err
    args = ["classify", "train", "--model", "tiny_cnn", "--epochs", "3", "--imgsz", "16", "--batch", "64", "--lr", "0.003",
            "--fliplr", "0", "--workers", "2"]
    done = run_cnnkit(*args, "--data", str(tmp_path / "s"), "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    log = " ".join(done.stdout.split() + done.stderr.split())
    index = json.loads((tmp_path / "s/index.json").read_text())
    assert f"streaming {len(index['splits']['train']['shards'])} train shards ({index['splits']['train']['count']} images)" in log
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["top1"] >= 0.85, metrics["top1"]
    assert metrics["test"]["top1"] >= 0.85  # the test split, unpacked from its shards
    # val on the shards scores the unpacked split; train is a stream only
    code, out, err = run_cli(["classify", "val", "--weights", tmp_path / "run/weights/best.safetensors", "--data", tmp_path / "s",
                              "--split", "test", "--out", tmp_path / "val"])
    assert code == 0, err
    assert json.loads((tmp_path / "val/metrics.json").read_text())["top1"] == pytest.approx(metrics["test"]["top1"], abs=1e-6)
    code, _, err = run_cli(["classify", "val", "--weights", tmp_path / "run/weights/best.safetensors", "--data", tmp_path / "s",
                            "--split", "train"])
    assert code == 2 and "no 'train' split" in err
    pattern = f"file://{tmp_path / 's'}/train-{{000000..000001}}.tar"
    done = run_cnnkit(*args[:5], "1", *args[6:], "--data", pattern, "--out", str(tmp_path / "part"))
    assert done.returncode == 0, done.stderr
    kept = sum(index["splits"]["train"]["samples_per_shard"][:2])
    assert f"streaming 2 train shards ({kept} images)" in " ".join(done.stdout.split() + done.stderr.split())


def test_bad_shards_are_one_line_errors(digits_root, tmp_path):
    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "s", "--shard-size", "1 lightyear"])
    assert code == 2 and "--shard-size 1 lightyear: not a size" in err
    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "s", "--shard-size", "2MB"])
    assert code == 0, err
    code, _, err = run_cli(["data", "shard", str(digits_root), "--out", tmp_path / "s"])
    assert code == 2 and "already holds shards" in err and "--force" in err
    code, _, err = run_cli(["data", "shard", tmp_path / "s", "--out", tmp_path / "again"])
    assert code == 2 and "already shards" in err
    code, _, err = run_cli(["detect", "train", "--data", tmp_path / "s", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "shards of a classify dataset" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["classify", "train", "--data", f"{tmp_path / 's'}/train-{{000000..000007}}.tar", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "not a train shard of" in err
    code, _, err = run_cli(["classify", "train", "--data", f"{tmp_path}/nothing/train-000000.tar", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "index.json: no such file" in err
    val = tmp_path / "s/val-000000.tar"
    good = val.read_bytes()
    import webdataset as wds

    with wds.TarWriter(str(val), encoder=False) as writer:  # a member name that would leave the cache folder
        writer.write({"__key__": "../../escape", "png": b"x"})
    code, _, err = run_cli(["classify", "train", "--data", tmp_path / "s", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "member '../../escape'.png is not a plain file name" in err, err
    assert not list(tmp_path.rglob("escape*")) and not list(Path(os.environ["CNNKIT_HOME"]).parent.rglob("escape*"))
    val.write_bytes(good[:1000])  # cut short, as by a failed copy
    code, _, err = run_cli(["classify", "train", "--data", tmp_path / "s", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and f"{val}: cannot read the shard: unexpected end of data" in err, err
    val.unlink()
    code, _, err = run_cli(["classify", "train", "--data", tmp_path / "s", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and f"{val}: no such shard" in err, err
    index = json.loads((tmp_path / "s/index.json").read_text())
    del index["splits"]["val"]["count"]
    (tmp_path / "s/index.json").write_text(json.dumps(index))
    code, _, err = run_cli(["classify", "train", "--data", tmp_path / "s", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "index.json: split 'val' has no count" in err, err
    (tmp_path / "s/index.json").write_text('{"format": "something-else"}')
    code, _, err = run_cli(["classify", "train", "--data", f"{tmp_path / 's'}/train-000000.tar", "--epochs", "1", "--out", tmp_path / "r"])
    assert code == 2 and "not a cnnkit shard index" in err
    with pytest.raises(CnnkitError, match="not a cnnkit shard index"):
        open_shards(str(tmp_path / "s"))


@pytest.mark.slow
def test_detector_and_segmenter_train_from_shards(tmp_path):
    """Small shapes datasets (COCO boxes; index masks) as shards: YOLO with mosaic (its partners come from the
    shuffle buffer) and a U-Net train streaming and are scored on their val shards."""
    for task in ("detect", "segment"):
        code, _, err = run_cli(["data", "synth", "shapes", "--task", task, "--n", "40", "--imgsz", "96", "--out", tmp_path / task])
        assert code == 0, err
        code, _, err = run_cli(["data", "shard", tmp_path / task, "--out", tmp_path / f"{task}_shards", "--shard-size", "200kB"])
        assert code == 0, err
        index = json.loads((tmp_path / f"{task}_shards/index.json").read_text())
        assert index["task"] == task and len(index["splits"]["train"]["shards"]) >= 2
    rows = json.loads((tmp_path / "detect_shards/train.json").read_text())["samples"]
    assert sum(len(r["boxes"]) for r in rows) > len(rows)  # the boxes travel with the images
    done = run_cnnkit("detect", "train", "--data", str(tmp_path / "detect_shards"), "--model", "yolo_n", "--epochs", "4",
                      "--imgsz", "96", "--batch", "8", "--workers", "2", "--mosaic", "1", "--out", str(tmp_path / "det"))
    assert done.returncode == 0, done.stderr
    assert "map50" in json.loads((tmp_path / "det/metrics.json").read_text())
    with tarfile.open(tmp_path / "segment_shards" / "train-000000.tar") as archive:  # the masks travel unchanged
        shard_mask = np.asarray(Image.open(archive.extractfile(archive.getmember("000000000.mask.png"))))
    source = load_segmentation(tmp_path / "segment", check=False).splits["train"][0]
    assert np.array_equal(shard_mask, read_mask(source))
    done = run_cnnkit("segment", "train", "--data", str(tmp_path / "segment_shards"), "--epochs", "2", "--imgsz", "96",
                      "--batch", "8", "--workers", "1", "--out", str(tmp_path / "seg"))
    assert done.returncode == 0, done.stderr
    for run in ("det", "seg"):  # both learn from what they stream (a few epochs of 32 images: only the first steps)
        with open(tmp_path / run / "history.csv") as file:
            losses = [float(row["train_loss"]) for row in csv.DictReader(file)]
        assert losses[-1] < 0.9 * losses[0], (run, losses)
    assert "miou" in json.loads((tmp_path / "seg/metrics.json").read_text())
