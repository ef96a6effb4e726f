"""--balance smote: SMOTE on pooled features of a frozen backbone, training the head alone."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_resumed_from

from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.data.smote import smote_balance, smote_features
from cnnkit.errors import CnnkitError

COUNTS = {0: 40, 1: 7, 2: 3}


def _clusters(counts: dict[int, int], dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = np.concatenate([rng.normal(10.0 * c, 1.0, size=(n, dim)) for c, n in counts.items()]).astype(np.float32)
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    return features, labels


def _on_a_segment(point: np.ndarray, members: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether ``point`` lies on the segment between two of ``members`` [N, D]."""
    for a in members:
        span = members - a                                      # [N, D]: a -> every b
        length = (span ** 2).sum(1)
        t = np.where(length > 0, span @ (point - a) / np.maximum(length, 1e-12), 0.0)
        closest = a + np.clip(t, 0, 1)[:, None] * span
        if (np.abs(closest - point).max(1) < tol).any():
            return True
    return False


def test_smote_equalises_classes_with_points_between_same_class_neighbours():
    features, labels = _clusters(COUNTS)
    balanced = smote_balance(features, labels, seed=0)
    assert Counter(balanced.labels.tolist()) == {0: 40, 1: 40, 2: 40}
    assert balanced.k == 2 and balanced.repeated == []  # k = min(5, smallest class - 1)
    n = len(labels)
    np.testing.assert_array_equal(balanced.features[:n], features)  # the real samples first, untouched
    assert balanced.features.dtype == np.float32
    for point, label in zip(balanced.features[n:], balanced.labels[n:]):
        assert _on_a_segment(point, features[labels == label]), (point, label)
    again = smote_balance(features, labels, seed=0)
    np.testing.assert_array_equal(again.features, balanced.features)  # the seed decides it: resume sees the same set


def test_a_class_of_one_sample_is_repeated_and_an_even_set_is_left_alone():
    features, labels = _clusters({0: 12, 1: 1, 2: 4})
    balanced = smote_balance(features, labels, seed=0)
    assert Counter(balanced.labels.tolist()) == {0: 12, 1: 12, 2: 12}
    assert balanced.repeated == [1] and balanced.k == 3
    np.testing.assert_array_equal(balanced.features[balanced.labels == 1], np.repeat(features[labels == 1], 12, axis=0))
    even = smote_balance(*_clusters({0: 3, 1: 3}))
    assert len(even.labels) == 6 and even.k == 0


@pytest.mark.parametrize("options, message", [
    ({"transfer": "finetune", "backbone_from": "a.safetensors"}, "not with --transfer finetune"),
    ({"transfer": "scratch", "pretrained": True}, "not with --transfer scratch"),
    ({}, "needs a trained backbone"),
    ({"weights": "a.safetensors", "mixup": 0.2}, "--mixup mixes images"),
])
def test_smote_options_are_checked(options, message):
    with pytest.raises(CnnkitError, match=message) as caught:
        replace(TrainConfig(), balance="smote", **options).validate()
    assert "\n" not in str(caught.value)
    replace(TrainConfig(), balance="smote", transfer="linear", backbone_from="a.safetensors", mixup=0.0).validate()


def test_smote_with_finetune_is_one_line_on_the_command_line(monkeypatch, capsys, tmp_path):
    from conftest import run_cli

    code, _, err = run_cli(["classify", "train", "--balance", "smote", "--transfer", "finetune", "--backbone-from",
                            tmp_path / "a.safetensors", "--out", tmp_path / "run"], monkeypatch, capsys)
    assert code == 2 and err.strip().startswith("cnnkit: --balance smote") and len(err.strip().splitlines()) == 1


def test_a_head_that_is_not_one_layer_on_the_pooled_features_is_refused(digits_root):
    from cnnkit.augment.presets import classify_transforms
    from cnnkit.models.tiny_cnn import TinyCNN

    class ScaledLogits(TinyCNN):
        def forward(self, x):
            return 2.0 * super().forward(x)

    samples = [(path, 0) for path in sorted((digits_root / "train" / "0").glob("*.png"))[:2]]
    with pytest.raises(CnnkitError, match="not one layer on its pooled features"):
        smote_features(ScaledLogits(2), samples, ["0", "1"], classify_transforms(16, False), 2, 0, torch.device("cpu"), 0)


def test_a_class_of_one_image_is_repeated_with_a_warning(digits_root, capsys):
    from cnnkit.augment.presets import classify_transforms
    from cnnkit.models.tiny_cnn import TinyCNN

    samples = [(path, c) for c in (0, 1, 2) for path in sorted((digits_root / "train" / str(c)).glob("*.png"))[:(4, 1, 2)[c]]]
    features = smote_features(TinyCNN(3), samples, ["0", "1", "2"], classify_transforms(16, False), 4, 0, torch.device("cpu"), 0)
    assert Counter(features.labels.tolist()) == {0: 4, 1: 4, 2: 4} and features[11][2] == 11
    err = capsys.readouterr().err
    assert "class '1' has 1 training image" in err and "smote: 7 -> 12 training features (class counts 4 each), k=1" in err


