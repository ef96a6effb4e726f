"""Detectors exported with their post-processing: the tensor-only YOLO graph decodes and suppresses
exactly as the eager detector does, a deployed file detects what eager detects on images of any shape,
torchvision's detectors export through the tracer, and the parity check fails on a real mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.errors import CnnkitError

CLASSES = ["circle", "square", "triangle"]


def _weights(tmp_path: Path, model: str, imgsz: int = 64, seed: int = 0) -> Path:
    """A detector's weights file as a run writes it; a random network whose outputs still vary with the
    image (its class biases raised, so that many cells pass the score threshold)."""
    from cnnkit.tasks.detect.api import Detector
    from cnnkit.engine.checkpoint import save_state_dict

    torch.manual_seed(seed)
    det = Detector(model, class_names=CLASSES, imgsz=imgsz)
    if model.startswith("yolo"):
        for branch in det.model.head.cls:
            torch.nn.init.normal_(branch[-1].bias, 0.0, 1.0)
    meta = {"task": "detect", "model": det.model_name, "backbone": det.backbone, "class_names": CLASSES, "num_classes": 3,
            "category_ids": [0, 1, 2], "imgsz": imgsz, "anchors": None, "yolo": det.yolo.to_dict() if model.startswith("yolo") else None,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    return save_state_dict(det.model.state_dict(), tmp_path / f"{model}.safetensors", meta)


def _images(sizes: list[tuple[int, int]], seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def assert_detects_as_eager(weights: Path, deployed_file: Path):
    """The deployed file's detector finds eager's boxes and labels on images of three odd shapes (letterboxed by the
    deployed model, padded to a multiple of 32 by eager: the same cells); returns the deployed detector."""
    from cnnkit.models.detectors import set_postprocess
    from cnnkit.tasks.detect.api import Detector

    eager, deployed = Detector.load(weights), Detector.load(deployed_file)
    for det in (eager, deployed):
        set_postprocess(det.model, 0.05, 0.5, 100)
    images = _images([(48, 64), (64, 40), (100, 70)])
    with torch.no_grad():
        want, got = eager.model.eval()(images), deployed.model(images)
    for w, g in zip(want, got):
        assert len(w["boxes"]) > 0
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=1e-4)
        assert torch.equal(g["labels"], w["labels"])
    return deployed


def test_yolo_graph_matches_the_eager_detector_per_image_and_over_a_batch(tmp_path):
    from cnnkit.tasks import load_float
    from cnnkit.tasks.detect.api import Detector
    from cnnkit.models.detectors import set_postprocess
    from cnnkit.models.yolo import fuse_batchnorm

    weights = _weights(tmp_path, "yolo_n")
    graph, _ = load_float(weights, iou=0.6, max_det=30)
    eager = fuse_batchnorm(Detector.load(weights).model)
    set_postprocess(eager, 0.001, 0.6, 30)
    images = _images([(64, 64)] * 3)
    with torch.no_grad():
        boxes, scores, labels = graph(torch.stack(images))
        expected = eager(images)
    assert boxes.shape == (3, 30, 4) and labels.dtype == torch.int64
    for i, found in enumerate(expected):
        n = len(found["scores"])
        assert 0 < n <= 30 and int((labels[i] > 0).sum()) == n
        torch.testing.assert_close(boxes[i, :n], found["boxes"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(scores[i, :n], found["scores"])
        assert torch.equal(labels[i, :n], found["labels"])
        assert labels[i, n:].eq(0).all() and scores[i, n:].eq(0).all()
        with torch.no_grad():  # one NMS over the batch: an image's detections do not depend on its neighbours
            alone = graph(images[i][None])
        assert torch.equal(alone[2][0], labels[i]) and torch.allclose(alone[0][0], boxes[i], atol=1e-4)


def test_deployed_yolo_detects_what_eager_detects_on_any_image_shape(tmp_path):
    from cnnkit.tasks import export_weights
    from cnnkit.compress.runtime import read_metadata
    from cnnkit.models.detectors import set_postprocess

    weights = _weights(tmp_path, "yolo_n")
    path, parity = export_weights(weights, "pt2", tmp_path / "yolo.pt2", dynamic_batch=True)
    assert parity.ok and parity.top1_agreement == 1.0 and parity.max_abs_diff < 1e-3
    meta = read_metadata(path)
    assert meta["deployed"]["outputs"] == ["boxes", "scores", "labels"] and meta["deployed"]["max_det"] == 100
    deployed = assert_detects_as_eager(weights, path)
    images = _images([(48, 64), (64, 40), (100, 70)])
    with pytest.raises(CnnkitError, match="exported with IoU 0.5"):
        set_postprocess(deployed.model, 0.05, 0.7, 100)
        deployed.model(images)


def test_torchvision_detector_exports_through_the_tracer(tmp_path):
    from cnnkit.tasks import export_weights
    from cnnkit.tasks.detect.api import Detector

    weights = _weights(tmp_path, "ssdlite", imgsz=96)
    path, parity = export_weights(weights, "torchscript", tmp_path / "ssd.ts")
    assert parity.ok and parity.top1_agreement == 1.0
    deployed = Detector.load(path)
    images = _images([(96, 96), (80, 120)])
    eager = Detector.load(weights)
    with torch.no_grad():
        want, got = eager.model.eval()(images), deployed.model(images)  # SSD stretches to the square in both
    # two empty lists would match too: the random detector finds boxes on every image, and the traced one the same
    assert all(len(w["boxes"]) >= 5 for w in want), [len(w["boxes"]) for w in want]
    for w, g in zip(want, got):
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(g["scores"], w["scores"], atol=1e-4, rtol=1e-4)
        assert torch.equal(g["labels"], w["labels"])
    # the parity check itself compared detections, not two empty sets: eager finds boxes on its images
    from cnnkit.compress.export import parity_images
    from cnnkit.engine.checkpoint import read_metadata

    with torch.no_grad():
        checked = eager.model(list(parity_images(read_metadata(weights))))
    assert parity.images == len(checked) and all(len(c["boxes"]) > 0 for c in checked)
    for fmt, dynamic, message in (("pt2", False, "--format pt2 is not possible"), ("onnx", True, "--dynamic-batch is not possible")):
        with pytest.raises(CnnkitError, match=message):
            export_weights(weights, fmt, tmp_path / f"x.{fmt}", dynamic_batch=dynamic)


def test_detection_parity_fails_on_moved_or_missing_boxes():
    from cnnkit.compress.export import check_parity

    boxes = torch.tensor([[[10.0, 10, 30, 30], [40, 40, 60, 62], [0, 64, 5, 64], [0, 0, 0, 0]]])
    scores, labels = torch.tensor([[0.9, 0.8, 0.1, 0.0]]), torch.tensor([[1, 2, 2, 0]])
    reference = lambda x: (boxes, scores, labels)  # noqa: E731
    swapped = lambda x: (boxes[:, [1, 0, 2, 3]], scores[:, [1, 0, 2, 3]], labels[:, [1, 0, 2, 3]])  # noqa: E731
    moved = lambda x: (boxes + torch.tensor([0.0, 0, 3, 0]), scores, labels)  # noqa: E731
    missing = lambda x: (boxes, scores, torch.tensor([[1, 0, 2, 0]]))  # noqa: E731
    meta = {"task": "detect"}
    x = torch.zeros(1, 3, 64, 64)
    same = check_parity(reference, swapped, x, meta)
    assert same.ok and same.top1_agreement == 1.0  # order within an image does not matter; a zero-area box matches itself
    assert not check_parity(reference, moved, x, meta).ok
    lost = check_parity(reference, missing, x, meta)
    assert not lost.ok and lost.top1_agreement == pytest.approx(2 / 3)


def test_maskrcnn_exports_with_its_masks_and_runs_like_eager(tmp_path):
    from cnnkit.tasks import export_weights
    from cnnkit.compress.runtime import read_metadata
    from cnnkit.engine.checkpoint import save_state_dict
    from cnnkit.tasks.instance.api import InstanceSegmenter
    from cnnkit.tasks import load as load_segmenter
    from cnnkit.models.detectors import set_postprocess
    from cnnkit.tasks.instance.task import detect_unpasted

    torch.manual_seed(0)
    seg = InstanceSegmenter("maskrcnn", CLASSES, imgsz=64, backbone="resnet18")
    torch.nn.init.normal_(seg.model.roi_heads.box_predictor.cls_score.bias, 0.0, 2.0)  # random, yet some boxes pass
    meta = {"task": "segment", "model": "maskrcnn", "backbone": seg.backbone, "class_names": CLASSES, "num_classes": 3,
            "category_ids": [1, 2, 3], "imgsz": 64, "anchors": None, "mask_layers": None}
    weights = save_state_dict(seg.model.state_dict(), tmp_path / "mrcnn.safetensors", meta)
    photos = []
    for i, picture in enumerate(_images([(64, 64), (48, 80), (90, 60)], seed=4)):
        photos.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(photos[-1])
    path, parity = export_weights(weights, "onnx", tmp_path / "mrcnn.onnx", max_det=20, images=photos)
    assert parity.ok and parity.top1_agreement >= 0.99 and parity.images == 3, parity.line()
    assert read_metadata(path)["deployed"]["outputs"] == ["boxes", "scores", "labels", "masks"]
    deployed = load_segmenter(path)
    assert isinstance(deployed, InstanceSegmenter) and deployed.class_names == CLASSES
    eager = InstanceSegmenter.load(weights).model.eval()
    set_postprocess(eager, 0.05, 0.5, 20)
    set_postprocess(deployed.model, 0.05, 0.5, 20)
    # a square image: letterboxing changes nothing, so deployed and eager see the same pixels
    images = _images([(64, 64), (64, 64)])
    with torch.no_grad():
        want, got = detect_unpasted(eager, images), detect_unpasted(deployed.model, images)
    assert sum(len(w["boxes"]) for w in want) > 0
    for w, g in zip(want, got):
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(g["masks"], w["masks"], atol=1e-3, rtol=1e-3)
        assert torch.equal(g["labels"], w["labels"])
    with pytest.raises(CnnkitError, match="--format pt2 is not possible"):
        export_weights(weights, "pt2", tmp_path / "mrcnn.pt2")
    from cnnkit.tasks import quantize_weights

    with pytest.raises(CnnkitError, match="FX cannot trace for int8.*--backend onnx"):
        quantize_weights(weights, "unused", method="ptq")


@pytest.mark.parametrize("shape", [(320, 320), (240, 320), (333, 200), (50, 70)])
def test_letterbox_resizes_torchvision_detectors_as_their_own_transform_does(shape):
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from cnnkit.compress.detect_graph import letterbox

    image = _images([shape], seed=7)[0]
    # the reference: what Faster R-CNN / Mask R-CNN do to an image before their backbone (here without normalising)
    transform = GeneralizedRCNNTransform(min_size=256, max_size=256, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    expected, _ = transform.resize(image, None)
    boxed, sx, sy = letterbox(image, 256, like_torchvision=True)
    h, w = expected.shape[-2:]
    assert torch.equal(boxed[:, :h, :w], expected) and (sx, sy) == (w / shape[1], h / shape[0])
