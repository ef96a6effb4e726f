"""`cnnkit data synth mot`: MOTChallenge layout, determinism, and the things that make trackers differ: ids
entering and leaving, occlusion and recovery, a panning camera, missed, jittered and false detections whose
scores follow visibility."""

import hashlib

import cv2
import numpy as np
import pytest

from cnnkit.data.mot import detections_by_frame, find_sequences, read_mot_file, read_seqinfo
from cnnkit.data.synth_mot import synth_mot
from cnnkit.errors import CnnkitError
from conftest import run_cli

W, H, FRAMES = 320, 192, 40


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_mot") / "mot"
    summary = synth_mot(root, n_sequences=2, frames=FRAMES, width=W, height=H, seed=0, progress=False)
    sequences = find_sequences(root)
    gts = {s.name: read_mot_file(s.gt, "gt", length=s.length) for s in sequences}
    dets = {s.name: read_mot_file(s.det, "det", length=s.length) for s in sequences}
    return root, summary, sequences, gts, dets


def test_layout_and_seqinfo(small):
    root, summary, sequences, gts, _ = small
    assert summary["sequences"] == {"train": 1, "test": 1}
    assert [p.name for p in sorted(root.iterdir())] == ["test", "train"]
    assert sorted(s.name for s in sequences) == ["SYNTH-01", "SYNTH-02"]
    for seq in sequences:
        assert seq.root.parent.name in ("train", "test") and seq.root.name == seq.name
        info = read_seqinfo(seq.root)
        assert (info.name, info.frame_rate, info.seq_length, info.width, info.height, info.im_dir, info.im_ext) == \
               (seq.name, 30.0, FRAMES, W, H, "img1", ".jpg")
        assert [p.name for p in seq.frames] == [f"{i:06d}.jpg" for i in range(1, FRAMES + 1)]
        image = cv2.imread(str(seq.frames[0]))
        assert image.shape == (H, W, 3)
        assert seq.gt.is_file() and seq.det.is_file()
    assert summary["frames"] == 2 * FRAMES
    assert summary["boxes"] == sum(len(g) for g in gts.values())
    assert summary["ids"] == sum(len(np.unique(g[:, 1])) for g in gts.values())
    assert 0 < summary["detection_recall"] < 1 and summary["false_positives_per_frame"] > 0
    assert 0.3 < summary["mean_visibility"] < 0.95
    assert not [p for p in root.parent.iterdir() if p.name != "mot"]  # the temporary build folder is gone


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    root = small[0]
    synth_mot(tmp_path / "again", n_sequences=2, frames=FRAMES, width=W, height=H, seed=0, progress=False)
    assert _hashes(tmp_path / "again") == _hashes(root)
    synth_mot(tmp_path / "other", n_sequences=2, frames=FRAMES, width=W, height=H, seed=1, progress=False)
    other = _hashes(tmp_path / "other")
    assert other.keys() == _hashes(root).keys() and other != _hashes(root)
    with pytest.raises(CnnkitError, match="not empty"):
        synth_mot(tmp_path / "other", n_sequences=1, frames=3, width=W, height=H, progress=False)
    synth_mot(tmp_path / "other", n_sequences=1, frames=3, width=W, height=H, force=True, progress=False)
    assert len(list((tmp_path / "other" / "train" / "SYNTH-01" / "img1").iterdir())) == 3


def test_gt_boxes_ids_and_visibility(small):
    _, _, sequences, gts, _ = small
    entered = left = 0
    for seq in sequences:
        gt = gts[seq.name]
        frame, ids, x, y, w, h, conf, cls, vis = gt[:, :9].T
        assert (w >= 1).all() and (h >= 1).all() and (x >= 0).all() and (y >= 0).all()
        assert (x + w <= W).all() and (y + h <= H).all()
        assert (conf == 1).all() and (cls == 1).all()
        assert ((vis >= 0) & (vis <= 1)).all()
        assert (np.diff(frame) >= 0).all()  # sorted by frame
        assert len(np.unique(gt[:, :2], axis=0)) == len(gt)  # one box per id and frame
        per_frame = np.bincount(frame.astype(int))[1:]
        assert len(per_frame) == FRAMES and per_frame.min() >= 3
        for track_id in np.unique(ids):
            frames = frame[ids == track_id]
            assert (np.diff(frames) == 1).all()  # an id is in view for one unbroken stretch
            entered += frames[0] > 1
            left += frames[-1] < FRAMES
    assert entered >= 2 and left >= 2


