"""Plots write valid PNGs in edge cases; the HTML report is self-contained and escapes user strings."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.evaluate.plots import plot_confusion_matrix, plot_history, plot_image_grid, plot_pr_curves
from cnnkit.evaluate.report import write_report


def assert_png(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 0 and image.size[1] > 0
        image.load()
    # Atomic writes leave no temporary siblings behind.
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


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
    assert_png(out)


@pytest.mark.parametrize("n", [3, 120])
@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix(tmp_path, n, normalize):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 20, size=(n, n)) + np.eye(n, dtype=int) * 50
    matrix[0] = 0  # a class with no samples must not divide by zero
    names = [f"class_{i}" for i in range(n)]
    out = plot_confusion_matrix(matrix, names, tmp_path / "cm.png", normalize=normalize)
    assert_png(out)


def test_plot_confusion_matrix_rejects_non_square(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((3, 4)), ["a", "b", "c"], tmp_path / "cm.png")


@pytest.mark.parametrize("n", [0, 3, 25])
def test_plot_pr_curves(tmp_path, n):
    recall = np.linspace(1.0, 0.0, 11)
    curves = {f"class {i}": (recall, np.linspace(0.3, 1.0, 11), 0.5 + i / 100) for i in range(n)}
    assert_png(plot_pr_curves(curves, tmp_path / "pr.png"))


def test_plot_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(9)]
    images.append(rng.integers(0, 256, size=(28, 28), dtype=np.uint8))  # grayscale
    titles = [f"pred {i} (0.97)\ntrue {i}" for i in range(10)]
    wrong = [i % 3 == 0 for i in range(10)]
    assert_png(plot_image_grid(images, titles, tmp_path / "grid.png", wrong=wrong, columns=4))
    assert_png(plot_image_grid(images[:2], titles[:2], tmp_path / "few.png"))


def test_plot_image_grid_empty(tmp_path):
    assert_png(plot_image_grid([], [], tmp_path / "empty.png"))


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
