"""`cnnkit serve` through FastAPI's TestClient: every route and error code, for a classifier, a detector and a
semantic segmenter trained small here, an ONNX export, the OCR models cnnkit ships and an embedder; the served rows
are the rows of the task's own predict on the same files."""

from __future__ import annotations

import base64
import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from cnnkit.serve.app import Limits, create_app  # noqa: E402
from cnnkit.serve.models import load_served  # noqa: E402


@contextmanager
def serving(app):
    """A TestClient of ``app`` (its start-up run), once /health says ready."""
    with TestClient(app) as client:
        for _ in range(600):
            if client.get("/health").status_code == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(client.get("/health").json())
        yield client


def upload(*paths: Path) -> list:
    return [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit_files(digits_root) -> list[Path]:
    files = [sorted((digits_root / "test" / str(d)).glob("*.png"))[:2] for d in range(10)]
    return [f for pair in files for f in pair]


@pytest.fixture(scope="module")
def shapes_detector(tmp_path_factory) -> tuple[Path, Path]:
    """(weights, data) of yolo_n trained two epochs on 40 generated scenes: a real detector of the task's own training."""
    from cnnkit.data.synth import synth_dataset
    from cnnkit.tasks.detect.api import Detector

    root = tmp_path_factory.mktemp("serve_detect")
    synth_dataset("shapes", root / "data", task="detect", n=40, imgsz=96, seed=5, val_fraction=0.25, progress=False)
    Detector("yolo_n", imgsz=96).train(str(root / "data"), epochs=2, imgsz=96, batch=8, workers=0, out=str(root / "run"))
    return root / "run" / "weights" / "best.safetensors", root / "data"


@pytest.fixture(scope="module")
def shapes_segmenter(tmp_path_factory) -> tuple[Path, Path]:
    from cnnkit.data.synth import synth_dataset
    from cnnkit.tasks.segment.api import Segmenter

    root = tmp_path_factory.mktemp("serve_segment")
    synth_dataset("shapes", root / "data", task="segment", n=24, imgsz=64, seed=6, val_fraction=0.25, progress=False)
    Segmenter("unet", encoder="resnet18", imgsz=64).train(str(root / "data"), epochs=2, imgsz=64, batch=8, workers=0,
                                                          out=str(root / "run"))
    return root / "run" / "weights" / "best.safetensors", root / "data"


# ------------------------------------------------------------------------------------------------ classify
def test_classifier_routes_match_predict_and_every_error_is_json(digits_classifier, digit_files):
    from cnnkit.tasks.classify.api import Classifier

    served = load_served(digits_classifier, "digits")
    expected = Classifier.load(digits_classifier).predict(digit_files, topk=3, device="cpu")
    with serving(create_app([served], Limits(max_files=4, max_upload_mb=0.05, max_pixels=64 * 64))) as client:
        assert client.get("/health").json() == {"status": "ready", "models": ["digits"]}
        (info,) = client.get("/models").json()
        assert info == {"name": "digits", "task": "classify", "format": "eager", "file": "best.safetensors", "imgsz": 16,
                        "classes": [str(d) for d in range(10)], "parameters": ["topk"]}
        rows = []
        for start in range(0, len(digit_files), 4):
            answer = client.post("/predict/digits?topk=3", files=upload(*digit_files[start:start + 4]))
            assert answer.status_code == 200, answer.text
            assert "infer;dur=" in answer.headers["server-timing"]
            rows += answer.json()
        assert [r["file"] for r in rows] == [f.name for f in digit_files]
        assert [r["label"] for r in rows] == [e["label"] for e in expected]
        assert [r["topk"][0][0] for r in rows] == [e["topk"][0][0] for e in expected] and all(len(r["topk"]) == 3 for r in rows)
        assert np.allclose([r["score"] for r in rows], [e["score"] for e in expected], atol=1e-5)
        truth = [f.parent.name for f in digit_files]
        assert np.mean([r["label"] == t for r, t in zip(rows, truth)]) >= 0.8  # a model that learned, served

        drawn = client.post("/predict/digits?overlay=true", files=upload(digit_files[0])).json()[0]
        overlay = Image.open(io.BytesIO(base64.b64decode(drawn["overlay"])))
        assert overlay.format == "PNG" and overlay.size == Image.open(digit_files[0]).size

        def fails(status: int, text: str, response) -> None:
            assert response.status_code == status, (response.status_code, response.text)
            assert set(response.json()) == {"error"} and text in response.json()["error"], response.json()

        one = upload(digit_files[0])
        fails(404, "no model named 'nope'", client.post("/predict/nope", files=one))
        fails(400, "not an image", client.post("/predict/digits", files={"file": ("notes.txt", b"hello", "text/plain")}))
        fails(400, "empty file", client.post("/predict/digits", files={"file": ("e.png", b"", "image/png")}))
        fails(400, "multipart/form-data", client.post("/predict/digits", content=b"raw"))
        fails(400, "no field named 'file'", client.post("/predict/digits", files={"image": ("a.png", digit_files[0].read_bytes())}))
        fails(413, "limit is 4", client.post("/predict/digits", files=upload(*digit_files[:5])))
        fails(413, "larger than the limit", client.post("/predict/digits", files={"file": ("big.png", bytes(80_000), "image/png")}))
        fails(413, "exceed the limit", client.post("/predict/digits", files={"file": ("wide.png", png_bytes(np.zeros((65, 64, 3), np.uint8)))}))
        fails(422, "does not apply", client.post("/predict/digits?conf=0.5", files=one))
        fails(422, "must be an integer", client.post("/predict/digits?topk=two", files=one))
        fails(422, "between 1 and 1000", client.post("/predict/digits?topk=0", files=one))
        fails(422, "overlay", client.post("/predict/digits?overlay=maybe", files=one))
        fails(404, "Not Found", client.get("/no/such/route"))
        fails(405, "Method Not Allowed", client.get("/predict/digits"))
        metrics = client.get("/metrics").text
        assert 'cnnkit_requests_total{model="digits",status="200"}' in metrics
        assert 'cnnkit_requests_total{model="unknown",status="404"} 1.0' in metrics
        assert 'cnnkit_requests_total{model="digits",status="413"} 3.0' in metrics
        assert "cnnkit_batch_images_bucket" in metrics and "cnnkit_queue_images" in metrics and "cnnkit_request_seconds_bucket" in metrics
        page = client.get("/")
        assert page.status_code == 200 and "<canvas" in page.text and "http" not in page.text.split("<script>")[1].split("fetch(")[0]
        assert "/predict/{model}" in client.get("/openapi.json").json()["paths"]


def test_api_key_guards_every_route_but_health(digits_classifier, digit_files):
    served = load_served(digits_classifier, "digits")
    with serving(create_app([served], api_key="s3cret")) as client:
        assert client.get("/health").status_code == 200
        for route in ("/models", "/metrics", "/", "/docs", "/openapi.json"):
            answer = client.get(route)
            assert answer.status_code == 401 and "API key" in answer.json()["error"], route
        assert client.post("/predict/digits", files=upload(digit_files[0])).status_code == 401
        assert client.post("/predict/digits", files=upload(digit_files[0]), headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/predict/digits", files=upload(digit_files[0]), headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/?api_key=s3cret").status_code == 200  # the page, opened from a link
        assert client.get("/models?api_key=s3cret").status_code == 401  # keys in URLs only for the page
        assert 'status="401"' in client.get("/metrics", headers={"X-API-Key": "s3cret"}).text


def test_a_full_queue_answers_503_at_once(digits_classifier, digit_files):
    served = load_served(digits_classifier, "digits")
    release, entered = threading.Event(), threading.Event()
    run = served.run

    def slow(*args):
        entered.set()
        release.wait(30)
        return run(*args)

    served.run = slow
    answers: list[int] = []
    with serving(create_app([served], Limits(max_queue=1, max_wait_ms=0), warm_up=False)) as client:
        post = lambda: answers.append(client.post("/predict/digits", files=upload(digit_files[0])).status_code)  # noqa: E731
        first = threading.Thread(target=post)
        first.start()
        assert entered.wait(30)  # the first request is in the model; the queue is empty again
        second = threading.Thread(target=post)
        second.start()
        time.sleep(0.3)  # the second waits in the queue: one image, the limit
        started = time.perf_counter()
        full = client.post("/predict/digits", files=upload(digit_files[0]))
        assert full.status_code == 503 and "queue" in full.json()["error"]
        assert time.perf_counter() - started < 5
        release.set()
        first.join(30)
        second.join(30)
    assert answers == [200, 200]


def test_batcher_gathers_concurrent_requests_and_keeps_each_answer_its_own():
    from cnnkit.serve.batching import Batcher, QueueFull

    calls: list[tuple[int, tuple]] = []

    def run(pictures, names, params, overlay):
        calls.append((len(pictures), tuple(sorted(params.items()))))
        if "bad" in names:
            raise ValueError("bad image")
        return [{"file": n, "value": float(p.mean()), **params} for n, p in zip(names, pictures)]

    batcher = Batcher(run, max_batch=8, max_wait_ms=300, max_queue=64)
    jobs = [batcher.submit([np.full((2, 2, 3), k, np.uint8)], [f"i{k}"], {}, False) for k in range(6)]
    jobs.append(batcher.submit([np.full((2, 2, 3), 9, np.uint8)] * 3, ["a", "b", "c"], {}, False))  # 9 images: 8 + 1
    other = batcher.submit([np.zeros((2, 2, 3), np.uint8)], ["o"], {"topk": 2}, False)
    for k, job in enumerate(jobs[:6]):
        assert job.future.result(10) == [{"file": f"i{k}", "value": float(k)}]
    assert [r["file"] for r in jobs[6].future.result(10)] == ["a", "b", "c"]
    assert other.future.result(10) == [{"file": "o", "value": 0.0, "topk": 2}]
    assert calls[0] == (6, ()), calls  # six one-image requests in one batch; the three-image one did not fit beside them
    assert (1, (("topk", 2),)) in calls  # other parameters, another batch
    # a bad image fails its own request only
    good, bad = batcher.submit([np.ones((2, 2, 3), np.uint8)], ["g"], {}, False), batcher.submit([np.ones((2, 2, 3), np.uint8)], ["bad"], {}, False)
    assert good.future.result(10)[0]["file"] == "g"
    with pytest.raises(ValueError):
        bad.future.result(10)
    batcher.close()
    small = Batcher(lambda *a: time.sleep(0.5) or [{}], max_batch=1, max_wait_ms=0, max_queue=2)
    small.submit([np.zeros((1, 1, 3), np.uint8)] * 2, ["x", "y"], {}, False)
    time.sleep(0.1)
    small.submit([np.zeros((1, 1, 3), np.uint8)] * 2, ["x", "y"], {}, False)
    with pytest.raises(QueueFull):
        small.submit([np.zeros((1, 1, 3), np.uint8)], ["z"], {}, False)
    small.close()


# ------------------------------------------------------------------------------------------- other tasks
@pytest.mark.slow
def test_detector_served_boxes_are_predicts(shapes_detector):
    from cnnkit.tasks.detect.api import Detector

    weights, data = shapes_detector
    files = sorted((data / "images" / "val").glob("*.png"))[:3]
    expected = Detector.load(weights).predict(files, conf=0.05, device="cpu")
    with serving(create_app([load_served(weights, "shapes")])) as client:
        assert client.get("/models").json()[0]["parameters"] == ["conf", "iou"]
        rows = client.post("/predict/shapes?conf=0.05&overlay=true", files=upload(*files)).json()
        strict = client.post("/predict/shapes?conf=0.9", files=upload(*files)).json()
        bad = client.post("/predict/shapes?iou=1.5", files=upload(files[0]))
    assert bad.status_code == 422
    for row, want in zip(rows, expected):
        assert row["labels"] == want["labels"] and np.allclose(row["boxes"], want["boxes"], atol=0.05)
        assert np.allclose(row["scores"], want["scores"], atol=1e-4)
        assert Image.open(io.BytesIO(base64.b64decode(row["overlay"]))).size == Image.open(data / "images" / "val" / row["file"]).size
    assert sum(len(r["boxes"]) for r in strict) <= sum(len(r["boxes"]) for r in rows)


@pytest.mark.slow
def test_segmenter_served_masks_are_predicts(shapes_segmenter, tmp_path):
    from cnnkit.evaluate.coco import decode_rle
    from cnnkit.tasks.segment.api import Segmenter

    weights, data = shapes_segmenter
    files = sorted((data / "images" / "val").glob("*.png"))[:2]
    expected = Segmenter.load(weights).predict(files, out=tmp_path / "pred", device="cpu")
    with serving(create_app([load_served(weights)])) as client:
        (info,) = client.get("/models").json()
        rows = client.post(f"/predict/{info['name']}?overlay=true", files=upload(*files)).json()
    assert info["task"] == "segment" and info["classes"][0] == "background"
    for row, want in zip(rows, expected):
        mask = np.asarray(Image.open(want["mask"]))
        decoded = np.zeros_like(mask)
        for k, name in enumerate(info["classes"]):
            if name in row["masks"]:
                decoded[decode_rle(row["masks"][name]).astype(bool)] = k
        assert (decoded == mask).mean() > 0.999  # batched against one at a time: the same argmax up to ties
        assert row["classes"].keys() == row["masks"].keys() and row["size"] == want["size"]


@pytest.mark.slow
def test_every_deployed_format_is_served_like_the_weights(digits_classifier, digit_files, tmp_path):
    from cnnkit import tasks

    files = [tasks.export_weights(digits_classifier, fmt, tmp_path / f"digits{suffix}", dynamic_batch=True)[0]
             for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".ts"), ("pt2", ".pt2"))]
    files.append(tasks.quantize_weights(digits_classifier, None, method="dynamic", out=tmp_path / "digits.int8.pt",
                                        evaluate=False)[0])
    files.append(tasks.quantize_weights(digits_classifier, "digits", backend="onnx", calib_images=32, out=tmp_path / "q.int8.onnx",
                                        evaluate=False, workers=0)[0])
    served = [load_served(digits_classifier, "eager")] + [load_served(f, f"m{k}") for k, f in enumerate(files)]
    assert [m.format for m in served] == ["eager", "onnx", "torchscript", "torch.export", "int8", "onnx-int8"]
    with serving(create_app(served, Limits(max_files=20))) as client:
        assert [m["format"] for m in client.get("/models").json()] == [m.format for m in served]
        answers = {m.name: client.post(f"/predict/{m.name}", files=upload(*digit_files)).json() for m in served}
    eager = answers.pop("eager")
    for name, rows in answers.items():
        agree = np.mean([r["label"] == e["label"] for r, e in zip(rows, eager)])
        assert agree >= (0.9 if "int8" in served[int(name[1:]) + 1].format else 1.0), (name, agree)
        if "int8" not in served[int(name[1:]) + 1].format:
            assert np.allclose([r["score"] for r in rows], [e["score"] for e in eager], atol=1e-3), name


