"""Predict verbs that write a file per input overwrite nothing: DICOM series that repeat file names
(a/IM0001.dcm, b/IM0001.dcm), x.jpg beside x.png, the same name given twice; every JSON row names its own
output. Also: classify and detect predict advance a progress bar per image. Untrained networks suffice:
the checks are about which file goes where (each output has its own input's size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cnnkit_here, write_dicom


def _image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """An RGB image of ``size`` (width, height); the size tells outputs apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _dicom(path: Path, size: tuple[int, int]) -> Path:
    """A 12-bit CT slice of ``size`` (width, height) with seeded noise."""
    return write_dicom(path, np.random.default_rng(size[0]).integers(0, 4096, (size[1], size[0])), bits_stored=12, modality="CT")


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """series/a/IM0001.dcm (20x16) and series/b/IM0001.dcm (24x18); photos/x.jpg (30x20), photos/x.png (28x22),
    photos/sub/x.jpg (26x24); one/p.png (32x12) and two/p.png (34x14). Paths relative to tmp_path (the cwd)."""
    monkeypatch.chdir(tmp_path)
    _dicom(tmp_path / "series/a/IM0001.dcm", (20, 16))
    _dicom(tmp_path / "series/b/IM0001.dcm", (24, 18))
    for name, size in (("photos/x.jpg", (30, 20)), ("photos/x.png", (28, 22)), ("photos/sub/x.jpg", (26, 24)),
                       ("one/p.png", (32, 12)), ("two/p.png", (34, 14))):
        _image(tmp_path / name, size)
    return tmp_path


# where each input's outputs go, below the output folder (the rule of data.sources.output_names)
PHOTOS = {"photos/sub/x.jpg": "sub/x.png", "photos/x.jpg": "x.jpg.png", "photos/x.png": "x.png.png"}
NAMED = {"one/p.png": "p.png", "two/p.png": "p-2.png"}


def test_segment_predict_mirrors_the_inputs_and_records_each_output(inputs):
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.segmenters import build_segmenter

    weights = save_weights(build_segmenter("unet", "resnet18", 2), inputs / "w.safetensors",
                           {"task": "segment", "model": "unet", "encoder": "resnet18", "imgsz": 32, "class_names": ["bg", "fg"]})
    done = run_cnnkit_here("segment", "predict", "series", "photos/**/*.*", "one/p.png", "two/p.png", "--weights", str(weights),
                           "--device", "cpu", "--out", "pred", "--save-json", "pred.json")
    assert done.returncode == 0, done.stderr
    expected = {"series/a/IM0001.dcm": "a/IM0001.png", "series/b/IM0001.dcm": "b/IM0001.png", **PHOTOS, **NAMED}
    rows = json.loads(Path("pred.json").read_text())
    assert {row["file"]: row["mask"] for row in rows} == {f: f"pred/masks/{name}" for f, name in expected.items()}
    assert {row["file"]: row["overlay"] for row in rows} == {f: f"pred/overlays/{name}" for f, name in expected.items()}
    for row in rows:  # each mask and overlay is its own input's prediction: the input's size
        assert _size(Path(row["mask"])) == _size(Path(row["overlay"])) == tuple(row["size"])
    assert len({tuple(row["size"]) for row in rows}) == len(rows)  # the sizes differ, so no output holds another's
    written = sorted(p.relative_to("pred/masks").as_posix() for p in Path("pred/masks").rglob("*.png"))
    assert written == sorted(expected.values())


def test_instance_predict_writes_masks_and_overlays_per_input(inputs):
    from cnnkit.tasks.instance.api import InstanceSegmenter

    seg = InstanceSegmenter(class_names=["thing"], imgsz=64)
    results = seg.predict(["photos", "one/p.png", "two/p.png"], out="pred", conf=0.0, device="cpu")
    expected = {**PHOTOS, **NAMED}
    assert {r["file"]: r["mask"] for r in results} == {f: f"pred/masks/{name}" for f, name in expected.items()}
    assert {r["file"]: r["overlay"] for r in results} == {f: f"pred/overlays/{name}" for f, name in expected.items()}
    assert json.loads(Path("pred/instances.json").read_text()) == json.loads(json.dumps(results))
    for r in results:
        assert _size(Path(r["mask"])) == _size(Path(r["overlay"])) == tuple(r["size"]) == _size(Path(r["file"]))


def test_detect_predict_mirrors_images_and_videos(inputs, monkeypatch):
    import cv2

    from cnnkit.tasks.detect.api import Detector

    writer = cv2.VideoWriter("photos/x.mp4", cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (32, 24))
    for k in range(3):
        writer.write(np.full((24, 32, 3), 60 * k, np.uint8))
    writer.release()
    results = Detector("yolo_n", class_names=["a", "b"], imgsz=64).predict(["photos", "one/p.png", "two/p.png"], out="pred",
                                                                          device="cpu")
    images = [r for r in results if "frame" not in r]
    expected = {**PHOTOS, **NAMED}
    assert {r["file"]: r["overlay"] for r in images} == {f: f"pred/{name}" for f, name in expected.items()}
    for r in images:
        assert _size(Path(r["overlay"])) == _size(Path(r["file"]))
    frames = [r for r in results if "frame" in r]
    assert [r["frame"] for r in frames] == [0, 1, 2] and {r["overlay"] for r in frames} == {"pred/x.mp4"}
    assert Path("pred/x.mp4").is_file()


def test_classify_explain_mirrors_the_inputs(inputs):
    from cnnkit.api import Classifier

    results = Classifier("tiny_cnn", class_names=["a", "b"], imgsz=16).explain(["photos", "one/p.png", "two/p.png"], out="ex",
                                                                               device="cpu")
    assert {r["file"]: r["png"] for r in results} == {f: str(Path("ex") / name) for f, name in {**PHOTOS, **NAMED}.items()}
    assert all(Path(r["png"]).is_file() for r in results)


class Bar:
    """Stands in for the rich progress bar (which is off when stderr is not a terminal): records the tasks."""
    tasks: list[dict] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description, total=None, **fields):
        Bar.tasks.append({"description": description, "total": total, "done": 0})
        return len(Bar.tasks) - 1

    def update(self, task, advance=0, **fields):
        Bar.tasks[task]["done"] += advance


@pytest.mark.parametrize("verb", ["classify", "detect"])
def test_predict_advances_a_progress_bar_per_image(verb, inputs, monkeypatch):
    import cnnkit.runner
    import cnnkit.tasks.classify.api
    import cnnkit.tasks.detect.api

    Bar.tasks = []
    monkeypatch.setattr(cnnkit.runner, "progress_bar", lambda *a, **k: Bar())  # predict's batches: runner.read_in_batches
    if verb == "classify":
        results = cnnkit.tasks.classify.api.Classifier("tiny_cnn", class_names=["a", "b"], imgsz=16).predict(["photos"], batch=2, device="cpu")
    else:
        results = cnnkit.tasks.detect.api.Detector("yolo_n", class_names=["a", "b"], imgsz=64).predict(["photos"], batch=2, device="cpu")
    assert len(results) == 3 and Bar.tasks == [{"description": verb, "total": 3, "done": 3}]
