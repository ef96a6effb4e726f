"""`cnnkit ocr train|val|predict`: a real (short) training on digit lines, and the one-line errors of bad data."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from cnnkit.errors import CnnkitError
from cnnkit.tasks.ocr.api import TextRecognizer, build_crnn
from cnnkit.tasks.ocr.config import OcrConfig
from cnnkit.tasks.ocr.data import load_line_data, read_labels
from conftest import run_cli

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def digit_lines(root: Path, counts=(("train", 360), ("val", 40)), seed: int = 0) -> Path:
    """Lines of 3-7 digits in DejaVu Sans, dark on light, 32 px high."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            text = "".join(rng.choice(list("0123456789"), rng.integers(3, 8)))
            font = ImageFont.truetype(str(FONT), int(rng.integers(22, 30)))
            left, top, right, bottom = font.getbbox(text)
            image = Image.new("RGB", (right - left + 12, 32), tuple(int(v) for v in rng.integers(200, 256, 3)))
            ImageDraw.Draw(image).text((6 - left, (32 - (bottom - top)) // 2 - top), text, font=font,
                                       fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
            name = f"images/{i:05d}.png"
            image.save(root / split / name)
            rows.append(f"{name}\t{text}")
        (root / split / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_training_reads_digit_lines_far_better_than_an_untrained_model(tmp_path):
    data = digit_lines(tmp_path / "digits")
    untrained = TextRecognizer("crnn_conv")
    untrained.class_names = list("0123456789")
    torch.manual_seed(0)
    untrained.model = build_crnn("crnn_conv", 11)
    before = untrained.val(str(data), out=tmp_path / "before", workers=0, device="cpu")
    rec = TextRecognizer("crnn_conv")
    run = rec.train(str(data), epochs=4, batch=16, workers=0, out=str(tmp_path / "run"), device="cpu")
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert before["cer"] > 0.8
    assert metrics["cer"] < 0.1 and metrics["line_accuracy"] > 0.7, metrics
    assert (run.dir / "plots" / "worst_lines.png").is_file() and (run.dir / "report.html").is_file()
    # the weights alone: val (greedy and beam agree on a confident model) and predict
    weights = run.dir / "weights" / "best.safetensors"
    loaded = TextRecognizer.load(weights)
    assert loaded.class_names == list("0123456789")
    beam = loaded.val(str(data), out=tmp_path / "beam", workers=0, device="cpu", beam=4)
    assert beam["cer"] == pytest.approx(metrics["cer"], abs=0.02)
    truths = dict(line.split("\t") for line in (data / "val" / "labels.tsv").read_text().splitlines())
    code, out, err = run_cli(["ocr", "predict", data / "val" / "images", "--weights", weights, "--save-json", tmp_path / "p.json"])
    assert code == 0, err
    readings = json.loads((tmp_path / "p.json").read_text())
    assert len(readings) == 40 and {"file", "text", "score"} == set(readings[0])
    right = sum(r["text"] == truths["images/" + Path(r["file"]).name] for r in readings)
    assert right >= 28
    # ONNX with a dynamic width (and batch): lines of every width read as the weights read them
    code, _, err = run_cli(["export", "--weights", weights, "--format", "onnx", "--dynamic-batch", "--out", tmp_path / "rec.onnx"])
    assert code == 0, err
    onnx = TextRecognizer.load(tmp_path / "rec.onnx")
    assert onnx.val(str(data), out=tmp_path / "onnx_val", workers=0, device="cpu")["cer"] == pytest.approx(metrics["cer"], abs=1e-4)
    wide, narrow = TextRecognizer.load(weights).predict(data / "val" / "images"), onnx.predict(data / "val" / "images")
    assert [r["text"] for r in wide] == [r["text"] for r in narrow]
    # int8 through ONNX Runtime, calibrated on the lines, still reads them
    code, _, err = run_cli(["quantize", "--weights", weights, "--data", data, "--backend", "onnx", "--calib-images", "32",
                            "--out", tmp_path / "rec.int8.onnx"])
    assert code == 0, err
    int8 = TextRecognizer.load(tmp_path / "rec.int8.onnx").val(str(data), out=tmp_path / "int8_val", workers=0, device="cpu")
    assert int8["cer"] < metrics["cer"] + 0.05


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_labels_are_one_line_errors_naming_file_and_line(tmp_path):
    data = digit_lines(tmp_path / "d", counts=(("train", 3),))
    labels = data / "train" / "labels.tsv"
    good = labels.read_text().splitlines()
    write(labels, "\n".join([good[0], "images/00001.png 123"]))
    with pytest.raises(CnnkitError, match=r"labels.tsv:2: no tab"):
        read_labels(labels)
    write(labels, "\n".join([good[0], "images/missing.png\t123"]))
    with pytest.raises(CnnkitError, match=r"labels.tsv:2: image images/missing.png does not exist"):
        read_labels(labels)
    Image.new("RGB", (40, 1)).save(data / "train" / "images" / "thin.png")
    write(labels, "images/thin.png\t7")
    with pytest.raises(CnnkitError, match=r"labels.tsv:1: image images/thin.png is 40 x 1 pixels"):
        read_labels(labels)
    name = good[0].split("\t")[0]
    write(labels, "\n".join([f"{name}\t0123", f"{name}\t3209"]))  # '9' is not in the charset file
    charset = write(tmp_path / "charset.txt", "0123")
    cfg = OcrConfig(data=str(data), charset=str(charset))
    with pytest.raises(CnnkitError, match=r"labels.tsv:2: characters outside the charset: '9'"):
        load_line_data(cfg, data)
    code, _, err = run_cli(["ocr", "train", "--data", data, "--fliplr", "0.5"])
    assert code == 2 and "a flipped line is not text" in err


def test_detector_weights_are_refused_as_a_recogniser(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "det.safetensors"
    save_file({"w": torch.zeros(1)}, str(weights), metadata={"format": "cnnkit", "task": json.dumps("detect"),
                                                                 "model": json.dumps("yolo_n")})
    code, _, err = run_cli(["ocr", "val", "--weights", weights, "--data", tmp_path])
    assert code == 2 and "not 'ocr'" in err and "\n" not in err.strip()