@pytest.mark.slow
def test_mask_rcnn_instances_are_served_as_predict_gives_them(tmp_path):
    import torch

    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.tasks.instance.api import InstanceSegmenter

    torch.manual_seed(0)
    seg = InstanceSegmenter(class_names=["thing"], imgsz=64)
    weights = save_weights(seg.model, tmp_path / "maskrcnn.safetensors",
                           {"task": "segment", "model": "maskrcnn", "backbone": seg.backbone, "imgsz": 64, "class_names": ["thing"],
                            "category_ids": [1], "mean": [0.0] * 3, "std": [1.0] * 3})
    rng = np.random.default_rng(0)
    image = tmp_path / "scene.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    expected = InstanceSegmenter.load(weights).predict([image], conf=0.0, device="cpu")
    with serving(create_app([load_served(weights, "things")])) as client:
        assert client.get("/models").json()[0]["task"] == "instance"
        (row,) = client.post("/predict/things?conf=0&overlay=true", files=upload(image)).json()
    assert row["instances"] and row["size"] == [64, 48] and [e["rle"] for e in row["instances"]] == [e["rle"] for e in expected[0]["instances"]]
    assert Image.open(io.BytesIO(base64.b64decode(row["overlay"]))).size == (64, 48)


@pytest.mark.slow
def test_shipped_ocr_models_and_an_embedder_are_served(tmp_path, digit_files):
    from cnnkit.data.synth_text import synth_text_lines
    from cnnkit.data.synth_text_pages import synth_text_pages
    from cnnkit.tasks.ocr.shipped import DETECTOR, RECOGNIZER

    synth_text_lines(tmp_path / "lines", n=20, val_fraction=0.5, seed=3, progress=False)
    synth_text_pages(tmp_path / "pages", n=2, val_fraction=0.5, seed=3, progress=False)
    line_rows = [line.split("\t") for line in (tmp_path / "lines" / "val" / "labels.tsv").read_text().splitlines()[:4]]
    page = sorted((tmp_path / "pages" / "val" / "images").iterdir())[0]
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.embedder import build_embedder
    from cnnkit.tasks.embed.api import Embedder

    embed_weights = save_weights(build_embedder("tiny_cnn", 16), tmp_path / "embed.safetensors",
                                 {"task": "embed", "model": "tiny_cnn", "dim": 16, "imgsz": 16, "mean": [0.5] * 3, "std": [0.25] * 3})
    models = [load_served(RECOGNIZER, "lines"), load_served(DETECTOR, "pages"), load_served(embed_weights)]
    with serving(create_app(models)) as client:
        assert [m["task"] for m in client.get("/models").json()] == ["ocr", "ocr_det", "embed"]
        vectors = client.post("/predict/embed", files=upload(*digit_files[:3])).json()
        read = client.post("/predict/lines", files=upload(*[tmp_path / "lines" / "val" / rel for rel, _ in line_rows])).json()
        pages = client.post("/predict/pages?overlay=true", files=upload(page)).json()
        thin = client.post("/predict/lines", files={"file": ("thin.png", png_bytes(np.zeros((1, 40, 3), np.uint8)))})
    from rapidfuzz.distance import Levenshtein

    errors = sum(Levenshtein.distance(r["text"], text) for r, (_, text) in zip(read, line_rows))
    assert errors / sum(len(text) for _, text in line_rows) < 0.3, (read, line_rows)  # the shipped recogniser reads them
    assert len(pages[0]["lines"]) >= 2 and any(line["text"] for line in pages[0]["lines"]) and pages[0]["overlay"]
    assert thin.status_code == 422 and "2 x 2" in thin.json()["error"]
    expected = Embedder.load(embed_weights).embed(digit_files[:3], device="cpu", workers=0, progress=False)["vectors"]
    assert np.allclose([v["vector"] for v in vectors], expected, atol=1e-4)
