"""Single-object tracking: the OTB scores on hand-made boxes, the synthetic SOT sequences, the SiamFC network's
shapes, the tracking loop on frames whose true motion is known, a real training run through the runner, and
the initial box checked before anything runs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from cnnkit.data.mot import find_sequences, read_mot_file, read_seqinfo
from cnnkit.data.synth_sot import synth_sot
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.otb import SUCCESS_THRESHOLDS, centre_errors, otb_scores, overlaps, sequence_curves
from cnnkit.models.siamese import SiamFC, SiamSpec, build_siamfc, spec_of
from cnnkit.tasks.track.sot_task import PairSet, Track, label_map, peak_offsets
from cnnkit.track.sot import SiamTracker, check_box, crop_square

W, H, FRAMES = 192, 112, 24


# ------------------------------------------------------------------------------------------------ OTB

def _track(n=10):
    return np.tile([[10.0, 20.0, 40.0, 30.0]], (n, 1))


def test_a_perfect_track_scores_the_top_of_both_curves():
    gt = _track()
    scores = otb_scores({"a": (gt.copy(), gt)})
    # IoU 1 is above every threshold but the last (the toolkits' strict ">"): 20 of 21
    assert scores["success_auc"] == pytest.approx(20 / 21, abs=1e-4)
    assert scores["success_curve"][:20] == [1.0] * 20 and scores["success_curve"][20] == 0.0
    assert scores["precision_20px"] == 1.0 and scores["mean_iou"] == 1.0


def test_a_shifted_track_scores_what_its_overlap_and_distance_say():
    gt = _track()
    pred = gt + [10.0, 0.0, 0.0, 0.0]  # 10 px right of a 40x30 box: IoU 30*30 / (2*1200 - 900) = 0.6
    assert overlaps(pred, gt) == pytest.approx(np.full(10, 0.6))
    assert centre_errors(pred, gt) == pytest.approx(np.full(10, 10.0))
    success, precision = sequence_curves(pred, gt)
    assert success.tolist() == (SUCCESS_THRESHOLDS < 0.6 - 1e-9).astype(float).tolist()  # 0..0.55 pass: 12 of 21
    assert otb_scores({"a": (pred, gt)})["success_auc"] == pytest.approx(12 / 21, abs=1e-4)
    assert precision[9] == 0 and precision[10] == 1 and precision[20] == 1
    far = gt + [25.0, 0.0, 0.0, 0.0]  # centre 25 px away: over the 20 px of the headline
    assert otb_scores({"a": (far, gt)})["precision_20px"] == 0.0


def test_half_a_track_lost_and_the_mean_over_sequences():
    gt = _track()
    pred = gt.copy()
    pred[5:] = np.nan  # a lost tracker: the second half counts as misses
    scores = otb_scores({"half": (pred, gt), "whole": (gt.copy(), gt)})
    assert scores["per_sequence"]["half"]["success_auc"] == pytest.approx(0.5 * 20 / 21, abs=1e-4)
    assert scores["per_sequence"]["half"]["precision_20px"] == 0.5
    assert scores["success_auc"] == pytest.approx(0.75 * 20 / 21, abs=1e-4)  # the mean of the two sequences
    assert scores["precision_20px"] == 0.75
    gt_gap = gt.copy()
    gt_gap[5:] = [0, 0, 0, 0]  # frames without a ground-truth box are left out
    assert otb_scores({"a": (pred, gt_gap)})["precision_20px"] == 1.0


# ------------------------------------------------------------------------------------------ synth_sot

@pytest.fixture(scope="module")
def small_sot(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_sot") / "sot"
    summary = synth_sot(root, n_sequences=3, frames=FRAMES, width=W, height=H, seed=0, progress=False)
    return root, summary


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_sot_layout_one_id_and_scale_change(small_sot):
    root, summary = small_sot
    assert summary["sequences"] == {"train": 2, "test": 1}
    sequences = find_sequences(root)
    assert sorted(s.name for s in sequences) == ["SOT-01", "SOT-02", "SOT-03"]
    ratios = []
    for seq in sequences:
        info = read_seqinfo(seq.root)
        assert (info.seq_length, info.width, info.height) == (FRAMES, W, H) and seq.length == FRAMES
        gt = read_mot_file(seq.gt, "gt", length=seq.length)
        assert gt[:, 0].tolist() == list(range(1, FRAMES + 1))  # one box a frame
        assert (gt[:, 1] == 1).all() and (gt[:, 6] == 1).all()  # one id
        x, y, w, h = gt[:, 2:6].T
        assert (x >= 0).all() and (y >= 0).all() and (x + w <= W).all() and (y + h <= H).all() and (w >= 3).all()
        assert ((gt[:, 8] >= 0) & (gt[:, 8] <= 1)).all()
        ratios.append((w * h).max() / (w * h).min())
    assert max(ratios) > 1.3  # the target grows or shrinks
    assert not [p for p in root.parent.iterdir() if p.name != "sot"]  # the temporary build folder is gone


def test_synth_sot_is_deterministic(small_sot, tmp_path):
    root, _ = small_sot
    synth_sot(tmp_path / "again", n_sequences=3, frames=FRAMES, width=W, height=H, seed=0, progress=False)
    assert _hashes(tmp_path / "again") == _hashes(root)
    synth_sot(tmp_path / "other", n_sequences=3, frames=FRAMES, width=W, height=H, seed=1, progress=False)
    assert _hashes(tmp_path / "other") != _hashes(root)
    with pytest.raises(CnnkitError, match="not empty"):
        synth_sot(tmp_path / "other", n_sequences=1, frames=3, width=W, height=H, progress=False)


# ---------------------------------------------------------------------------------------------- model

@pytest.mark.parametrize("name, response", [("siamfc", 9), ("siamfc_alexnet", 17)])
def test_siamfc_shapes_and_exact_centre(name, response):
    net = build_siamfc(name).eval()
    spec = net.spec
    assert spec == spec_of(name) and net.response_size() == response
    z, x = torch.randn(2, 3, spec.exemplar, spec.exemplar), torch.randn(2, 3, spec.search, spec.search)
    out = net(z, x)
    assert out.shape == (2, 1, response, response)
    # one exemplar against three searches (tracking's scales) is the same as repeating it
    kernel = net.features(z[:1])
    assert torch.allclose(net.match(kernel, net.features(x[:1].repeat(3, 1, 1, 1))), out[:1].repeat(3, 1, 1, 1), atol=1e-5)
    out.sum().backward()
    assert net.adjust.weight.grad is not None
    if name == "siamfc":
        # no padding: the exemplar pasted at the search's centre matches the centre cell exactly
        search = torch.zeros(1, 3, spec.search, spec.search)
        lo = (spec.search - spec.exemplar) // 2
        search[..., lo:lo + spec.exemplar, lo:lo + spec.exemplar] = z[:1]
        with torch.no_grad():
            raw = net.correlate(net.features(z[:1]), net.features(search))[0, 0]
            assert raw[response // 2, response // 2].item() == pytest.approx((net.features(z[:1]) ** 2).sum().item(), rel=1e-4)


def test_unknown_model_is_one_line():
    with pytest.raises(CnnkitError, match="did you mean 'siamfc'"):
        build_siamfc("siamf")


# ----------------------------------------------------------------------------------------- tracking

def _identity_tracker() -> SiamTracker:
    """Raw pixels as features, stride 1: the correlation peaks exactly where the exemplar's texture is."""
    return SiamTracker(SiamFC(nn.Identity(), SiamSpec(31, 63, 1)), mean=(124 / 255,) * 3, std=(0.25,) * 3)


