"""Class imbalance: class weights, balanced samplers (the class mix per epoch changes) and the focal loss."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.tasks.classify.config import TrainConfig
from cnnkit.tasks.embed.config import EmbedConfig
from cnnkit.data.loaders import BalancedSampler, class_weights
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.task import classification_loss

LABELS = [0] * 100 + [1] * 20 + [2] * 5  # 20:1 imbalance


def test_inverse_and_effective_class_weights():
    inverse = class_weights(LABELS, 4, "inverse")
    assert inverse[3] == 0 and inverse[:3].mean() == pytest.approx(1.0)
    assert inverse[2] / inverse[0] == pytest.approx(20.0)  # 1 / count
    effective = class_weights(LABELS, 4, "effective", beta=0.99)
    raw = (1 - 0.99) / (1 - 0.99 ** np.array([100, 20, 5]))
    np.testing.assert_allclose(effective[:3] / effective[0], raw / raw[0])
    assert 1 < effective[2] / effective[0] < 20  # flatter than the inverse


@pytest.mark.parametrize("mode, per_class", [("oversample", 100), ("undersample", 5)])
def test_balanced_sampler_equalises_the_class_mix_per_epoch(mode, per_class):
    sampler = BalancedSampler(LABELS, mode, seed=1)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 3 * per_class
        assert Counter(LABELS[i] for i in order) == {0: per_class, 1: per_class, 2: per_class}
        epochs.append(order)
    assert epochs[0] != epochs[1]  # reshuffled (and, undersampling, a new subset) every epoch
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # (seed, epoch) decide it: resume lands on the same batches
    if mode == "oversample":
        assert set(epochs[0]) == set(range(len(LABELS)))  # every image is seen, rare ones repeatedly
    else:
        assert set(epochs[0]) != set(epochs[1])


def test_balanced_sampler_shards_evenly():
    shards = [list(BalancedSampler(LABELS, "oversample", seed=0, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 150


def test_weighted_loss_matches_torch_and_focal_spares_easy_examples():
    torch.manual_seed(0)
    logits, labels = torch.randn(32, 3), torch.randint(0, 3, (32,))
    weight = torch.tensor([0.2, 1.0, 3.0])
    assert classification_loss(logits, labels, weight) == pytest.approx(F.cross_entropy(logits, labels, weight=weight).item(), rel=1e-6)
    assert classification_loss(logits, labels, label_smoothing=0.1) == pytest.approx(
        F.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-6)
    easy = torch.tensor([[6.0, 0.0, 0.0]])
    hard = torch.tensor([[0.0, 0.5, 0.0]])
    target = torch.tensor([0])
    ce_ratio = (classification_loss(easy, target) / classification_loss(hard, target)).item()
    focal_ratio = (classification_loss(easy, target, focal_gamma=2.0) / classification_loss(hard, target, focal_gamma=2.0)).item()
    assert focal_ratio < ce_ratio / 100  # the easy example's share collapses


def test_balance_options_are_checked():
    with pytest.raises(CnnkitError, match="--balance"):
        replace(TrainConfig(), balance="smoteish").validate()
    with pytest.raises(CnnkitError, match="--focal-gamma"):
        replace(TrainConfig(), focal_gamma=-1.0).validate()
    with pytest.raises(CnnkitError, match="--per-class"):
        replace(EmbedConfig(), balance="oversample").validate()


def test_classify_recipe_wires_balancing():
    from types import SimpleNamespace

    from cnnkit.api import CLASSIFY

    samples = [(f"{i}.png", label) for i, label in enumerate(LABELS)]
    dataset = SimpleNamespace(classes=["a", "b", "c"], splits={"train": samples})
    plain = TrainConfig()
    assert CLASSIFY.train_sampler(plain, samples) is None and CLASSIFY.make_task(plain, dataset, None).class_weights is None
    sampler = CLASSIFY.train_sampler(replace(plain, balance="undersample"), samples)
    assert Counter(LABELS[i] for i in sampler) == {0: 5, 1: 5, 2: 5}
    task = CLASSIFY.make_task(replace(plain, balance="weights", loss="focal"), dataset, None)
    assert task.class_weights[2] > task.class_weights[0] and task.focal_gamma == 2.0


def test_logit_adjustment_shifts_the_loss_by_the_class_prior():
    from types import SimpleNamespace

    from cnnkit.api import CLASSIFY

    samples = [(f"{i}.png", label) for i, label in enumerate(LABELS)]
    dataset = SimpleNamespace(classes=["a", "b", "c", "never"], splits={"train": samples})
    task = CLASSIFY.make_task(replace(TrainConfig(), balance="logit_adjust"), dataset, None)
    shares = np.array([100, 20, 5, 1]) / 126  # a class with no image counts as one
    np.testing.assert_allclose(task.log_prior.numpy(), np.log(shares), rtol=1e-6)
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 4), torch.randint(0, 4, (8,))
    expected = F.cross_entropy(logits + torch.log(torch.tensor(shares, dtype=torch.float32)), labels)
    assert task.hard_loss(logits, labels)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert CLASSIFY.make_task(replace(TrainConfig(), balance="none"), dataset, None).log_prior is None


def test_logit_adjustment_recovers_the_rare_classes():
    """Three overlapping Gaussian classes at 50:10:2 in training, balanced at test: a linear classifier
    trained on the adjusted loss finds the rare classes that plain cross-entropy gives up on."""
    from cnnkit.tasks.classify.task import ClassifyTask

    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])

    def draw(counts):
        labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
        return centres[labels] + torch.randn(len(labels), 2, generator=generator), labels

    train_x, train_y = draw([1000, 200, 40])
    test_x, test_y = draw([500, 500, 500])
    counts = torch.bincount(train_y).float()

    def balanced_accuracy(task):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 3)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            task.hard_loss(model(train_x), train_y)["loss"].backward()
            optimizer.step()
        predicted = model(test_x).argmax(1)
        return float(np.mean([(predicted[test_y == c] == c).float().mean() for c in range(3)]))

    plain = balanced_accuracy(ClassifyTask(["a", "b", "c"]))
    adjusted = balanced_accuracy(ClassifyTask(["a", "b", "c"], log_prior=torch.log(counts / counts.sum())))
    assert adjusted > plain + 0.1, (plain, adjusted)


def test_auto_balance_adjusts_only_a_long_tail():
    from types import SimpleNamespace

    from cnnkit.api import CLASSIFY

    def log_prior(labels):
        samples = [(f"{i}.png", label) for i, label in enumerate(labels)]
        dataset = SimpleNamespace(classes=["a", "b", "c"], splits={"train": samples})
        return CLASSIFY.make_task(replace(TrainConfig(), balance="auto"), dataset, None).log_prior

    assert log_prior([0] * 20 + [1] * 10 + [2] * 8) is None  # 2.5:1 is left alone
    assert log_prior(LABELS) is not None  # 20:1
    replace(EmbedConfig(), balance="auto").validate()  # embed balances its batches itself
