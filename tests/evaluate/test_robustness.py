"""`cnnkit robustness`: robustness.json as DESIGN.md states it, numbers that add up, runs that reproduce
whatever the batch size, the occlusion map, and one-line errors. One tiny_cnn is trained for real
(2 epochs on digits at 16 px, a few seconds) for the whole module; the CLI runs in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from cnnkit import Classifier
from cnnkit.evaluate.robustness import summarise

IMGSZ = 16
FAST = ["--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(digits_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("robustness") / "run"
    run = Classifier("tiny_cnn", imgsz=IMGSZ).train(data="digits", epochs=2, batch=64, lr=0.003, fliplr=0.0, workers=0,
                                                     seed=0, out=str(run_dir))
    assert run.metrics["top1"] > 0.8  # a model that reads digits, so that corrupting them costs something
    return run_dir / "weights" / "best.safetensors"


def one_error_line(result) -> str:
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("cnnkit: ") and "Traceback" not in err + out, err
    return lines[0]


def test_cli_writes_robustness_json_plots_and_report(trained, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rb"
    code, stdout, err = run_cli(["robustness", "--weights", trained, "--corruptions", "occlusion_solid,dark",
                                 "--severities", "1,5", "--out", out, *FAST], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads((out / "robustness.json").read_text())
    # DESIGN.md: {"clean": {metric: value}, "corruptions": {family: {corruption: [value per severity]}}, "relative_drop": {family: value}}
    assert {"clean", "corruptions", "relative_drop", "relative_corruption_error"} <= result.keys()
    assert result["metric"] == "top1" and result["severities"] == [1, 5] and result["images"] == 359
    assert result["corruptions"].keys() == result["relative_drop"].keys() == {"occlusion", "illumination"}
    assert result["corruptions"]["occlusion"].keys() == {"occlusion_solid"}
    clean = result["clean"]["top1"]
    assert clean > 0.8 and {"top5", "macro_f1", "balanced_accuracy"} <= result["clean"].keys()
    for family, table in result["corruptions"].items():
        for name, values in table.items():
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
            assert values[1] <= values[0] and values[1] < clean, (name, clean, values)  # severity 5 hurts
        # the summaries follow from the numbers in the file
        scores = np.array([v for values in table.values() for v in values])
        assert result["relative_drop"][family] == pytest.approx(np.mean((clean - scores) / clean))
        clean_error = max(1 - clean, 1 / result["images"])
        assert result["relative_corruption_error"][family] == pytest.approx((np.mean(1 - scores) - clean_error) / clean_error)
    assert result["corruptions"]["occlusion"]["occlusion_solid"][1] < 0.6  # half the digit hidden
    for name in ("plots/severity_curves.png", "plots/examples.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG" and np.asarray(png.convert("L")).std() > 20
    report = (out / "report.html").read_text()
    assert "occlusion_solid" in report and "relative_drop occlusion" in report
    for word in ("occlusion_solid", "dark", "s5"):
        assert word in stdout
    assert "relative drop" in err


def test_runs_reproduce_whatever_the_batch_and_default_out(trained, tmp_path):
    clf = Classifier.load(trained)
    options = {"corruptions": ["occlusion_texture"], "severities": [3], "seed": 1, "workers": 0, "device": "cpu"}
    first = clf.robustness(out=tmp_path / "a", batch=64, **options)
    again = clf.robustness(batch=7, **options)  # default out: robustness/ beside the run
    assert (trained.parent.parent / "robustness" / "robustness.json").is_file()
    assert first["corruptions"] == again["corruptions"] and first["clean"] == again["clean"]


def test_summaries_guard_a_perfect_and_a_useless_model():
    values = {"noise": {"a": [1.0, 0.5], "b": [0.75, 0.75]}}
    perfect = summarise(1.0, values, images=100)
    assert perfect["relative_drop"]["noise"] == pytest.approx(0.25)
    assert perfect["relative_corruption_error"]["noise"] == pytest.approx((0.25 - 0.01) / 0.01)  # clean error floored at 1/100
    useless = summarise(0.0, {"noise": {"a": [0.0]}}, images=10)
    assert useless["relative_drop"]["noise"] is None and useless["relative_corruption_error"]["noise"] == 0.0


def test_occlusion_map_api_and_cli(trained, digits_root, tmp_path, monkeypatch, capsys):
    image = sorted((digits_root / "test" / "3").glob("*.png"))[0]
    clf = Classifier.load(trained)
    r = clf.occlusion_map(image, out=tmp_path / "om", device="cpu")
    assert r["map"].shape == (IMGSZ, IMGSZ) and r["map"].dtype == np.float32
    assert r["target"] == r["label"] and 0 < r["score"] <= 1
    assert r["map"].max() > 0.01  # hiding part of the digit costs the class some probability
    arrays = np.load(r["npz"])
    assert arrays["grid"].ndim == 2 and int(arrays["target"]) == clf.class_names.index(r["target"])
    with Image.open(r["png"]) as png:
        assert png.format == "PNG" and np.asarray(png.convert("L")).std() > 20
    other = clf.occlusion_map(image, out=tmp_path / "om2", target="8", patch=0.5, stride=0.25, device="cpu")
    assert other["target"] == "8" and np.load(other["npz"])["grid"].shape == (3, 3)  # squares at 0, 4, 8 px

    code, stdout, err = run_cli(["robustness", "--weights", trained, "--occlusion-map", image, "--out", tmp_path / "cli",
                                 "--target", "3", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "cli" / f"{image.stem}_occlusion.png").is_file() and "map of 3" in err


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.safetensors"
    assert str(missing) in one_error_line(run_cli(["robustness", "--weights", missing], monkeypatch, capsys))
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"not a png at all")
    line = one_error_line(run_cli(["robustness", "--weights", trained, "--occlusion-map", garbage], monkeypatch, capsys))
    assert str(garbage) in line and "cannot read image" in line
    line = one_error_line(run_cli(["robustness", "--weights", trained, "--severities", "1,7"], monkeypatch, capsys))
    assert "severity must be 1 to 5, got 7" in line
    assert "--severities" in one_error_line(run_cli(["robustness", "--weights", trained, "--severities", "1,x"], monkeypatch, capsys))
    line = one_error_line(run_cli(["robustness", "--weights", trained, "--families", "occlusion,ilumination"], monkeypatch, capsys))
    assert "ilumination" in line and "did you mean 'illumination'" in line
    image = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert "--patch" in one_error_line(run_cli(["robustness", "--weights", trained, "--occlusion-map", image, "--patch", "1.5",
                                                "--out", tmp_path / "x"], monkeypatch, capsys))
    assert "--target 'cat'" in one_error_line(run_cli(["robustness", "--weights", trained, "--occlusion-map", image, "--target", "cat",
                                                       "--out", tmp_path / "x"], monkeypatch, capsys))
    assert "no 'test2' split" in one_error_line(run_cli(["robustness", "--weights", trained, "--split", "test2"], monkeypatch, capsys))
