"""`cnnkit track` and `cnnkit track val` on the generated MOT benchmark with its public detections: the
files of DESIGN's track contract, TrackEval's figures, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from cnnkit.data.mot import find_sequences, read_mot_file
from cnnkit.data.synth_mot import synth_mot
from conftest import run_cli


@pytest.fixture(scope="module")
def mot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mot") / "synth"
    synth_mot(root, n_sequences=2, frames=40, width=320, height=192, seed=3, progress=False)
    return root


def test_track_writes_mot_rows_and_a_video(mot_root, tmp_path):
    seq = find_sequences(mot_root, split="test")[0]
    code, out, err = run_cli(["track", str(seq.root), "--public", "--tracker", "bytetrack", "--out", str(tmp_path / "out")])
    assert code == 0, err
    rows = read_mot_file(tmp_path / "out" / f"{seq.name}.txt", "result")
    assert len(rows) > 0 and rows[:, 0].min() >= 1 and rows[:, 0].max() <= seq.length
    # every id is on one object at a time: no frame reports an id twice
    pairs = {(int(f), int(i)) for f, i in rows[:, :2]}
    assert len(pairs) == len(rows)
    video = cv2.VideoCapture(str(tmp_path / "out" / f"{seq.name}.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == seq.length
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (seq.width, seq.height)
    video.release()
    # one detections file for the one sequence gives the same rows as --public
    code, _, err = run_cli(["track", str(seq.root), "--detections", str(seq.root / "det" / "det.txt"), "--tracker", "bytetrack",
                            "--no-video", "--out", str(tmp_path / "given")])
    assert code == 0, err
    assert np.array_equal(read_mot_file(tmp_path / "given" / f"{seq.name}.txt", "result"), rows)
    assert not (tmp_path / "given" / f"{seq.name}.mp4").exists()
    # the camera pans: with its motion compensated (sparse optical flow) the same detections are tracked
    code, _, err = run_cli(["track", str(seq.root), "--public", "--tracker", "sort", "--cmc", "sparse", "--no-video",
                            "--out", str(tmp_path / "cmc")])
    assert code == 0, err
    assert len(read_mot_file(tmp_path / "cmc" / f"{seq.name}.txt", "result")) > 0


def test_track_val_scores_every_tracker_with_trackeval(mot_root, tmp_path):
    code, out, err = run_cli(["track", "val", "--data", str(mot_root), "--public", "--tracker", "sort,bytetrack",
                              "--out", str(tmp_path / "val")])
    assert code == 0, err
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert set(metrics["trackers"]) == {"sort", "bytetrack"}
    for name, scores in metrics["trackers"].items():
        assert {"hota", "mota", "idf1", "id_switches", "per_sequence"} <= set(scores)
        # noisy public detections (recall about 0.75, false positives): far from perfect, far from nothing
        assert 0.3 < scores["hota"] < 0.95 and 0.3 < scores["idf1"] <= 1.0, (name, scores)
        assert set(scores["per_sequence"]) == {s.name for s in find_sequences(mot_root, split="test")}
    assert metrics["hota"] == max(s["hota"] for s in metrics["trackers"].values())
    assert (tmp_path / "val" / "report.html").is_file() and (tmp_path / "val" / "plots" / "trackers.png").is_file()


def _one_line_error(args, *needles):
    code, _, err = run_cli(args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line(mot_root, tmp_path):
    seq = find_sequences(mot_root, split="test")[0]
    _one_line_error(["track", str(seq.root), "--tracker", "deepsort", "--public", "--out", str(tmp_path / "a")], "--reid")
    _one_line_error(["track", str(seq.root), "--out", str(tmp_path / "b")], "--weights DETECTOR")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(["track", str(empty), "--public", "--out", str(tmp_path / "c")], "empty")
    # a detections file of a longer sequence
    late = tmp_path / "late.txt"
    late.write_text(f"{seq.length + 5},-1,10,10,20,20,0.9,-1,-1,-1\n")
    _one_line_error(["track", str(seq.root), "--detections", str(late), "--out", str(tmp_path / "d")], "late.txt", "line 1")
    bad = tmp_path / "bad.txt"
    bad.write_text("1,-1,10,10,20,20,0.9,-1,-1,-1\n2,-1,ten,10,20,20,0.9,-1,-1,-1\n")
    _one_line_error(["track", str(seq.root), "--detections", str(bad), "--out", str(tmp_path / "e")], "bad.txt", "line 2")
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(b"not a video" * 100)
    _one_line_error(["track", str(garbage), "--detections", str(late), "--out", str(tmp_path / "f")], "clip.mp4")
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())  # nothing half-written
    broken = tmp_path / "broken"
    shutil.copytree(mot_root / "test", broken)
    (broken / seq.name / "gt" / "gt.txt").write_text("1,1,10,10,-5,20,1,1,1\n")
    _one_line_error(["track", "val", "--data", str(broken), "--public", "--out", str(tmp_path / "g")], "gt.txt", "line 1")


@pytest.mark.slow
def test_single_object_commands(tmp_path):
    """`track sot train` (one short epoch, for real), `track sot SOURCE --init`, `track sot val`, and a box
    outside the frame as one line."""
    code, _, err = run_cli(["data", "synth", "sot", "--n", "4", "--frames", "20", "--imgsz", "320", "--out", str(tmp_path / "sot")])
    assert code == 0, err
    code, _, err = run_cli(["track", "sot", "train", "--data", str(tmp_path / "sot"), "--epochs", "1", "--pairs", "64",
                            "--val-pairs", "16", "--batch", "16", "--workers", "0", "--out", str(tmp_path / "run")])
    assert code == 0, err
    weights = tmp_path / "run" / "weights" / "best.safetensors"
    seq = find_sequences(tmp_path / "sot", split="test")[0]
    first = read_mot_file(seq.root / "gt" / "gt.txt", "gt")[0]
    box = ",".join(str(int(v)) for v in first[2:6])
    code, _, err = run_cli(["track", "sot", str(seq.root), "--weights", str(weights), "--init", box, "--no-video",
                            "--out", str(tmp_path / "out")])
    assert code == 0, err
    rows = read_mot_file(tmp_path / "out" / f"{seq.name}.txt", "result")
    assert len(rows) == seq.length and set(rows[:, 1]) == {1}
    code, _, err = run_cli(["track", "sot", "val", "--weights", str(weights), "--data", str(tmp_path / "sot"), "--out",
                            str(tmp_path / "val")])
    assert code == 0, err
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert 0.0 <= metrics["success_auc"] <= 1.0 and 0.0 <= metrics["precision_20px"] <= 1.0 and metrics["fps"] > 0
    _one_line_error(["track", "sot", str(seq.root), "--weights", str(weights), "--init", "5000,5000,20,20",
                     "--out", str(tmp_path / "bad")], "--init")
