"""Small units of the engine and the data layer: schedule, parameter groups, run directories, atomic
writes, checkpoints, partial weight loading, image decoding, the stratified split and the metrics."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cnnkit.data.imagefolder import stratified_split
from cnnkit.data.images import load_image, to_rgb
from cnnkit.engine.checkpoint import FORMAT, load_checkpoint, load_matching, save_checkpoint
from cnnkit.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups
from cnnkit.engine.rundir import atomic_path, next_run_dir, write_json, write_text
from cnnkit.errors import CnnkitError
from cnnkit.models.tiny_cnn import TinyCNN
from cnnkit.tasks.classify.task import classification_metrics


# ---------------------------------------------------------------------------- learning-rate schedule
def test_warmup_is_linear_and_peaks_at_its_end():
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup, "cosine", 0.01) for s in range(warmup)]
    assert factors == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    steps = np.diff(factors)
    assert steps == pytest.approx(np.full(warmup - 1, 1 / warmup))  # linear: equal increments
    assert factors[-1] == pytest.approx(1.0)                        # peak at the last warm-up step
    assert factors[0] < 0.2                                         # starts from a small fraction
    whole = [lr_factor(s, total, warmup, "cosine", 0.01) for s in range(total)]
    assert max(whole) == pytest.approx(1.0) and int(np.argmax(whole)) == warmup - 1


def test_cosine_decays_monotonically_within_bounds():
    total, warmup, min_ratio = 50, 5, 0.05
    after = [lr_factor(s, total, warmup, "cosine", min_ratio) for s in range(warmup, total)]
    assert after[0] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))
    assert all(min_ratio - 1e-12 <= f <= 1.0 for f in after)
    assert after[len(after) // 2] == pytest.approx(min_ratio + (1 - min_ratio) / 2, abs=0.05)  # half way, half way down
    assert lr_factor(10 * total, total, warmup, "cosine", min_ratio) == pytest.approx(min_ratio)  # stays at the floor


@pytest.mark.parametrize("total, warmup", [(10, 2), (100, 10), (7, 0)])
def test_cosine_reaches_min_ratio_at_the_last_step(total, warmup):
    min_ratio = 0.01
    assert lr_factor(total - 1, total, warmup, "cosine", min_ratio) == pytest.approx(min_ratio)
    # and the learning rate the optimizer really uses on its last step
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = build_scheduler(optimizer, total, warmup, "cosine", min_ratio)
    used = []
    for _ in range(total):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert used[-1] == pytest.approx(0.1 * min_ratio)


def test_constant_stays_at_one():
    total, warmup = 40, 4
    assert [lr_factor(s, total, warmup, "constant", 0.01) for s in range(warmup - 1, total + 5)] == [1.0] * (total + 6 - warmup)
    assert lr_factor(0, total, 0, "constant", 0.01) == 1.0


def test_no_warmup_starts_at_peak():
    assert lr_factor(0, 20, 0, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(0, 20, 0, "constant", 0.1) == 1.0


# ---------------------------------------------------------------------------- parameter groups
def test_param_groups_exempt_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4 * 6 * 6),
                          nn.Linear(4 * 6 * 6, 2))
    frozen = nn.Linear(2, 2)
    model.append(frozen)
    frozen.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["0.weight", "4.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["0.bias", "1.bias", "1.weight", "3.bias", "3.weight", "4.bias"]


def test_optimizer_groups_for_tiny_cnn():
    model = TinyCNN(3)
    for name in ("adamw", "sgd"):
        optimizer = build_optimizer(model, name, lr=0.01, momentum=0.9, weight_decay=0.1)
        decay, no_decay = optimizer.param_groups
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
        bn = model.features[0][1]
        assert any(p is bn.weight for p in no_decay["params"]) and any(p is model.fc.bias for p in no_decay["params"])
        assert any(p is model.fc.weight for p in decay["params"])
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert isinstance(build_optimizer(model, "sgd", 0.01, 0.9, 0.1), torch.optim.SGD)
    assert isinstance(build_optimizer(model, "adamw", 0.01, 0.9, 0.1), torch.optim.AdamW)


# ---------------------------------------------------------------------------- run directories
def test_next_run_dir_numbers_and_names(tmp_path):
    base = tmp_path / "runs"
    first = next_run_dir("classify", None, base=base)
    assert first == base / "classify" / "exp"
    first.mkdir(parents=True)
    second = next_run_dir("classify", None, base=base)
    assert second == base / "classify" / "exp2"
    second.mkdir()
    assert next_run_dir("classify", None, base=base) == base / "classify" / "exp3"
    # a name is used as given, taken or not
    assert next_run_dir("classify", "mine", base=base) == base / "classify" / "mine"
    (base / "classify" / "mine").mkdir()
    assert next_run_dir("classify", "mine", base=base) == base / "classify" / "mine"
    # numbers compare as numbers, gaps are not refilled, look-alike names do not count
    for name in ("exp9", "exp10", "expert", "exp_old"):
        (base / "classify" / name).mkdir()
    assert next_run_dir("classify", None, base=base) == base / "classify" / "exp11"
    # other tasks and prefixes count separately
    assert next_run_dir("detect", None, base=base) == base / "detect" / "exp"
    assert next_run_dir("classify", None, base=base, prefix="demo") == base / "classify" / "demo"


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"top1": np.float32(0.5), "path": Path("a/b"), "n": torch.tensor(3)})
    assert target.read_text() == '{\n  "top1": 0.5,\n  "path": "a/b",\n  "n": 3\n}\n'
    write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_atomic_path_keeps_previous_content_on_failure(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
    # and a failure before the first write leaves no file at all
    fresh = tmp_path / "new.bin"
    with pytest.raises(KeyError):
        with atomic_path(fresh):
            raise KeyError("x")
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


# ---------------------------------------------------------------------------- checkpoints
class NotATensor:
    pass


def test_checkpoint_round_trip(tmp_path):
    state = {"format": FORMAT, "epoch": 3, "model": TinyCNN(2).state_dict(), "history": [{"epoch": 1.0}]}
    path = save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["history"] == [{"epoch": 1.0}]
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())


@pytest.mark.parametrize("kind", ["missing", "random bytes", "text", "foreign dict", "foreign list", "pickled object"])
def test_load_checkpoint_rejects_non_checkpoints(tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("epoch: 3\n")
    elif kind == "foreign dict":
        torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, path)
    elif kind == "foreign list":
        torch.save([torch.zeros(2)], path)
    elif kind == "pickled object":  # weights_only=True refuses to unpickle arbitrary classes
        torch.save({"format": FORMAT, "thing": NotATensor()}, path)
    with pytest.raises(CnnkitError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_matching_skips_a_resized_head():
    torch.manual_seed(0)
    source = TinyCNN(3)
    torch.manual_seed(1)
    target = TinyCNN(5)
    head_before = target.fc.weight.detach().clone()
    copied, skipped = load_matching(target, source.state_dict(), "source.safetensors")
    assert skipped == ["fc.bias", "fc.weight"]
    assert copied == len(source.state_dict()) - 2
    for name, tensor in target.state_dict().items():
        if name.startswith("fc."):
            continue
        assert torch.equal(tensor, source.state_dict()[name]), name
    assert torch.equal(target.fc.weight, head_before)


@pytest.mark.parametrize("state", [
    {"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)},
    TinyCNN(3, widths=(8, 16, 24)).state_dict(),  # same names, other shapes: only BN counters would match
], ids=["unrelated names", "other widths"])
def test_load_matching_refuses_another_architecture(state):
    model = TinyCNN(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CnnkitError) as info:
        load_matching(model, state, "foreign.safetensors")
    assert "foreign.safetensors" in str(info.value) and "do not fit" in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


# ---------------------------------------------------------------------------- to_rgb
def rgb(image: Image.Image) -> np.ndarray:
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == image.size
    array = np.asarray(out)
    assert array.dtype == np.uint8
    return array


def test_to_rgb_l():
    out = rgb(Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L"))
    assert out[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]


def test_to_rgb_la_composites_on_black():
    out = rgb(Image.fromarray(np.array([[[200, 255], [200, 0], [200, 128]]], dtype=np.uint8), "LA"))
    assert out[0, 0].tolist() == [200, 200, 200]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert abs(int(out[0, 2, 0]) - 100) <= 1 and len(set(out[0, 2].tolist())) == 1


def test_to_rgb_rgba_composites_on_black():
    out = rgb(Image.fromarray(np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [200, 100, 50, 51]]], dtype=np.uint8), "RGBA"))
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [0, 0, 0]
    assert np.abs(out[0, 2].astype(int) - [40, 20, 10]).max() <= 1


def _palette_image(transparent: int | None) -> Image.Image:
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
    for x in range(3):
        image.putpixel((x, 0), x)
    if transparent is not None:
        image.info["transparency"] = transparent
    return image


def test_to_rgb_palette():
    assert rgb(_palette_image(None))[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_to_rgb_palette_with_transparency():
    assert rgb(_palette_image(0))[0].tolist() == [[0, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_to_rgb_palette_with_transparency_from_a_file(tmp_path):
    path = tmp_path / "p.png"
    _palette_image(1).save(path, transparency=1)
    assert np.asarray(load_image(path))[0].tolist() == [[255, 0, 0], [0, 0, 0], [0, 0, 255]]


def _check_16bit(out: np.ndarray) -> None:
    assert out[0, 0].tolist() == [0, 0, 0]
    assert int(out[0, 1, 0]) in (127, 128)          # mid-grey, not clipped to 255
    assert out[0, 2].tolist() == [255, 255, 255]
    assert int(out[0, 3, 0]) in (3, 4)              # 1000 / 65535 * 255 = 3.9
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


I16 = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)


def test_to_rgb_i16():
    image = Image.fromarray(I16)
    assert image.mode == "I;16"
    _check_16bit(rgb(image))


def test_to_rgb_i16_png_file(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(I16).save(path)
    _check_16bit(np.asarray(load_image(path)))


def test_to_rgb_i32_holding_16bit_values():
    image = Image.fromarray(I16.astype(np.int32), "I")
    assert image.mode == "I"
    _check_16bit(rgb(image))


def test_to_rgb_i32_holding_8bit_values():
    out = rgb(Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), "I"))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_to_rgb_float():
    out = rgb(Image.fromarray(np.array([[-1.0, 0.0, 1.0, 3.0]], dtype=np.float32), "F"))
    values = out[0, :, 0].astype(int).tolist()
    assert values[0] == 0 and values[-1] == 255                 # the image's own range maps to 0..255
    assert abs(values[1] - 64) <= 1 and abs(values[2] - 127) <= 1
    assert rgb(Image.fromarray(np.full((2, 2), 5.0, dtype=np.float32), "F")).max() == 0  # flat: no division by zero


@pytest.mark.parametrize("mode", ["1", "CMYK", "YCbCr", "RGB"])
def test_to_rgb_other_modes(mode):
    image = Image.new("RGB", (4, 3), (255, 255, 255)).convert(mode)
    assert rgb(image).min() >= 250  # white stays white


# ---------------------------------------------------------------------------- stratified split
def _samples(counts: dict[int, int]) -> list[tuple[Path, int]]:
    return [(Path(f"c{label}/{i:03d}.png"), label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_is_reproducible_and_keeps_classes_on_both_sides():
    counts = {0: 40, 1: 10, 2: 3, 3: 2, 4: 1}
    samples = _samples(counts)
    kept, held = stratified_split(samples, 0.2, seed=3)
    shuffled = samples[:]
    random.Random(9).shuffle(shuffled)
    assert stratified_split(shuffled, 0.2, seed=3) == (kept, held)  # the input order does not matter
    assert stratified_split(samples, 0.2, seed=3) == (kept, held)
    assert sorted(kept + held) == sorted(samples) and not set(kept) & set(held)
    held_per_class = {c: sum(1 for _, l in held if l == c) for c in counts}
    kept_per_class = {c: sum(1 for _, l in kept if l == c) for c in counts}
    assert held_per_class == {0: 8, 1: 2, 2: 1, 3: 1, 4: 0}
    for c, n in counts.items():
        if n >= 2:
            assert held_per_class[c] >= 1 and kept_per_class[c] >= 1
    assert kept_per_class[4] == 1
    others = {tuple(stratified_split(samples, 0.2, seed=s)[1]) for s in range(5)}
    assert len(others) > 1  # the seed matters


# ---------------------------------------------------------------------------- metrics
def test_classification_metrics_match_sklearn():
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    n_classes, n = 8, 60
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
    logits = rng.normal(size=(n, n_classes)).astype(np.float32)
    logits[np.arange(n), labels] += rng.choice([0.0, 1.0, 3.0], size=n)  # right, borderline and sure
    names = [f"class{i}" for i in range(n_classes)]
    m = classification_metrics(logits, labels, names)
    preds = logits.argmax(axis=1)
    assert m["top1"] == pytest.approx(accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert m["top5"] == pytest.approx(top_k_accuracy_score(labels, probs, k=5, labels=list(range(n_classes))))
    ranks = (logits > logits[np.arange(n), labels][:, None]).sum(axis=1)  # classes scored above the true one
    assert m["top5"] == pytest.approx(np.mean(ranks < 5))
    assert 0 < m["top1"] < m["top5"] < 1  # a case where top-5 differs from top-1 and from 1
    assert m["val_loss"] == pytest.approx(log_loss(labels, probs, labels=list(range(n_classes))), rel=1e-6)
    assert sum(c["support"] for c in m["per_class"].values()) == n
    assert m["per_class"]["class3"]["support"] == int((labels == 3).sum())
    # per class precision, recall, f1 and support: scikit-learn's own per-class report
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=list(range(n_classes)))
    for c, name in enumerate(names):
        got = m["per_class"][name]
        assert [got["precision"], got["recall"], got["f1"], got["support"]] == pytest.approx(
            [precision[c], recall[c], f1[c], support[c]]), name
    assert len(set(np.round(precision, 6))) > 3 and len(set(np.round(recall, 6))) > 3  # the classes differ: mix-ups show
    # pr_auc: macro one-vs-rest average precision of the softmax scores, as scikit-learn averages it
    one_hot = np.eye(n_classes)[labels]
    assert m["pr_auc"] == pytest.approx(average_precision_score(one_hot, probs, average="macro"))
    per_class_ap = average_precision_score(one_hot, probs, average=None)
    assert [m["per_class"][name]["ap"] for name in names] == pytest.approx(list(per_class_ap))
    assert m["top1"] < m["pr_auc"] < 1 and np.ptp(per_class_ap) > 0.05


def test_classification_metrics_hand_made():
    # 3 classes, 4 samples: predictions 0, 1, 1, 2 for labels 0, 1, 2, 2
    logits = np.array([[5, 0, 0], [0, 5, 0], [0, 5, 1], [0, 0, 5]], dtype=np.float32)
    labels = np.array([0, 1, 2, 2])
    m = classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["top1"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    # f1: a 1, b 2/3 (precision 1/2, recall 1), c 2/3 (precision 1, recall 1/2)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["top5"] == 1.0  # fewer than 5 classes: trivially 1
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5) and m["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert [m["per_class"][c]["precision"] for c in "abc"] == pytest.approx([1, 0.5, 1])
    assert [m["per_class"][c]["recall"] for c in "abc"] == pytest.approx([1, 1, 0.5])
    # pr_auc ranks scores, not argmaxes: sample 3 is called b, but its c score (e^1 / (e^5 + e^1 + 1)) still beats
    # every other image's c score but sample 4's, so c's two images rank first and second: AP 1 for each class
    assert [m["per_class"][c]["ap"] for c in "abc"] == pytest.approx([1, 1, 1]) and m["pr_auc"] == pytest.approx(1.0)
    # a ranking with a gap: a's two images come 1st and 4th by a's softmax score (0.936, 0.047, 0.090, 0.042),
    # so AP(a) = (1/1 + 2/4) / 2 = 0.75; b's and c's one image each ranks first (AP 1)
    ranked = classification_metrics(np.array([[4, 1, 0], [1, 4, 0], [0, 2, 1], [0, 3, 1]], dtype=np.float32),
                                    np.array([0, 1, 2, 0]), ["a", "b", "c"])
    assert [ranked["per_class"][c]["ap"] for c in "abc"] == pytest.approx([0.75, 1, 1])
    assert ranked["pr_auc"] == pytest.approx((0.75 + 1 + 1) / 3)
    # predictions a, b, b, b: a precision 1/1 recall 1/2; b 1/3 and 1/1; c never predicted (0 by convention), recall 0
    assert [ranked["per_class"][c]["precision"] for c in "abc"] == pytest.approx([1, 1 / 3, 0])
    assert [ranked["per_class"][c]["recall"] for c in "abc"] == pytest.approx([0.5, 1, 0])
    assert m["val_loss"] == pytest.approx(-np.mean(np.log([
        math.exp(5) / (math.exp(5) + 2), math.exp(5) / (math.exp(5) + 2),
        math.exp(1) / (math.exp(5) + math.exp(1) + 1), math.exp(5) / (math.exp(5) + 2)])))
    # row-normalised: each row sums to 1, the diagonal is each class's recall
    assert m["confusion_matrix"] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]
    empty = classification_metrics(logits[:2], labels[:2], ["a", "b", "c"])
    assert empty["confusion_matrix"][2] == [0.0, 0.0, 0.0]  # a class without images: zeros, not NaN


def test_read_state_dict_accepts_common_weight_files(tmp_path):
    """--weights takes cnnkit safetensors, plain state dicts (nested or with DDP prefixes) and checkpoints."""
    from safetensors.torch import save_file

    from cnnkit.engine.checkpoint import read_state_dict, save_checkpoint
    from cnnkit.models.tiny_cnn import TinyCNN

    state = TinyCNN(3).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "plain.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ddp.pth")
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "cnnkit", "model": state, "epoch": 1})
    for name in ("plain.safetensors", "ddp.pth", "checkpoint.pt"):
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys(), name
        assert all(torch.equal(loaded[k], state[k]) for k in state), name
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(CnnkitError, match="junk.pt"):
        read_state_dict(tmp_path / "junk.pt")


def test_per_class_sampler_gives_class_groups_and_covers_the_epoch():
    from cnnkit.data.loaders import PerClassSampler

    labels = [0] * 10 + [1] * 7 + [2] * 3 + [3] * 1
    sampler = PerClassSampler(labels, per_class=4, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 4 * (3 + 2 + 1 + 1)
    for start in range(0, len(order), 4):
        assert len({labels[i] for i in order[start:start + 4]}) == 1  # each group is one class
    assert set(order) == set(range(len(labels)))  # every image once per epoch (plus top-ups)
    assert list(sampler) == order  # (seed, epoch) decide the order
    sampler.set_epoch(1)
    assert list(sampler) != order
    shards = [list(PerClassSampler(labels, 4, seed=3, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12  # 7 groups over 2 ranks: 3 each, the same count on every rank
    assert all(len({labels[i] for i in shard[s:s + 4]}) == 1 for shard in shards for s in range(0, 12, 4))


def test_amp_on_a_cpu_without_bf16_instructions_keeps_float32_unless_forced(monkeypatch, capsys):
    from cnnkit import console
    from cnnkit.engine import trainer

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(console, "_warned", set())
    monkeypatch.setattr(trainer, "cpu_runs_bf16", lambda: False)
    assert trainer.autocast_dtype(cpu, True, "auto") is None
    assert "no bf16 instructions" in capsys.readouterr().err
    assert trainer.autocast_dtype(cpu, True, "bf16") is torch.bfloat16
    assert trainer.autocast_dtype(cpu, False, "bf16") is None
    assert trainer.autocast_dtype(cuda, True, "auto") is torch.float16
    monkeypatch.setattr(trainer, "cpu_runs_bf16", lambda: True)
    assert trainer.autocast_dtype(cpu, True, "auto") is torch.bfloat16
