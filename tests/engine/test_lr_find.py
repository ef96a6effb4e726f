"""`--lr auto`: the learning-rate range test (cnnkit.engine.lr_find): the suggestion rule on known curves, the
test on a real tiny model (rising rates, early stop on divergence, weights restored) and its plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.engine.lr_find import RangeTest, plot_range_test, range_test, suggest
from cnnkit.errors import CnnkitError


# ------------------------------------------------------------------------------------------ suggest()

def _curve(x: np.ndarray, centre: float, rise_from: float) -> np.ndarray:
    """A range test's loss over log10(lr): flat, falling around ``centre``, rising past ``rise_from``."""
    return 2.0 - 1.0 / (1.0 + np.exp(-4.0 * (x - centre))) + 3.0 * np.maximum(0.0, x - rise_from) ** 2


def test_suggest_is_a_tenth_of_the_minimum_on_a_u_curve():
    x = np.linspace(-6, 0, 100)
    lrs, losses = list(10.0**x), list(_curve(x, centre=-2.0, rise_from=-1.3))
    suggestion, steepest, minimum = suggest(lrs, losses)
    lowest = int(np.argmin(losses))
    assert 10 < lowest < 90  # a real U: falls, then rises
    assert minimum == lrs[lowest]
    assert suggestion == pytest.approx(minimum / 10)
    assert suggestion < minimum and steepest < minimum
    slopes = np.gradient(np.asarray(losses), x)
    assert steepest == lrs[int(np.argmin(slopes[:lowest]))]  # the most negative slope before the minimum
    assert math.log10(steepest) == pytest.approx(-2.0, abs=0.1)  # the sigmoid's centre


def test_suggest_never_above_three_times_the_steepest_rate():
    x = np.linspace(-6, 0, 100)
    lrs, losses = list(10.0**x), list(_curve(x, centre=-4.0, rise_from=-0.8))  # falls early, minimum late
    suggestion, steepest, minimum = suggest(lrs, losses)
    assert math.log10(steepest) == pytest.approx(-4.0, abs=0.1)
    assert 3 * steepest < minimum / 10
    assert suggestion == pytest.approx(3 * steepest)


def test_suggest_ignores_the_noisy_first_steps():
    x = np.linspace(-6, 0, 100)
    losses = _curve(x, centre=-2.0, rise_from=-1.3)
    losses[1] = losses[0] - 0.8  # a steep drop in the still-noisy start, above the curve's minimum
    assert int(np.argmin(losses)) > 10
    _, steepest, _ = suggest(list(10.0**x), list(losses))
    assert math.log10(steepest) == pytest.approx(-2.0, abs=0.1)


@pytest.mark.parametrize("points", [0, 1, 7])
def test_suggest_needs_eight_points(points):
    with pytest.raises(CnnkitError) as info:
        suggest([10.0**-k for k in range(points)], [1.0] * points)
    assert f"only {points} steps" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- range_test()

class _Task:
    """The one method range_test uses: train_loss(model, batch) -> {"loss": tensor}."""

    def __init__(self, on_step=None):
        self.on_step = on_step

    def train_loss(self, model, batch):
        if self.on_step is not None:
            self.on_step()
        images, labels = batch
        return {"loss": F.cross_entropy(model(images), labels)}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))


