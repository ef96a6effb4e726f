"""The underfitting warning (cnnkit.engine.diagnose): a run whose training loss still falls and whose metric
peaks at the end gets one line with the fix; converged, overfitted, short or broken runs get none."""

from __future__ import annotations

import math

import pytest

from cnnkit.engine.callbacks import read_history, write_history
from cnnkit.engine.diagnose import underfit_warning


def _history(losses, scores, metric="top1"):
    return [{"epoch": i + 1, "train_loss": loss, metric: score, "lr": 0.001}
            for i, (loss, score) in enumerate(zip(losses, scores))]


def _rising(epochs):
    return [0.3 + 0.6 * (i + 1) / epochs for i in range(epochs)]  # best at the last epoch


def test_still_learning_gets_one_line_with_the_fix():
    losses = [2.0 * 0.85**i for i in range(12)]  # the last 3 epochs: 1 - 0.85**2 = 28% lower
    warning = underfit_warning(_history(losses, _rising(12)), "top1")
    assert warning is not None and "\n" not in warning
    assert "underfitted" in warning
    assert "fell 28% over the last 3 epochs" in warning
    assert "val top1 peaked at epoch 12 of 12" in warning
    assert "--epochs 24" in warning and "--lr auto" in warning


def test_window_is_a_quarter_of_a_long_run():
    losses = [1.0 - 0.02 * i for i in range(40)]  # epochs 31..40: 0.40 -> 0.22, a 45% drop
    warning = underfit_warning(_history(losses, _rising(40), "mAP50"), "mAP50")
    assert "over the last 10 epochs" in warning and "fell 45%" in warning
    assert "val mAP50 peaked at epoch 40 of 40" in warning and "--epochs 80" in warning


def test_converged_run_is_fine():
    losses = [2.0 * 0.7**i for i in range(8)] + [0.115, 0.114, 0.114, 0.113]  # flat over the last quarter
    assert underfit_warning(_history(losses, _rising(12)), "top1") is None


@pytest.mark.parametrize("drop, warns", [(0.14, False), (0.16, True)])
def test_threshold_is_fifteen_percent(drop, warns):
    losses = [2.0] * 9 + [1.0, 1.0 - drop / 2, 1.0 - drop]  # the window starts at epoch 10
    assert (underfit_warning(_history(losses, _rising(12)), "top1") is not None) is warns


def test_falling_loss_but_early_best_epoch_is_overfitting_not_underfitting():
    losses = [2.0 * 0.8**i for i in range(12)]
    scores = [0.5, 0.7, 0.8, 0.85, 0.84, 0.83, 0.82, 0.8, 0.79, 0.78, 0.77, 0.76]  # best at epoch 4
    assert underfit_warning(_history(losses, scores), "top1") is None


@pytest.mark.parametrize("best, warns", [(20, True), (19, True), (18, False)])
def test_best_epoch_must_be_in_the_last_tenth(best, warns):
    losses = [2.0 * 0.9**i for i in range(20)]
    scores = [0.5] * 20
    scores[best - 1] = 0.9
    warning = underfit_warning(_history(losses, scores), "top1")
    assert (warning is not None) is warns
    if warns:
        assert f"peaked at epoch {best} of 20" in warning


@pytest.mark.parametrize("epochs", [0, 1, 3])
def test_too_few_epochs(epochs):
    losses = [2.0 * 0.5**i for i in range(epochs)]
    assert underfit_warning(_history(losses, _rising(epochs)), "top1") is None


def test_four_epochs_is_enough():
    losses = [2.0, 1.5, 1.0, 0.6]
    assert "peaked at epoch 4 of 4" in underfit_warning(_history(losses, _rising(4)), "top1")


@pytest.mark.parametrize("where", [-1, -3, "all"])
def test_nan_losses(where):
    losses = [2.0 * 0.8**i for i in range(12)]
    if where == "all":
        losses = [math.nan] * 12
    else:
        losses[where] = math.nan
    assert underfit_warning(_history(losses, _rising(12)), "top1") is None


def test_missing_or_nan_metric():
    losses = [2.0 * 0.8**i for i in range(12)]
    assert underfit_warning(_history(losses, _rising(12)), "mAP") is None  # the metric was never logged
    assert underfit_warning(_history(losses, [math.nan] * 12), "top1") is None
    scores = _rising(12)
    scores[3] = math.nan  # one failed evaluation does not hide the late peak
    assert "peaked at epoch 12 of 12" in underfit_warning(_history(losses, scores), "top1")


def test_missing_train_loss_column():
    history = _history([2.0 * 0.8**i for i in range(12)], _rising(12))
    del history[5]["train_loss"]
    assert underfit_warning(history, "top1") is None


def test_reads_the_history_csv_a_run_writes(tmp_path):
    """The rule runs on history.csv as read back (floats, empty cells dropped)."""
    history = _history([2.0 * 0.85**i for i in range(12)], _rising(12))
    history[0].pop("top1")  # a metric that appears in later epochs only: an empty cell
    write_history(tmp_path / "history.csv", history)
    warning = underfit_warning(read_history(tmp_path / "history.csv"), "top1")
    assert warning is not None and "--epochs 24" in warning


@pytest.mark.parametrize("accuracy, warns", [(0.52, True), (0.79, True), (0.81, False)])
def test_a_classifier_that_does_not_fit_its_training_images_is_underfitted(accuracy, warns):
    """A flat loss is not enough: a classifier that gets few of its own training images right did not fit them
    (tiny_cnn with the old defaults on textures_small ended at 70 %)."""
    history = [{"epoch": i + 1, "train_loss": 1.2, "train_accuracy": accuracy, "top1": 0.5} for i in range(20)]
    warning = underfit_warning(history, "top1")
    assert (warning is not None) is warns
    if warns:
        assert f"only {accuracy:.0%} of its own training images" in warning and "--epochs 40" in warning