def test_the_loop_follows_known_shifts_and_a_growing_target():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)

    def frame(x, y, patch=texture):
        image = np.full((120, 160, 3), 124, np.uint8)
        image[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        return image

    tracker = _identity_tracker()
    tracker.init(frame(60, 50), (60, 50, 20, 16))
    x, y = 60, 50
    for dx, dy in [(5, -3), (-7, 2), (4, 6), (0, 0), (9, -8)]:
        x, y = x + dx, y + dy
        (bx, by, bw, bh), score = tracker.update(frame(x, y))
        assert abs(bx + bw / 2 - (x + 10)) <= 1.0 and abs(by + bh / 2 - (y + 8)) <= 1.0
        assert 0 < score <= 1


def test_crops_take_the_mean_colour_outside_and_are_centred():
    image = np.zeros((20, 30, 3), np.uint8)
    image[9:11, 14:16] = 255  # a 2x2 spot whose centre is (15, 10)
    crop = crop_square(image, (15.0, 10.0), 10.0, 10, (7, 7, 7))
    assert crop[4:6, 4:6].min() == 255 and crop.sum() == 4 * 3 * 255
    edge = crop_square(image, (0.0, 0.0), 10.0, 10, (7, 7, 7))
    assert (edge[:5, :5] == 7).all()  # outside the image: the fill


def test_an_initial_box_outside_the_frame_is_one_line():
    with pytest.raises(CnnkitError, match=r"lies outside the 160x120 frame") as info:
        check_box((500, 10, 20, 20), 160, 120, "--init")
    assert "\n" not in str(info.value) and "--init" in str(info.value)
    with pytest.raises(CnnkitError, match="no area"):
        check_box((10, 10, 0, 20), 160, 120)
    assert check_box((145, 105, 20, 20), 160, 120) == (145.0, 105.0, 20.0, 20.0)  # cut by the border: accepted


def test_track_refuses_an_init_box_outside_the_frame_before_writing(small_sot, tmp_path):
    from cnnkit.tasks.track.sot import SingleObjectTracker

    root, _ = small_sot
    sot = SingleObjectTracker("siamfc")
    sot.model = build_siamfc("siamfc")
    seq = find_sequences(root)[0]
    with pytest.raises(CnnkitError, match=r"--init 1000,10,20,20 lies outside the 192x112 frame"):
        sot.track([seq.root], init="1000,10,20,20", out=tmp_path / "out")
    with pytest.raises(CnnkitError, match="expected four numbers"):
        sot.track([seq.root], init="1,2,3", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ training

def test_label_map_and_peak_offsets():
    labels, weights = label_map(9, 8, (0.0, 0.0), 16.0)
    assert labels[4, 4] == 1 and labels.sum() == 13  # cells within 2 strides of the centre
    assert weights[labels > 0].sum() == pytest.approx(0.5) and weights[labels == 0].sum() == pytest.approx(0.5)
    moved, _ = label_map(9, 8, (16.0, -8.0), 8.0)
    assert moved[3, 6] == 1 and moved[4, 4] == 0
    logits = torch.full((1, 1, 9, 9), -5.0)
    logits[0, 0, 3, 6] = 5.0
    assert torch.allclose(peak_offsets(logits, 8), torch.tensor([[16.0, -8.0]]), atol=2.0)


def test_pairs_put_the_target_where_the_label_says(small_sot):
    root, _ = small_sot
    from cnnkit.tasks.track.sot_task import sequence_tracks

    tracks = [t for s in find_sequences(root) for t in sequence_tracks(s, min_visibility=0.0, min_size=3)]
    assert len(tracks) == 3 and all(isinstance(t, Track) for t in tracks)
    pairs = PairSet(tracks, spec_of("siamfc"), 9, count=6, seed=0, train=True)
    exemplar, search, labels, weights, offset = pairs[0]
    assert exemplar.shape == (3, 63, 63) and search.shape == (3, 127, 127) and labels.shape == weights.shape == (1, 9, 9)
    assert labels.sum() > 0 and offset.abs().max() <= pairs.max_shift
    again = PairSet(tracks, spec_of("siamfc"), 9, count=6, seed=0, train=True)
    assert torch.equal(again[0][1], search)  # the same (seed, epoch, index): the same pair
    again.set_epoch(1)
    assert not torch.equal(again[0][1], search)  # a new epoch: new pairs


@pytest.fixture(scope="module")
def trained(small_sot, tmp_path_factory):
    from cnnkit.tasks.track.sot import SingleObjectTracker

    root, _ = small_sot
    out = tmp_path_factory.mktemp("sot_run") / "run"
    sot = SingleObjectTracker("siamfc")
    run = sot.train(str(root), epochs=2, pairs=192, val_pairs=32, batch=16, workers=0, out=str(out), device="cpu",
                    eval_sequences=1)
    return sot, run, out


def test_a_short_training_run_writes_weights_that_load(trained, small_sot, tmp_path):
    from cnnkit.engine.checkpoint import read_metadata
    from cnnkit.tasks.track.sot import SingleObjectTracker

    sot, run, out = trained
    best = out / "weights" / "best.safetensors"
    meta = read_metadata(best)
    assert meta["task"] == "sot" and meta["model"] == "siamfc" and meta["response"] == 9
    assert (meta["exemplar"], meta["search"], meta["stride"]) == (63, 127, 8)
    assert {"success_auc", "precision_20px", "fps", "pairs_peak_auc", "pairs_peak_accuracy"} <= set(run.metrics)
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file() and (out / "plots" / "val_otb.png").is_file()
    loaded = SingleObjectTracker.load(best)
    for key, value in sot.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    # a file of another task is refused in one line
    with pytest.raises(CnnkitError, match="not 'sot'"):
        SingleObjectTracker.load(_other_task_file(tmp_path))
    # track writes one MOT row a frame and the video; val the OTB metrics
    root, _ = small_sot
    seq = find_sequences(root, split="test")[0]
    written = loaded.track([seq.root], out=tmp_path / "track")
    rows = read_mot_file(written[seq.name], "result")
    assert rows[:, 0].tolist() == list(range(1, FRAMES + 1)) and (rows[:, 1] == 1).all()
    assert (tmp_path / "track" / f"{seq.name}.mp4").stat().st_size > 0
    gt = read_mot_file(seq.gt, "gt")
    assert np.allclose(rows[0, 2:6], gt[0, 2:6])  # the first row is the initial box
    metrics = loaded.val(str(root), split="test", out=tmp_path / "val", device="cpu")
    assert 0 <= metrics["success_auc"] <= 1 and metrics["fps"] > 0 and metrics["sequences"] == 1
    assert (tmp_path / "val" / "metrics.json").is_file() and (tmp_path / "val" / "results" / f"{seq.name}.txt").is_file()


def _other_task_file(tmp_path):
    from cnnkit.engine.checkpoint import save_weights

    return save_weights(nn.Linear(2, 2), tmp_path / "other.safetensors", {"task": "classify", "model": "tiny_cnn"})


def test_detection_images_give_pairs_of_one_image(tmp_path):
    """A detection dataset trains too: every box is a pair with itself, the search moved and rescaled."""
    from types import SimpleNamespace

    from cnnkit.data.synth import synth_dataset
    from cnnkit.tasks.track.sot_task import load_pair_data

    synth_dataset("shapes", tmp_path / "shapes", n=10, imgsz=128, progress=False)
    cfg = SimpleNamespace(seed=0, val_split=0.2, min_size=8.0, min_visibility=0.5)
    data = load_pair_data(cfg, tmp_path / "shapes")
    assert data.splits["train"] and data.splits["val"] and not data.sequences
    assert all(t.still and len(t.frames) == 1 for t in data.splits["train"])
    pairs = PairSet(data.splits["train"], spec_of("siamfc"), 9, count=4, seed=0, train=True)
    exemplar, search, labels, _, offset = pairs[1]
    assert exemplar.shape == (3, 63, 63) and search.shape == (3, 127, 127) and labels.sum() > 0