def _loader(batches: int = 4, batch: int = 16, signal: float = 2.0) -> list:
    """A small task: the class is the brightest of three channels, by ``signal`` times the noise."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(batches):
        labels = torch.randint(0, 3, (batch,), generator=generator)
        images = torch.randn(batch, 3, 8, 8, generator=generator)
        images[torch.arange(batch), labels] += signal
        out.append((images, labels))
    return out


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_range_test_rising_rates_and_weights_restored():
    model = _model()
    before = _state(model)
    during = []  # BatchNorm's running mean as the test saw it: it changes, so restoring it matters
    task = _Task(on_step=lambda: during.append(model[1].running_mean.clone()))
    result = range_test(task, model, _loader(), lambda lr: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                        torch.device("cpu"), steps=40, start=1e-4, end=1e-1)
    assert isinstance(result, RangeTest)
    assert len(result.lrs) == len(result.losses) == 40  # no divergence up to 0.1: every step ran
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1e-1)
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))
    assert all(math.isfinite(v) for v in result.losses)
    assert min(result.losses) < result.losses[0]  # it learned something on the way
    assert 1e-4 <= result.suggestion <= result.minimum
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():  # weights, BatchNorm running stats and num_batches_tracked
        assert torch.equal(after[key], value), key
    assert not torch.equal(during[-1], before["1.running_mean"])
    assert model.state_dict()["1.num_batches_tracked"].item() == 0


def test_range_test_stops_when_the_loss_diverges_and_still_restores():
    torch.manual_seed(0)  # no BatchNorm and a hard task: plain SGD blows up past lr ~2
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 3))
    before = _state(model)
    result = range_test(_Task(), model, _loader(signal=0.3), lambda lr: torch.optim.SGD(model.parameters(), lr=lr),
                        torch.device("cpu"), steps=100, start=1e-4, end=10.0)
    assert 8 <= len(result.lrs) < 100  # stopped early
    assert result.losses[-1] > 4 * min(result.losses)  # the rule that stopped it: four times the minimum
    assert result.lrs[-1] < 10.0
    assert result.suggestion < result.lrs[-1]
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_range_test_keeps_the_ratio_of_parameter_groups():
    """A backbone at a tenth of the head's rate stays at a tenth throughout the test."""
    model = _model()
    seen = []
    holder = {}

    def make_optimizer(lr):
        holder["opt"] = torch.optim.SGD([{"params": model[0].parameters(), "lr": lr / 10},
                                         {"params": list(model[1].parameters()) + list(model[5].parameters()), "lr": lr}])
        return holder["opt"]

    task = _Task(on_step=lambda: seen.append([g["lr"] for g in holder["opt"].param_groups]))
    result = range_test(task, model, _loader(), make_optimizer, torch.device("cpu"), steps=12, start=1e-4, end=1e-2)
    assert len(seen) == 12
    for (backbone, head), lr in zip(seen, result.lrs):
        assert head == pytest.approx(lr) and backbone == pytest.approx(lr / 10)


def test_range_test_restores_the_weights_when_a_step_fails():
    model = _model()
    before = _state(model)
    calls = []

    def fail_late():
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        range_test(_Task(on_step=fail_late), model, _loader(), lambda lr: torch.optim.SGD(model.parameters(), lr=lr),
                   torch.device("cpu"), steps=20, start=1e-2, end=1.0)
    for key, value in before.items():
        assert torch.equal(model.state_dict()[key], value), key


class _Passes:
    """A loader that yields ``batches`` each pass and refuses a sixth pass (a hang would never end)."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        if self.passes > 5:
            raise AssertionError("range_test keeps iterating a loader that gives no batches")
        return iter(self.batches)


@pytest.mark.parametrize("batches", [[], [None, None]])
def test_range_test_on_a_loader_without_batches_is_a_one_line_error(batches):
    model = _model()
    loader = _Passes(batches)
    with pytest.raises(CnnkitError, match="ran only 0 steps"):
        range_test(_Task(), model, loader, lambda lr: torch.optim.SGD(model.parameters(), lr=lr), torch.device("cpu"),
                   steps=20)


def test_range_test_cycles_a_short_loader():
    model = _model()
    loader = _Passes(_loader(batches=2))
    result = range_test(_Task(), model, loader, lambda lr: torch.optim.SGD(model.parameters(), lr=lr),
                        torch.device("cpu"), steps=9, start=1e-4, end=1e-3)
    assert len(result.lrs) == 9 and loader.passes == 5


def test_plot_range_test_writes_a_png(tmp_path):
    x = np.linspace(-6, 0, 50)
    lrs, losses = list(10.0**x), list(_curve(x, centre=-2.0, rise_from=-1.3))
    result = RangeTest(lrs=lrs, losses=losses)
    result.suggestion, result.steepest, result.minimum = suggest(lrs, losses)
    path = plot_range_test(result, tmp_path / "plots" / "lr_find.png")
    assert path == tmp_path / "plots" / "lr_find.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in path.parent.iterdir()] == ["lr_find.png"]  # no temporary file left
