"""`cnnkit data convert MOT --to coco|identities`: COCO detection data that pycocotools and cnnkit's detection
reader take as they are, whole sequences per split; crops per identity split in time between train and val;
one-line errors for sources without ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.convert_mot import clipped_boxes, mot_to_coco, mot_to_identities
from cnnkit.data.mot import find_sequences, read_mot_file
from cnnkit.data.synth_mot import synth_mot
from cnnkit.errors import CnnkitError
from conftest import run_cli

FRAMES = 30


@pytest.fixture(scope="module")
def mot_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convert_mot") / "mot"
    synth_mot(root, n_sequences=2, frames=FRAMES, width=320, height=192, seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def gts(mot_root) -> dict[str, tuple[str, np.ndarray]]:
    """sequence name -> (its split folder, gt rows)."""
    return {s.name: (s.root.parent.name, read_mot_file(s.gt, "gt")) for s in find_sequences(mot_root)}


def _load(out: Path, split: str) -> dict:
    return json.loads((out / "annotations" / f"{split}.json").read_text())


# ------------------------------------------------------------------------------------------------ coco

def test_coco_splits_whole_sequences_and_reads_everywhere(mot_root, gts, tmp_path):
    from pycocotools.coco import COCO

    from cnnkit.data.check_detection import check_detection
    from cnnkit.data.detection import load_detection

    out = tmp_path / "coco"
    summary = mot_to_coco(mot_root, out, min_visibility=0.5, progress=False)
    by_split = {"train": "train", "test": "val"}
    for name, (folder, rows) in gts.items():
        split = by_split[folder]
        assert summary["splits"][split] == [name]
        coco = COCO(str(out / "annotations" / f"{split}.json"))
        assert len(coco.getImgIds()) == FRAMES == summary["images"][split]
        expected = int((rows[:, 8] >= 0.5).sum())  # synth boxes lie inside the frame already
        assert len(coco.getAnnIds()) == expected == summary["boxes"][split]
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["object"]
        # one image: its file is the frame (hard-linked), its boxes the gt rows of that frame
        image = coco.loadImgs([i for i in coco.getImgIds() if coco.imgs[i]["frame"] == 7])[0]
        assert image["file_name"] == f"{split}/{name}_000007.jpg" and image["sequence"] == name
        source = mot_root / folder / name / "img1" / "000007.jpg"
        assert (out / "images" / image["file_name"]).samefile(source)
        want = rows[(rows[:, 0] == 7) & (rows[:, 8] >= 0.5)]
        got = sorted((a["track_id"], *a["bbox"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])))
        assert np.allclose(got, sorted(map(tuple, want[:, [1, 2, 3, 4, 5]])))
    ids = [i["id"] for split in ("train", "val") for i in _load(out, split)["images"]]
    assert sorted(ids) == list(range(1, 2 * FRAMES + 1))  # unique across the splits
    data = load_detection(out)  # what `detect train --data OUT` reads
    assert {split: len(images) for split, images in data.splits.items()} == {"train": FRAMES, "val": FRAMES}
    assert data.categories == [(1, "object")] and data.num_boxes() == sum(summary["boxes"].values())
    assert not check_detection(out, "coco").has_errors()
    assert not [p for p in tmp_path.iterdir() if p.name != "coco"]  # the temporary build folder is gone


def test_every_keeps_a_third_and_copy_copies(mot_root, tmp_path):
    summary = mot_to_coco(mot_root, tmp_path / "coco", every=3, copy=True, progress=False)
    assert summary["images"] == {"train": FRAMES // 3, "val": FRAMES // 3}
    doc = _load(tmp_path / "coco", "train")
    assert [i["frame"] for i in doc["images"]] == list(range(1, FRAMES + 1, 3))
    frame = tmp_path / "coco" / "images" / doc["images"][0]["file_name"]
    assert frame.stat().st_nlink == 1  # a copy, not a link


def test_a_folder_of_sequences_holds_out_the_last_and_one_sequence_is_cut_in_time(mot_root, tmp_path, capsys):
    flat = tmp_path / "flat"
    for seq in find_sequences(mot_root):
        shutil.copytree(seq.root, flat / seq.name)
    # MOT17 ships each video three times with other public detections: the same gt.txt is converted once
    shutil.copytree(flat / "SYNTH-01", flat / "SYNTH-01-COPY")
    (flat / "SYNTH-01-COPY" / "seqinfo.ini").write_text((flat / "SYNTH-01" / "seqinfo.ini").read_text()
                                                        .replace("name=SYNTH-01", "name=SYNTH-01-COPY"))
    summary = mot_to_coco(flat, tmp_path / "coco", progress=False)
    assert summary["splits"] == {"train": ["SYNTH-01"], "val": ["SYNTH-02"]}
    assert "SYNTH-01-COPY" in capsys.readouterr().err
    summary = mot_to_coco(flat, tmp_path / "mapped", split_map={"SYNTH-01": "val", "SYNTH-02": "train"}, progress=False)
    assert summary["splits"] == {"train": ["SYNTH-02"], "val": ["SYNTH-01"]}

    summary = mot_to_coco(flat / "SYNTH-02", tmp_path / "one", progress=False)
    assert summary["images"] == {"train": 24, "val": 6}
    assert [i["frame"] for i in _load(tmp_path / "one", "val")["images"]] == list(range(25, 31))


def test_classes_visibility_and_clipping_of_a_handmade_gt(mot_root, tmp_path):
    seq = find_sequences(mot_root, split="train")[0]
    root = tmp_path / "seq"
    shutil.copytree(seq.root, root)
    (root / "gt" / "gt.txt").write_text(
        "1,1,10,20,30,40,1,1,1.0\n"
        "1,2,300,100,50,50,1,3,0.9\n"      # a car, half outside on the right: clipped to 20 px wide
        "1,3,10,20,30,40,0,1,1.0\n"        # not to be considered
        "2,1,12,20,30,40,1,1,-1\n"         # visibility unknown: kept
        "2,4,400,10,20,20,1,1,1.0\n")      # wholly outside: dropped
    summary = mot_to_coco(root, tmp_path / "coco", split_map={seq.name: "train"}, progress=False)
    doc = _load(tmp_path / "coco", "train")
    assert summary["classes"] == ["pedestrian", "car"] and not (tmp_path / "coco" / "annotations" / "val.json").exists()
    assert [(a["track_id"], a["category_id"], a["bbox"]) for a in doc["annotations"]] == \
           [(1, 1, [10, 20, 30, 40]), (2, 3, [300, 100, 20, 50]), (1, 1, [12, 20, 30, 40])]
    assert np.allclose(clipped_boxes(np.array([[1, 1, -5, 180, 20, 30]], float), 320, 192), [[0, 180, 15, 192]])


def test_bad_sources_are_one_line_errors(mot_root, tmp_path):
    with pytest.raises(CnnkitError, match="not empty"):
        out = tmp_path / "taken"
        (out / "file").parent.mkdir()
        (out / "file").write_text("x")
        mot_to_coco(mot_root, out, progress=False)
    mot_to_coco(mot_root, out, every=10, force=True, progress=False)
    assert not (out / "file").exists()
    seq = find_sequences(mot_root, split="train")[0]
    broken = tmp_path / "broken"
    shutil.copytree(seq.root, broken)
    (broken / "gt" / "gt.txt").write_text("1,1,10,20,30,40,1,1,1\n2,1,ten,20,30,40,1,1,1\n")
    with pytest.raises(CnnkitError, match=r"broken/gt/gt.txt line 2"):
        mot_to_identities(broken, tmp_path / "ids", progress=False)
    with pytest.raises(CnnkitError, match="--every 0"):
        mot_to_coco(mot_root, tmp_path / "new", every=0, progress=False)


# ------------------------------------------------------------------------------------------ identities

def test_identities_are_split_in_time_between_train_and_val(mot_root, gts, tmp_path):
    from cnnkit.data.imagefolder import load_imagefolder

    out = tmp_path / "ids"
    summary = mot_to_identities(mot_root, out, per_id=12, progress=False)
    train = {p.name: sorted(p.iterdir()) for p in (out / "train").iterdir()}
    val = {p.name: sorted(p.iterdir()) for p in (out / "val").iterdir()}
    assert summary["identities"] == {"train": len(train), "val": len(val)} and len(train) >= 20
    assert summary["crops"] == {"train": sum(map(len, train.values())), "val": sum(map(len, val.values()))}
    assert val and summary["dropped"] >= 0
    assert set(val) <= set(train)  # every val identity is learnt in train (cnnkit's ImageFolder needs that)
    expected_ids = set()
    for name, (_, rows) in gts.items():
        for track_id in np.unique(rows[:, 1]).astype(int):
            mine = rows[rows[:, 1] == track_id]
            boxes = np.rint(clipped_boxes(mine, 320, 192))
            usable = (mine[:, 8] >= 0.5) & (boxes[:, 2] - boxes[:, 0] >= 8) & (boxes[:, 3] - boxes[:, 1] >= 8)
            if usable.sum() >= 2:
                expected_ids.add(f"{name}_{track_id}")
    assert set(train) == expected_ids
    for identity, files in train.items():
        crops = files + val.get(identity, [])
        assert 2 <= len(crops) <= 12  # per_id
        if identity in val:
            assert len(val[identity]) >= 2  # a val query always has a positive
            frames = sorted(int(f.stem.rsplit("_", 1)[1]) for f in val[identity])
            order = sorted(int(f.stem.rsplit("_", 1)[1]) for f in crops)
            first = order.index(frames[0])
            assert order[first:first + len(frames)] == frames  # one run in time
        name, track_id = identity.rsplit("_", 1)
        rows = gts[name][1]
        for crop in crops:  # the crop is the gt box, clipped, at its native size
            frame = int(crop.stem.rsplit("_", 1)[1])
            row = rows[(rows[:, 0] == frame) & (rows[:, 1] == int(track_id))]
            x1, y1, x2, y2 = clipped_boxes(row, 320, 192)[0]
            with Image.open(crop) as image:
                assert abs(image.width - (x2 - x1)) <= 1 and abs(image.height - (y2 - y1)) <= 1
    data = load_imagefolder(out)
    assert data.classes == sorted(train) and not data.val_from_train


def test_cli_converts_identities_and_names_a_folder_without_gt(mot_root, tmp_path):
    code, _, err = run_cli(["data", "convert", mot_root, "--to", "identities", "--out", tmp_path / "ids"])
    assert code == 0, err
    assert "mot -> identities:" in err and (tmp_path / "ids" / "train").is_dir()
    code, _, err = run_cli(["data", "convert", mot_root, "--to", "coco", "--every", "5", "--min-visibility", "0.3",
                            "--out", tmp_path / "coco"])
    assert code == 0, err
    assert "mot -> coco: 6 train + 6 val images" in err
    bare = tmp_path / "frames"
    shutil.copytree(find_sequences(mot_root, split="train")[0].root / "img1", bare / "SEQ" / "img1")
    for target in ("identities", "coco"):
        code, _, err = run_cli(["data", "convert", bare, "--to", target, "--out", tmp_path / "never"])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and str(bare) in lines[0] and "gt/gt.txt" in lines[0], err
    assert not (tmp_path / "never").exists()
