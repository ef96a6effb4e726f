"""Instance segmentation pieces: masks that move with the image, un-pasted eval masks that paste back to
torchvision's own, COCO mask metrics, segmentations kept beside their boxes from the COCO file on, the
options that belong to one kind of segmenter only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.augment.presets import augment_spec, dense_transforms
from cnnkit.data.detection import DetectionImage, read_coco
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.coco import coco_evaluate
from cnnkit.tasks.instance.task import InstanceSet, InstanceTask, decode, encode, instance_metrics, paste, rasterise, tighten_to_masks

TRIANGLE = [20.0, 10.0, 70.0, 30.0, 30.0, 55.0]  # x, y pairs, inside a 96 x 64 image
SQUARE = [60.0, 38.0, 90.0, 38.0, 90.0, 62.0, 60.0, 62.0]


def _picture(path: Path, size=(96, 64)) -> Path:
    """Black, with the triangle red and the square green (rasterised as COCO tools do): the pixels say
    where each mask must be."""
    triangle, square = rasterise([[TRIANGLE], [SQUARE]], size[1], size[0]).astype(bool)
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[triangle, 0] = 255
    pixels[square & ~triangle, 1] = 255
    Image.fromarray(pixels).save(path)
    return path


def _record(path: Path, width: int = 96, height: int = 64, scale: float = 1.0) -> DetectionImage:
    triangle, square = [v * scale for v in TRIANGLE], [v * scale for v in SQUARE]
    boxes = np.array([[min(p[::2]), min(p[1::2]), max(p[::2]), max(p[1::2])] for p in (triangle, square)])
    return DetectionImage(path, 1, width, height, boxes, np.array([4, 9]), segmentations=[[triangle], [square]])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("degrees", [0.0, 30.0])
def test_masks_follow_flip_and_rotation_with_the_image(tmp_path, degrees):
    record = _record(_picture(tmp_path / "a.png"))
    spec = augment_spec("none", "detect", fliplr=1.0, degrees=degrees, scale=0.2)
    transform = dense_transforms(128, True, spec, mean=None, std=None, keep_aspect=True, mask_fill=0)
    data = InstanceSet([record], {4: 1, 9: 2}, transform)
    for seed in range(4):
        torch.manual_seed(seed)
        image, target, _ = data[0]
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, *image.shape[-2:])
        assert target["labels"].tolist() == [1, 2]
        red = (image[0] > 0.5) & (image[1] < 0.5)
        green = (image[1] > 0.5) & (image[0] < 0.5)
        triangle, square = target["masks"].bool()
        assert _iou(triangle.numpy(), red.numpy()) > 0.9 and _iou(square.numpy(), green.numpy()) > 0.9
        # flipped: the triangle, left in the file, is now right of the square
        assert np.nonzero(triangle.any(0).numpy())[0].mean() > np.nonzero(square.any(0).numpy())[0].mean()
        # boxes cut to their masks (a rotated box's own box would be looser)
        for box, mask in zip(target["boxes"], target["masks"].bool()):
            ys, xs = np.nonzero(mask.numpy())
            assert np.abs(box.numpy() - [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).max() <= 1.0


def test_masks_in_the_recorded_frame_are_scaled_to_the_file(tmp_path):
    """The COCO record says 192 x 128 (polygons in that frame) but the file is 96 x 64."""
    record = _record(_picture(tmp_path / "a.png"), width=192, height=128, scale=2.0)
    image, target, _ = InstanceSet([record], {4: 1, 9: 2}, dense_transforms(None, False, mean=None, std=None))[0]
    assert target["masks"].shape == (2, 64, 96)
    assert _iou(target["masks"][0].bool().numpy(), ((image[0] > 0.5) & (image[1] < 0.5)).numpy()) > 0.9


def test_tighten_keeps_boxes_without_mask():
    masks = torch.zeros(2, 10, 10, dtype=torch.uint8)
    masks[0, 2:5, 3:8] = 1
    boxes = torch.tensor([[1.0, 1.0, 9.0, 9.0], [0.0, 0.0, 4.0, 4.0]])
    assert tighten_to_masks(boxes, masks).tolist() == [[3.0, 2.0, 8.0, 5.0], [0.0, 0.0, 4.0, 4.0]]


def _mask_rcnn(seed: int = 0):
    """A small untrained Mask R-CNN whose masks have pixels on both sides of 0.5: BatchNorm statistics
    measured on random images (fresh ones shrink the features to ~1e-8), mask logits spread around 0,
    every class scored alike and every box an anchor."""
    from cnnkit.models.detectors import build_maskrcnn, set_postprocess

    torch.manual_seed(seed)
    net = build_maskrcnn(3, 96)
    for layer in net.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None  # a plain average of what it sees next
    with torch.no_grad():
        net.backbone(torch.rand(4, 3, 96, 96))
    net.eval()
    set_postprocess(net, 0.0, 0.5, 12)
    logits = net.roi_heads.mask_predictor.mask_fcn_logits
    torch.nn.init.normal_(logits.weight, std=0.2)
    torch.nn.init.zeros_(logits.bias)
    # every class equally likely and boxes = anchors: detections of many sizes on every image
    for layer in (net.roi_heads.box_predictor.cls_score, net.roi_heads.box_predictor.bbox_pred, net.rpn.head.bbox_pred):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return net


def test_eval_step_masks_paste_back_to_torchvisions_own():
    net = _mask_rcnn()
    images = [torch.rand(3, 80, 120), torch.rand(3, 100, 70)]
    with torch.no_grad():
        reference = net(images)
        outputs = InstanceTask([], [], [1, 2, 3], max_det=12).eval_step(net, (images, None, torch.tensor([5, 6])))
    assert outputs["masks"].shape == (2, 12, 28, 28) and outputs["masks"].dtype == torch.uint8
    assert outputs["size"].tolist() == [[80, 120], [100, 70]] and outputs["index"].tolist() == [5, 6]
    compared = 0
    for row, (image, ref) in enumerate(zip(images, reference)):
        n = len(ref["boxes"])
        assert n and (outputs["labels"][row, :n] > 0).all() and (outputs["labels"][row, n:] == 0).all()
        order = torch.argsort(ref["scores"], descending=True, stable=True)
        assert torch.equal(outputs["boxes"][row, :n], ref["boxes"][order])
        assert torch.equal(outputs["scores"][row, :n], ref["scores"][order])
        pasted = paste(outputs["masks"][row, :n], outputs["boxes"][row, :n], *image.shape[-2:])
        theirs = ref["masks"][order, 0] > 0.5
        assert theirs.any(), "the masks must have pixels above 0.5 for the comparison to mean something"
        # the same pixels, but for probabilities within 1/510 of the threshold (uint8 rounding)
        assert (pasted != theirs).sum() <= 0.002 * theirs.numel()
        compared += int(theirs.sum())
    assert compared > 100


def _truth():
    """Images with polygon and RLE ground truth (RLE as synth cells writes it) and a negative, categories 4 and 9."""
    first = DetectionImage(Path("a.png"), 11, 96, 64, np.array([[20.0, 10.0, 70.0, 55.0], [60.0, 38.0, 90.0, 62.0]]),
                           np.array([4, 9]), segmentations=[[TRIANGLE], [SQUARE]])
    blob = np.zeros((64, 96), np.uint8)
    blob[5:30, 40:90] = 1
    second = DetectionImage(Path("b.png"), "b", 96, 64, np.array([[40.0, 5.0, 90.0, 30.0]]), np.array([4]),
                            segmentations=[encode(blob)])
    negative = DetectionImage(Path("c.png"), 12, 96, 64)  # no objects, so no segmentations either
    return [first, second, negative], [(4, "triangle"), (9, "square")]


def test_perfect_masks_score_one_and_shifted_masks_less():
    images, categories = _truth()
    perfect, shifted = [], []
    for image in images:
        masks = rasterise(image.segmentations or [], image.height, image.width)
        for mask, box, label in zip(masks, image.boxes, image.labels):
            x1, y1, x2, y2 = box.tolist()
            result = {"image_id": image.image_id, "category_id": int(label), "score": 0.9, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            perfect.append({**result, "segmentation": encode(mask)})
            shifted.append({**result, "segmentation": encode(np.roll(mask, 6, axis=1))})
    metrics = instance_metrics(images, categories, perfect)
    assert metrics["mask_map"] == pytest.approx(1.0) and metrics["mask_map50"] == pytest.approx(1.0)
    assert metrics["box_map"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["square"]) == {"mask_ap", "mask_ap50", "box_ap", "box_ap50"}
    worse = coco_evaluate(images, categories, shifted, iou_type="segm")
    assert worse["map"] < 0.9 and coco_evaluate(images, categories, shifted)["map"] == pytest.approx(1.0)  # boxes untouched


def _square(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((100, 100), np.uint8)
    mask[rows, cols] = 1
    return mask


def test_mask_map_by_hand_and_by_pycocotools():
    """Two true blobs; a confident false alarm, an exact mask, and a mask covering 72% of the second blob whose
    box is exact: the masks and the boxes score apart, each as worked out by hand and as pycocotools says."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    first, second = _square(slice(10, 30), slice(10, 30)), _square(slice(40, 65), slice(40, 60))  # 400 and 500 pixels
    image = DetectionImage(Path("m.png"), 7, 100, 100, np.array([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 65.0]]),
                           np.array([3, 3]), segmentations=[encode(first), encode(second)])
    short = _square(slice(40, 58), slice(40, 60))  # 360 of the second's 500 pixels: mask IoU 0.72
    results = [{"image_id": 7, "category_id": 3, "score": 0.95, "bbox": [80.0, 80.0, 15.0, 15.0],
                "segmentation": encode(_square(slice(80, 95), slice(80, 95)))},
               {"image_id": 7, "category_id": 3, "score": 0.9, "bbox": [10.0, 10.0, 20.0, 20.0], "segmentation": encode(first)},
               {"image_id": 7, "category_id": 3, "score": 0.8, "bbox": [40.0, 40.0, 20.0, 25.0], "segmentation": encode(short)}]
    metrics = instance_metrics([image], [(3, "blob")], results)
    # ranked false, true, true: precision 2/3 at every recall (COCO's interpolation), AP 2/3 where both count;
    # from IoU 0.75 on the short mask is a false alarm: recall 1/2 at precision 1/2, so 51 of 101 recall
    # points at 0.5. IoU 0.5 to 0.7 (5 thresholds) give 2/3, 0.75 to 0.95 (5) give 25.5/101.
    low, high = 2 / 3, 0.5 * 51 / 101
    assert metrics["mask_map50"] == pytest.approx(low) and metrics["mask_map75"] == pytest.approx(high)
    assert metrics["mask_map"] == pytest.approx((5 * low + 5 * high) / 10)
    assert metrics["box_map"] == pytest.approx(low) and metrics["box_map75"] == pytest.approx(low)  # every box is exact
    assert metrics["per_class"]["blob"]["mask_ap"] == pytest.approx(metrics["mask_map"])

    truth = COCO()
    truth.dataset = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 3, "name": "blob"}],
                     "annotations": [{"id": k + 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": float(m.sum()),
                                      "bbox": box, "segmentation": encode(m)}
                                     for k, (m, box) in enumerate([(first, [10, 10, 20, 20]), (second, [40, 40, 20, 25])])]}
    truth.createIndex()
    evaluation = COCOeval(truth, truth.loadRes([{k: v for k, v in {**r, "image_id": 1}.items() if k != "bbox"}
                                                for r in results]), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert [metrics["mask_map"], metrics["mask_map50"], metrics["mask_map75"]] == pytest.approx(list(evaluation.stats[:3]))


def test_coco_results_paste_at_the_recorded_size():
    """An image recorded as 96 x 64 but loaded at 48 x 32: boxes and masks come back in the recorded frame."""
    images, categories = _truth()
    task = InstanceTask(images[:1], categories, [4, 9], max_det=3)
    masks = np.zeros((1, 3, 28, 28), np.uint8)
    masks[0, 0] = 255
    outputs = {"boxes": np.array([[[10.0, 5.0, 35.0, 27.5], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
               "scores": np.array([[0.8, 0, 0]], np.float32), "labels": np.array([[1, 0, 0]]), "masks": masks,
               "size": np.array([[32, 48]]), "index": np.array([0])}
    results = task.coco_results(outputs)
    assert len(results) == 1 and results[0]["bbox"] == [20.0, 10.0, 50.0, 45.0] and results[0]["category_id"] == 4
    pasted = decode(results[0]["segmentation"])
    assert pasted.shape == (64, 96) and isinstance(results[0]["segmentation"]["counts"], str)
    ys, xs = np.nonzero(pasted)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (20, 10, 70, 55)
    json.dumps(results)  # predictions.json material


def _coco_file(root: Path, annotations: list[dict], width=96, height=64) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    _picture(root / "images" / "a.png")
    (root / "annotations").mkdir(exist_ok=True)
    coco = {"images": [{"id": 3, "file_name": "a.png", "width": width, "height": height}],
            "categories": [{"id": 4, "name": "triangle"}, {"id": 9, "name": "square"}],
            "annotations": [{"id": k, "image_id": 3, "iscrowd": 0, **a} for k, a in enumerate(annotations, 1)]}
    (root / "annotations" / "train.json").write_text(json.dumps(coco))
    return root


def test_read_coco_keeps_segmentations_beside_their_boxes(tmp_path):
    from cnnkit.tasks.detect.api import restrict_categories

    blob = encode(np.ones((64, 96), np.uint8))
    root = _coco_file(tmp_path, [
        {"category_id": 4, "bbox": [200, 200, 5, 5], "segmentation": [[1, 1, 2, 1, 2, 2]]},  # wholly outside: dropped
        {"category_id": 9, "bbox": [60, 38, 30, 24], "segmentation": [SQUARE]},
        {"category_id": 4, "bbox": [0, 0, 96, 64], "segmentation": blob, "iscrowd": 1},  # crowd: left out
        {"category_id": 4, "bbox": [20, 10, 50, 45], "segmentation": [TRIANGLE]},
        {"category_id": 9, "bbox": [0, 0, 96, 64], "segmentation": blob},
    ])
    image = read_coco(root).splits["train"][0]  # warns about the box outside
    assert image.labels.tolist() == [9, 4, 9] and image.crowd == 1
    assert image.segmentations == [[SQUARE], [TRIANGLE], blob]
    only = restrict_categories(read_coco(root), {4}).splits["train"][0]
    assert only.labels.tolist() == [4] and only.segmentations == [[TRIANGLE]]
    plain = _coco_file(tmp_path / "plain", [{"category_id": 9, "bbox": [60, 40, 25, 20]}])
    assert read_coco(plain).splits["train"][0].segmentations is None


@pytest.mark.parametrize("segmentation,expected", [
    ([[1, 2, 3, 4]], "at least three x, y pairs"),
    ({"size": [32, 32], "counts": "abc"}, "not the image's"),
    (None, "without 'segmentation'"),
])
def test_bad_segmentations_are_one_line(tmp_path, segmentation, expected):
    from cnnkit.tasks.instance.api import load_instance_data

    ann = {"category_id": 9, "bbox": [60, 40, 25, 20]}
    other = {"category_id": 4, "bbox": [20, 10, 50, 45], "segmentation": [TRIANGLE]}
    root = _coco_file(tmp_path, [other, {**ann, **({"segmentation": segmentation} if segmentation else {})}])
    with pytest.raises(CnnkitError, match=expected) as info:
        load_instance_data(str(root), 0.2, 0)
    assert "\n" not in info.value.message


def test_options_of_the_other_kind_of_segmenter_are_refused():
    from cnnkit.tasks.segment.config import SegmentConfig
    from cnnkit.models.segmenters import parse_segmenter

    assert parse_segmenter("maskrcnn", None) == ("maskrcnn", "mobilenet_v3_large")
    assert parse_segmenter("maskrcnn", "resnet50") == ("maskrcnn", "resnet50")
    assert parse_segmenter("unet", None) == ("unet", "resnet18")
    with pytest.raises(CnnkitError, match="--conf applies to instance segmentation"):
        SegmentConfig(model="unet", conf=0.3).validate()
    with pytest.raises(CnnkitError, match="--tile applies to semantic models"):
        SegmentConfig(model="maskrcnn", tile=True).validate()
    with pytest.raises(CnnkitError, match="not a maskrcnn backbone"):
        SegmentConfig(model="maskrcnn", encoder="resnet_999").validate()
    SegmentConfig(model="maskrcnn", imgsz=100, max_det=20).validate()  # no multiple of 32 needed


def test_mask_rcnn_trains_and_separates_its_backbone():
    from cnnkit.engine.transfer import head_names
    from cnnkit.models.detectors import build_maskrcnn, model_cost

    torch.manual_seed(0)
    net = build_maskrcnn(2, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:50] = 1
    losses = net([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[12.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]),
                                            "masks": masks}])
    assert {"loss_mask", "loss_classifier", "loss_box_reg"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    heads = head_names(net)
    assert any(name.startswith("roi_heads.mask_") for name in heads)
    assert not any(name.startswith("backbone.body.") for name in heads)
    params, gflops = model_cost(net, 64)
    assert params > 1e6 and gflops > 0 and net.training
