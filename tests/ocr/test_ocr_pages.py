"""Pages: DBNet trained for real on drawn pages, page reading through the CLI, and the one-line errors of bad
detection labels."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from cnnkit.errors import CnnkitError
from cnnkit.tasks.ocr.detect_data import read_det_labels
from conftest import run_cli

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
WORDS = ["total", "paid", "invoice", "12.50", "north", "gate 7", "open", "2026-05-01", "exit", "milk 1 l"]


def drawn_pages(root: Path, counts=(("train", 48), ("val", 12)), size=(320, 240), seed: int = 0) -> Path:
    """Pages of 2-5 dark words on light grounds, one per row, with their boxes in det_labels.tsv."""
    rng = np.random.default_rng(seed)
    for split, count in counts:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(190, 256, 3)))
            draw = ImageDraw.Draw(image)
            labels, y = [], int(rng.integers(8, 30))
            for _ in range(int(rng.integers(2, 6))):
                text = str(rng.choice(WORDS))
                font = ImageFont.truetype(str(FONT), int(rng.integers(16, 28)))
                left, top, right, bottom = font.getbbox(text)
                x = int(rng.integers(8, size[0] - (right - left) - 8))
                if y + bottom - top > size[1] - 8:
                    break
                draw.text((x - left, y - top), text, font=font, fill=tuple(int(v) for v in rng.integers(0, 70, 3)))
                box = [[x, y], [x + right - left, y], [x + right - left, y + bottom - top], [x, y + bottom - top]]
                labels.append({"transcription": text, "points": box})
                y += int((bottom - top) * rng.uniform(1.6, 2.4))
            name = f"images/{i:04d}.png"
            image.save(root / split / name)
            rows.append(f"{name}\t{json.dumps(labels)}")
        (root / split / "det_labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.mark.slow
def test_dbnet_learns_to_find_lines_far_better_than_untrained(tmp_path):
    from cnnkit.tasks.ocr.detector import TextDetector, build_dbnet

    data = drawn_pages(tmp_path / "pages")
    untrained = TextDetector("dbnet", imgsz=320)
    untrained.model = build_dbnet("dbnet")
    before = untrained.val(str(data), out=tmp_path / "before", device="cpu")
    det = TextDetector("dbnet", imgsz=320)
    run = det.train(str(data), epochs=12, batch=8, workers=0, out=str(tmp_path / "run"), device="cpu", lr=0.004)
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert before["hmean"] < 0.2
    assert metrics["hmean"] > 0.8, metrics
    assert (run.dir / "report.html").is_file() and (run.dir / "plots" / "page_1.png").is_file()
    weights = run.dir / "weights" / "best.safetensors"
    # pages through the CLI: boxes in reading order (no recogniser given: the detector alone would need one)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 200), (240, 240, 240)).save(blank)
    page = data / "val" / "images" / "0000.png"
    truth = json.loads((data / "val" / "det_labels.tsv").read_text().splitlines()[0].split("\t")[1])
    found = TextDetector.load(weights).predict([page, blank], device="cpu")
    assert found[1] == {"file": str(blank), "lines": []}  # a page with no text is an empty list
    tops = [line["points"][0][1] for line in found[0]["lines"]]
    assert tops == sorted(tops) and len(found[0]["lines"]) == len(truth)
    code, _, err = run_cli(["ocr", "predict", page, "--det", weights, "--rec", weights])
    assert code == 2 and "--rec" in err and "text detector" in err and "\n" not in err.strip()
    code, _, err = run_cli(["ocr", "val", "--weights", weights, "--data", data])
    assert code == 0, err
    # exported to ONNX (a fixed square input), the detector finds the same lines
    code, _, err = run_cli(["export", "--weights", weights, "--format", "onnx", "--out", tmp_path / "det.onnx"])
    assert code == 0, err
    exported = TextDetector.load(tmp_path / "det.onnx").predict([page], device="cpu")
    assert len(exported[0]["lines"]) == len(found[0]["lines"])


def test_bad_detection_labels_are_one_line_errors(tmp_path):
    data = drawn_pages(tmp_path / "d", counts=(("train", 2),))
    labels = data / "train" / "det_labels.tsv"
    good = labels.read_text().splitlines()
    name = good[0].split("\t")[0]

    def check(row: str, pattern: str) -> None:
        labels.write_text("\n".join([good[0], row]) + "\n", encoding="utf-8")
        with pytest.raises(CnnkitError, match=pattern) as caught:
            read_det_labels(labels)
        assert "\n" not in str(caught.value)

    check(f"{name} []", r"det_labels.tsv:2: no tab")
    check(f"{name}\t[{{\"points\": ", r"det_labels.tsv:2: the labels of .* are not JSON")
    check(f"{name}\t{{}}", r"det_labels.tsv:2: .* must be a JSON list")
    check(f"{name}\t[{{\"transcription\": \"a\", \"points\": [[1, 2], [3, 4]]}}]", r"det_labels.tsv:2: text 0 .* at least 4")
    check("images/none.png\t[]", r"det_labels.tsv:2: image images/none.png does not exist")


def test_synth_pages_are_reproducible_and_labelled(tmp_path):
    from cnnkit.data.synth_text_pages import synth_text_pages

    a = synth_text_pages(tmp_path / "a", n=4, fonts="DejaVu*", seed=3, progress=False)
    synth_text_pages(tmp_path / "b", n=4, fonts="DejaVu*", seed=3, progress=False)
    assert a["pages"] == {"train": 3, "val": 1} and a["lines"] > 4
    for split in ("train", "val"):
        assert (tmp_path / "a" / split / "det_labels.tsv").read_bytes() == (tmp_path / "b" / split / "det_labels.tsv").read_bytes()
    pages = read_det_labels(tmp_path / "a" / "train" / "det_labels.tsv")
    for page in pages:
        with Image.open(page.path) as im:
            w, h = im.size
        for polygon, text in zip(page.polygons, page.texts):
            assert text and polygon.shape == (4, 2)
            assert (polygon[:, 0] >= 0).all() and (polygon[:, 0] < w).all() and (polygon[:, 1] < h).all()


def test_shipped_models_read_held_out_pages_and_lines_offline(tmp_path):
    """`cnnkit ocr predict` with no weights: the detector and recogniser inside the package read a page drawn in
    font families both were trained without."""
    from cnnkit.data.synth_text_pages import synth_text_pages
    from cnnkit.evaluate.text import text_scores
    from cnnkit.tasks.ocr.detect_post import polygon_iou

    synth_text_pages(tmp_path / "pages", n=6, fonts="Liberation*,Nimbus*", seed=7, progress=False)
    pages = read_det_labels(tmp_path / "pages" / "train" / "det_labels.tsv")
    code, _, err = run_cli(["ocr", "predict", *[p.path for p in pages], "--save-json", tmp_path / "pages.json",
                            "--out", tmp_path / "out"])
    assert code == 0, err
    found = json.loads((tmp_path / "pages.json").read_text())
    assert len(found) == len(pages) and all((tmp_path / "out" / "overlays" / (p.path.stem + ".png")).is_file() for p in pages)
    readings, truths = [], []
    for page, result in zip(pages, found):
        for polygon, text in zip(page.polygons, page.texts):  # each drawn line: the reading of the box that covers it
            best = max(result["lines"], key=lambda line: polygon_iou(np.asarray(line["points"]), polygon), default=None)
            readings.append(best["text"] if best and polygon_iou(np.asarray(best["points"]), polygon) >= 0.5 else "")
            truths.append(text)
    assert text_scores(readings, truths)["cer"] < 0.1, list(zip(readings, truths))
    # --lines: each image one line; a 1-pixel-high image is a one-line error naming it
    line = tmp_path / "line.png"
    Image.fromarray(np.asarray(Image.open(pages[0].path))[:60]).save(line)
    code, out, err = run_cli(["ocr", "predict", line, "--lines"])
    assert code == 0, err
    Image.new("RGB", (50, 1)).save(tmp_path / "thin.png")
    code, _, err = run_cli(["ocr", "predict", tmp_path / "thin.png", "--lines"])
    assert code == 2 and "thin.png: the image is 50 x 1 pixels" in err and "\n" not in err.strip()
