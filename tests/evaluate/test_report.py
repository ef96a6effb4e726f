"""Plots write valid PNGs in edge cases; the HTML report is self-contained and escapes user strings."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.evaluate.plots import plot_confusion_matrix, plot_history, plot_image_grid, plot_pr_curves
from cnnkit.evaluate.report import write_report


def assert_png(path: Path) -> np.ndarray:
    """A PNG that decodes and shows something (a blank canvas has no grey-level spread); its RGB pixels."""
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 0 and image.size[1] > 0
        image.load()
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert np.asarray(Image.fromarray(pixels.astype(np.uint8)).convert("L")).std() > 20, path
    # Atomic writes leave no temporary siblings behind.
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return pixels


def coloured(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels are (nearly) this colour."""
    return int((np.abs(pixels - np.array(rgb)).sum(-1) < tolerance).sum())


def differ(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels two same-sized pictures disagree on (the picture follows its data)."""
    assert a.shape == b.shape
    return float((a != b).any(-1).mean())


C0, C1, C2 = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # matplotlib's first three line colours (tab10)


HISTORY = [
    {"epoch": 1, "train_loss": 2.1, "val_loss": 2.3, "top1": 0.31, "macro_f1": 0.2, "lr": 0.1,
     "images_per_s": 950.0, "time": 12.0},
    {"epoch": 2, "train_loss": 1.4, "val_loss": 1.7, "top1": 0.52, "macro_f1": 0.45, "lr": 0.05,
     "images_per_s": 990.0, "time": 11.5},
    {"epoch": 3, "train_loss": 0.9, "val_loss": 1.2, "top1": 0.66, "macro_f1": 0.6, "lr": 0.01,
     "images_per_s": 1001.0, "time": 11.4},
]


@pytest.mark.parametrize(
    "history",
    [
        HISTORY,
        HISTORY[:1],
        [{"epoch": 1, "train_loss": 0.7}],  # no val_loss, metrics or lr
        [{"train_loss": "0.7", "val_loss": ""}, {"train_loss": "0.5", "val_loss": "0.6"}],  # raw CSV strings
        [{"epoch": 1}],  # nothing to draw at all
        [],
    ],
    ids=["full", "one-row", "missing-keys", "csv-strings", "epoch-only", "empty"],
)
def test_plot_history(tmp_path, history):
    out = plot_history(history, tmp_path / "history.png")
    assert out == tmp_path / "history.png"
    pixels = assert_png(out)
    has_series = any(k != "epoch" and str(v) != "" for row in history for k, v in row.items())
    # the first series is drawn in C0 (line, markers and legend); with nothing to draw, no line at all
    assert (coloured(pixels, C0) > 50) if has_series else coloured(pixels, C0) == 0


def test_plot_history_follows_the_data_and_grows_with_panels(tmp_path):
    full = assert_png(plot_history(HISTORY, tmp_path / "full.png"))  # loss, metric and lr panels
    other = [{**row, "train_loss": 3.0 - row["train_loss"]} for row in HISTORY]
    assert differ(full, assert_png(plot_history(other, tmp_path / "other.png"))) > 0.005
    losses_only = assert_png(plot_history([{"epoch": 1, "train_loss": 0.7}], tmp_path / "one.png"))  # one panel
    assert full.shape[1] > 2.5 * losses_only.shape[1] and full.shape[0] == pytest.approx(losses_only.shape[0], abs=10)


@pytest.mark.parametrize("n", [3, 120])
@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix(tmp_path, n, normalize):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 20, size=(n, n)) + np.eye(n, dtype=int) * 50
    matrix[0] = 0  # a class with no samples must not divide by zero
    names = [f"class_{i}" for i in range(n)]
    out = plot_confusion_matrix(matrix, names, tmp_path / "cm.png", normalize=normalize)
    pixels = assert_png(out)
    # the cells show the counts: the transposed matrix is another picture
    transposed = assert_png(plot_confusion_matrix(matrix.T, names, tmp_path / "cm_t.png", normalize=normalize))
    assert differ(pixels, transposed) > 0.1
    # the figure grows with the classes: 120 classes get about five times the side of 3
    side = {3: 500, 120: 2400}[n]
    assert side <= pixels.shape[0] <= side * 1.2 and side <= pixels.shape[1] <= side * 1.3, pixels.shape


def test_plot_confusion_matrix_rejects_non_square(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((3, 4)), ["a", "b", "c"], tmp_path / "cm.png")


@pytest.mark.parametrize("n", [0, 3, 25])
def test_plot_pr_curves(tmp_path, n):
    recall = np.linspace(1.0, 0.0, 11)
    curves = {f"class {i}": (recall, np.linspace(0.3, 1.0, 11) - 0.01 * i, 0.5 + i / 100) for i in range(n)}
    pixels = assert_png(plot_pr_curves(curves, tmp_path / "pr.png"))
    if n == 0:  # "no curves": no line drawn
        assert coloured(pixels, C0) == coloured(pixels, C1) == 0
        return
    lowered = {name: (r, p - 0.25, ap) for name, (r, p, ap) in curves.items()}
    assert differ(pixels, assert_png(plot_pr_curves(lowered, tmp_path / "lower.png"))) > 0.005
    if n == 3:  # each class's curve in its own colour, not only its legend entry (about 40 pixels)
        assert min(coloured(pixels, colour) for colour in (C0, C1, C2)) > 300


def test_plot_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(9)]
    images.append(rng.integers(0, 256, size=(28, 28), dtype=np.uint8))  # grayscale
    titles = [f"pred {i} (0.97)\ntrue {i}" for i in range(10)]
    wrong = [i % 3 == 0 for i in range(10)]
    grid = assert_png(plot_image_grid(images, titles, tmp_path / "grid.png", wrong=wrong, columns=4))
    few = assert_png(plot_image_grid(images[:2], titles[:2], tmp_path / "few.png"))
    # the noise images themselves are drawn (a figure of captions has a handful of colours) ...
    assert len(np.unique(few.reshape(-1, 3), axis=0)) > 1000
    # ... three rows of four against one row of two ...
    assert grid.shape[0] > 2.5 * few.shape[0] and grid.shape[1] > 1.8 * few.shape[1]
    # ... and the wrong ones framed and captioned in red (the noise has some red pixels of its own)
    plain = assert_png(plot_image_grid(images, titles, tmp_path / "plain.png", columns=4))
    assert coloured(grid, (255, 0, 0), 60) > coloured(plain, (255, 0, 0), 60) + 4 * 400


def test_plot_image_grid_empty(tmp_path):
    pixels = assert_png(plot_image_grid([], [], tmp_path / "empty.png"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) < 300  # the words "no images", not a picture


def test_write_report(tmp_path):
    plots = [
        plot_history(HISTORY, tmp_path / "history.png"),
        plot_confusion_matrix(np.eye(3) * 5 + 1, ["cat", "dog", "<script>"], tmp_path / "confusion_matrix.png"),
    ]
    metrics = {"top1": 0.912345, "loss": np.float32(0.25), "epochs": 3, "lr": 1e-5,
               "per_class": {"cat": {"f1": 0.9}}, "confusion": np.eye(3)}
    per_class = {
        "cat": {"precision": 0.91, "recall": 0.88, "support": 40},
        "<script>alert(1)</script>": {"precision": 0.5, "recall": 0.25, "support": 4},
    }
    config = {"model": "resnet18", "data": {"root": "/data/<pets> & co"}, "epochs": 3, "tags": ["a", "b"]}
    out = write_report(tmp_path / "report.html", "Run <exp>", config, metrics, plots,
                       per_class=per_class, notes=["watch out: 2 < 3 & done"])
    assert out == tmp_path / "report.html"
    html = out.read_text(encoding="utf-8")

    assert html.count("data:image/png;base64,") == len(plots)
    assert "history" in html and "confusion matrix" in html  # captions from stems
    assert "0.9123" in html and "0.2500" in html and "1e-05" in html
    assert ">3<" in html
    assert "0.9100" in html and "0.2500" in html and ">40<" in html

    # User strings are escaped, never raw markup.
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Run &lt;exp&gt;" in html
    assert "/data/&lt;pets&gt; &amp; co" in html and "data.root" in html
    assert "2 &lt; 3 &amp; done" in html

    # Self-contained: no external fetches, no JavaScript.
    assert 'src="http' not in html and "href=" not in html and "@import" not in html and "url(" not in html
    assert re.search(r"<details>\s*<summary>Configuration</summary>", html)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_report_minimal_and_missing_plot(tmp_path):
    out = write_report(tmp_path / "sub" / "r.html", "t", {}, {}, [tmp_path / "nope.png"])
    html = out.read_text(encoding="utf-8")
    assert "missing plot: nope.png" in html
    assert "data:image/png;base64," not in html
