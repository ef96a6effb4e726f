"""Observers of the training loop. They display and record; they never change the math.

    for epoch in epochs:                  progress.start_epoch(epoch, steps)
        for batch in loader:
            loss, backward, step          progress.advance(images, loss)
        evaluate                          (evaluation shows its own transient bar)
        history row, checkpoint           progress.end_epoch(row) -> one summary line
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from rich.progress import Progress

from cnnkit.console import console, progress_bar
from cnnkit.engine.rundir import write_text


class EpochProgress:
    """A progress bar per epoch with loss, images/s and ETA, then a one-line summary.

    The bar is redrawn from the training thread at most every ``interval`` seconds: a refresh
    thread would compete with training for the CPU, which on a 2-core laptop costs a few percent.
    """

    def __init__(self, enabled: bool, epochs: int, interval: float = 0.25):
        self.enabled = enabled
        self.epochs = epochs
        self.interval = interval
        self._progress: Progress | None = None
        self._task = None
        self._pending = 0
        self._last_draw = 0.0
        self.loss: float | None = None
        self.images = 0
        self.started = 0.0

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.images = 0
        self._pending = 0
        self.started = self._last_draw = time.perf_counter()
        if not self.enabled:
            return
        self._progress = progress_bar(transient=True, auto_refresh=False)
        self._progress.start()
        self._task = self._progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, info="", rate="")

    def due(self) -> bool:
        """Is a redraw due? (The loop reads the loss, a device sync, only then.)"""
        return self._progress is not None and time.perf_counter() - self._last_draw >= self.interval

    def advance(self, images: int, loss: float | None = None) -> None:
        self.images += images
        self._pending += 1
        if self._progress is None or loss is None:
            return
        self._progress.update(self._task, advance=self._pending, info=f"loss {loss:.4f}",
                              rate=f"{self.images_per_s():.0f} img/s")
        self._pending = 0
        self._last_draw = time.perf_counter()
        self._progress.refresh()

    def images_per_s(self) -> float:
        return self.images / max(time.perf_counter() - self.started, 1e-9)

    def close(self) -> None:
        """Take the bar off the screen (the epoch ends without a summary: the run stops inside it)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def end_epoch(self, row: dict[str, float], best: bool, metric: str) -> None:
        self.close()
        if not self.enabled:
            return
        shown = [k for k in row if "loss" in k or k == "train_accuracy"] + [metric]  # accuracy: a classifier's fit
        parts = [f"epoch {int(row['epoch'])}/{self.epochs}"] + [f"{k} {row[k]:.4f}" for k in shown if k in row]
        parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.0f} img/s", f"{row['time']:.1f}s"]
        console.print("  ".join(parts) + ("  [green]*best[/]" if best else ""), soft_wrap=True)


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """history.csv with the union of all columns (a metric can appear in later epochs only)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