def test_objects_are_hidden_and_reappear(small):
    _, _, sequences, gts, _ = small
    recovered = 0
    for gt in gts.values():
        for track_id in np.unique(gt[:, 1]):
            vis = gt[gt[:, 1] == track_id, 8]
            low = np.flatnonzero(vis < 0.3)
            # seen well, then mostly hidden, then seen well again
            recovered += any((vis[:k] > 0.7).any() and (vis[k:] > 0.7).any() for k in low)
    assert recovered >= 1


def test_camera_pans(small):
    seq = small[2][0]
    first, later = (cv2.imread(str(seq.frames[k]), cv2.IMREAD_GRAYSCALE).astype(np.float32) for k in (0, 19))
    (dx, dy), _ = cv2.phaseCorrelate(first, later)
    assert np.hypot(dx, dy) > 1.5
    assert not np.array_equal(first, later)


def _iou(a, b):
    """[N, 4] x [M, 4] xyxy -> [N, M]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_detections_miss_jitter_and_score_by_visibility(small):
    _, _, sequences, gts, dets = small
    matched_vis, matched_score, unmatched = [], [], 0
    total_gt = 0
    for seq in sequences:
        det_rows = dets[seq.name]
        assert (np.diff(det_rows[:, 0]) >= 0).all() and (det_rows[:, 1] == -1).all()
        assert ((det_rows[:, 6] > 0) & (det_rows[:, 6] < 1)).all()
        gt_frames, det_frames = detections_by_frame(gts[seq.name]), detections_by_frame(det_rows)
        vis_by_frame = {f: gts[seq.name][gts[seq.name][:, 0] == f, 8] for f in gt_frames}
        for f, truth in gt_frames.items():
            total_gt += len(truth)
            found = det_frames.get(f, np.zeros((0, 6)))
            if not len(found):
                continue
            iou = _iou(found[:, :4], truth[:, :4])
            best = iou.argmax(axis=1)
            for k, j in enumerate(best):
                if iou[k, j] >= 0.5:
                    matched_vis.append(vis_by_frame[f][j])
                    matched_score.append(found[k, 4])
                else:
                    unmatched += 1
    matched_vis, matched_score = np.array(matched_vis), np.array(matched_score)
    assert 0.3 < len(matched_vis) / total_gt < 0.98  # some objects missed
    assert unmatched > 0  # false positives
    low, clear = matched_score[matched_vis < 0.5], matched_score[matched_vis > 0.9]
    assert len(low) and len(clear)
    assert low.mean() + 0.2 < clear.mean()


def test_cli(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mot"
    code, _, err = run_cli(["data", "synth", "mot", "--out", out, "--n", "3", "--frames", "6", "--imgsz", "160",
                            "--seed", "2"], monkeypatch, capsys)
    assert code == 0, err
    assert "2 train + 1 test sequences of 6 frames (160x90)" in err and str(out) in err
    sequences = find_sequences(out)
    assert len(sequences) == 3 and all(s.length == 6 and (s.width, s.height) == (160, 90) for s in sequences)
    code, _, err = run_cli(["data", "synth", "mot", "--out", out, "--n", "1"], monkeypatch, capsys)
    assert code == 2 and "not empty" in err
    code, _, err = run_cli(["data", "synth", "mot", "--out", tmp_path / "x", "--frames", "1"], monkeypatch, capsys)
    assert code == 2 and "--frames 1" in err
