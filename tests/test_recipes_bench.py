"""benchmarks/recipes.py's table: the mean ratio, cnnkit's worst seed against the plain loop's mean, and the
seed-matched minimum beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("recipes_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_ratios(capsys):
    bench = load_bench()
    base = {"dataset": "textures", "epochs": 20, "imgsz": 48}
    plain = [0.80, 0.60, 0.70]  # mean 0.70
    cnnkit = [0.70, 0.75, 0.74]  # mean 0.73; worst 0.70 is 1.0x the plain mean, but 0.875x plain's seed 0
    rows = [{**base, "seed": s, "method": m, "label": "plain" if m == "plain" else "defaults", "top1": t, "macro_f1": t}
            for m, tops in (("plain", plain), ("cnnkit", cnnkit)) for s, t in enumerate(tops)]
    bench.report(rows, ["textures", "cells"], [0, 1, 2], 20, 48, "defaults")
    lines = capsys.readouterr().out.splitlines()
    values = next(line for line in lines if line.startswith("textures")).split()[1:6]
    assert values == ["0.700", "0.730", "1.043", "1.000", "0.875"]  # plain, cnnkit, ratio, worst, paired
    assert not any(line.startswith("cells") for line in lines)  # no rows for cells: no line
