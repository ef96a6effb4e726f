"""benchmarks/detect_recipes.py: its plain loop (torchvision's detection reference recipe) trains and scores, a
finished run is skipped when the script runs again, and the table copes with a plain score of 0."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "detect_recipes.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("detect_recipes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_plain_loop_scores_and_a_finished_run_is_skipped(bench, cnnkit_home, tmp_path, monkeypatch):
    results = tmp_path / "detect_recipes.jsonl"
    argv = ["--datasets", "shapes", "--n", "8", "--imgsz", "96", "--epochs", "1", "--seeds", "0", "--only", "plain",
            "--results", str(results), "--runs", str(tmp_path / "runs")]
    plain_loop = bench.plain_loop
    monkeypatch.setattr(bench, "plain_loop", lambda root, epochs, imgsz, seed: plain_loop(root, epochs, imgsz, seed, workers=0))
    bench.main(argv)
    rows = bench.read_results(results)
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["method"], row["n"], row["epochs"], row["imgsz"]) == ("shapes", "plain", 8, 1, 96)
    assert 0.0 <= row["map"] <= row["map50"] <= 1.0
    assert row["train_images"] == 6  # 8 images, 2 of them val
    assert (cnnkit_home / "datasets" / "detect_suite" / "shapes_n8_96" / "annotations" / "val.json").is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(bench, "plain_loop", must_not_run)
    bench.main(argv)
    assert bench.read_results(results) == rows


def test_is_done_matches_every_key_field(bench):
    row = {"dataset": "cells", "n": 160, "seed": 0, "method": "cnnkit", "label": "defaults", "epochs": 12, "imgsz": 256,
           "map": 0.3}
    key = {k: v for k, v in row.items() if k != "map"}
    assert bench.is_done([row], key)
    assert not bench.is_done([row], {**key, "seed": 1})
    assert not bench.is_done([row], {**key, "label": "lr2e-3"})
    assert not bench.is_done([row], {**key, "n": 320})


def test_report_with_a_zero_plain_score(bench, capsys):
    base = {"n": 24, "epochs": 1, "imgsz": 128}
    rows = [{**base, "dataset": "shapes", "seed": 0, "method": "plain", "label": "plain", "map": 0.0, "map50": 0.2},
            {**base, "dataset": "shapes", "seed": 0, "method": "cnnkit", "label": "defaults", "map": 0.1, "map50": 0.3}]
    bench.report(rows, ["shapes", "cells"], [0], 24, 1, 128, "defaults")
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("shapes"))
    assert "1.50" in line and "inf" in line
    assert not any(line.startswith("cells") for line in out.splitlines())
