"""What a finished run's history says about its training: a run that stopped while it was still learning
(underfitted) gets one warning with the fix, on the console and in report.html. Read from history.csv, so
it serves every task.

The rule: over the last quarter of the epochs (at least 3)
the training loss still fell by at least STILL_FALLING of its value, and the validation metric peaked in the
last tenth of the run. Either alone is common in a finished run (the loss keeps creeping down as the
learning rate anneals; a metric's best epoch lands late by chance); both together mean more epochs would
have paid. A classifier also logs its accuracy on the training batches (train_accuracy): below
FITS_TRAINING in the last epoch it has not fitted its own data, however flat the loss. On the quality
suite's runs (docs/recipes.md) it stayed quiet on the converged cells runs (train accuracy 0.99) and spoke
on the objects_lt runs whose loss still fell 23-25 % over the last 5 epochs and the textures_small runs
that ended at 70-79 % train accuracy, the runs that trailed the plain loop.
"""

from __future__ import annotations

import math
from typing import Any

STILL_FALLING = 0.15  # relative drop of the training loss over the last quarter of the run
LATE_BEST = 0.1  # the best epoch within the last tenth of the run (and the last epoch at the least)
FITS_TRAINING = 0.8  # a classifier that gets fewer of its own (augmented) training images right did not fit them


def underfit_warning(history: list[dict[str, Any]], metric: str, best_epoch: int | None = None) -> str | None:
    """One line naming the evidence and the fix, or None when the run does not look underfitted. The best epoch
    is where ``metric`` peaks in the history, or ``best_epoch`` (the one best.safetensors holds) when given."""
    epochs = len(history)
    if epochs < 4 or not all("train_loss" in row for row in history):
        return None
    accuracy = float(history[-1].get("train_accuracy", "nan"))
    if math.isfinite(accuracy) and accuracy < FITS_TRAINING:
        return (f"the run ended underfitted: the model gets only {accuracy:.0%} of its own training images right in the "
                f"last epoch; train longer (--epochs {2 * epochs}), with a higher learning rate (--lr auto runs a range "
                f"test) or a larger model")
    window = max(3, epochs // 4)
    first, last = float(history[-window]["train_loss"]), float(history[-1]["train_loss"])
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0:
        return None
    drop = (first - last) / first
    if drop < STILL_FALLING:
        return None
    if best_epoch is None:
        scores = [float(row.get(metric, float("nan"))) for row in history]
        if not any(math.isfinite(s) for s in scores):
            return None
        best_epoch = max(range(epochs), key=lambda i: scores[i] if math.isfinite(scores[i]) else -math.inf) + 1
    best = best_epoch
    if best < epochs - max(1, round(LATE_BEST * epochs)) + 1:
        return None
    return (f"the run ended underfitted: the training loss still fell {drop:.0%} over the last {window} epochs and "
            f"val {metric} peaked at epoch {best} of {epochs}; train longer (--epochs {2 * epochs}) or with a higher "
            f"learning rate (--lr auto runs a range test)")