# ---------------------------------------------------------------- real runs
RARE, COMMON, BATCH = 4, 40, 40  # 10 classes balanced to 40 each: 400 features, exactly 10 batches an epoch


@pytest.fixture(scope="module")
def imbalanced_digits(digits_root, tmp_path_factory):
    """Digits with 4 training images of 0-4 and 40 of 5-9 (10:1), 10 validation images a class; and a
    tiny_cnn weights file to take the backbone from (untrained, its BatchNorm statistics made up so
    that keeping them is a real check)."""
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.tiny_cnn import TinyCNN

    root = tmp_path_factory.mktemp("imbalanced_digits")
    for c in range(10):
        for split, n in (("train", RARE if c < 5 else COMMON), ("val", 10)):
            (root / split / str(c)).mkdir(parents=True)
            for path in sorted((digits_root / split / str(c)).glob("*.png"))[:n]:
                shutil.copy(path, root / split / str(c) / path.name)
    torch.manual_seed(123)
    source = TinyCNN(10)
    for name, buffer in source.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    weights = save_weights(source, root / "source.safetensors", {"task": "classify", "model": "tiny_cnn"})
    return root, weights


def _options(root, weights, out):
    return dict(data=str(root), model="tiny_cnn", imgsz=16, epochs=2, batch=BATCH, lr=0.03, workers=0, device="cpu",
                fliplr=0.0, balance="smote", backbone_from=str(weights), out=str(out))


@pytest.fixture(scope="module")
def smote_run(imbalanced_digits, tmp_path_factory):
    """One uninterrupted run, recording the labels of every training batch the loss saw."""
    from cnnkit import api
    from cnnkit.tasks.classify import task as classify

    root, weights = imbalanced_digits
    seen: list[list[int]] = []
    original = classify.classification_loss

    def recording(logits, labels, *args, **kwargs):
        seen.append(labels.tolist())
        return original(logits, labels, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classify, "classification_loss", recording)
        out = tmp_path_factory.mktemp("smote") / "run"
        api.train(TrainConfig(**_options(root, weights, out)))
    return out, seen


def test_smote_run_trains_the_head_alone_on_a_balanced_class_mix(imbalanced_digits, smote_run):
    from cnnkit.engine.transfer import head_names
    from cnnkit.models.tiny_cnn import TinyCNN

    _, weights = imbalanced_digits
    out, seen = smote_run
    assert len(seen) == 2 * 10 and all(len(batch) == BATCH for batch in seen)
    for epoch in (seen[:10], seen[10:]):  # the images are 10:1, the head's epoch is 1:1
        assert Counter(label for batch in epoch for label in batch) == {c: COMMON for c in range(10)}
    source = load_file(str(weights))
    torch.manual_seed(0)  # the run's seed: the head it started from
    initial_head = TinyCNN(10).fc.state_dict()
    head = set(head_names(TinyCNN(10)))
    for name in ("last", "best"):
        trained = load_file(str(out / "weights" / f"{name}.safetensors"))
        assert trained.keys() == source.keys()  # the full classifier, not the head alone
        for key in source:
            if key in head:
                assert not torch.equal(trained[key], initial_head[key.removeprefix("fc.")]), key
            else:  # convolutions and BatchNorm statistics alike
                assert torch.equal(trained[key], source[key]), key
    assert (out / "metrics.json").is_file()


def test_resumed_smote_run_matches_the_uninterrupted_one(imbalanced_digits, smote_run, tmp_path, monkeypatch, capsys):
    from cnnkit import api
    from cnnkit.engine import trainer

    root, weights = imbalanced_digits
    full, _ = smote_run
    original = trainer._write_epoch

    def write_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after epoch 1 is on disk

    cut = tmp_path / "cut"
    monkeypatch.setattr(trainer, "_write_epoch", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        api.train(TrainConfig(**_options(root, weights, cut)))
    monkeypatch.setattr(trainer, "_write_epoch", original)
    capsys.readouterr()
    api.train(TrainConfig(resume=True, out=str(cut)), explicit={"resume", "out"})
    printed = capsys.readouterr().err  # the console writes to stderr
    assert_resumed_from(printed, 1, 2)  # epoch 1 was saved: only epoch 2 runs again
    assert "transfer: linear" in printed
    # the features are made again, from the run's own frozen backbone
    assert "smote: 220 -> 400 training features (class counts 40 each), k=3" in printed
    a, b = load_file(str(full / "weights/last.safetensors")), load_file(str(cut / "weights/last.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
