"""Detection task pieces: dataset samples from awkward images, padding of detections, COCO results with
the dataset's own ids, the confusion matrix with a background row and column, PR curves."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.augment.presets import augment_spec, dense_transforms
from cnnkit.data.detection import DetectionImage
from cnnkit.tasks.detect.task import DetectionSet, DetectTask, collate_detection, confusion_matrix, pad_detections, pr_curves


def _image(path: Path, mode: str, size=(64, 48)) -> Path:
    if mode == "I;16":
        Image.fromarray((np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 7 % 65535).astype(np.uint16)).save(path)
    else:
        Image.new(mode, size, 128 if mode == "L" else (10, 200, 30, 128)[: len(mode)]).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "RGB"])
def test_dataset_reads_any_mode_and_keeps_boxes(tmp_path, mode):
    path = _image(tmp_path / "a.png", mode)
    record = DetectionImage(path, 7, 64, 48, np.array([[4.0, 5.0, 30.0, 40.0]]), np.array([3]))
    image, target, index = DetectionSet([record], {3: 1}, dense_transforms(None, False, mean=None, std=None))[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert target["labels"].tolist() == [1] and index == 0
    assert torch.allclose(target["boxes"], torch.tensor([[4.0, 5.0, 30.0, 40.0]]))


def test_negative_image_and_resize_keep_aspect(tmp_path):
    path = _image(tmp_path / "neg.png", "RGB", (200, 100))
    negative = DetectionImage(path, "neg", 200, 100)
    boxed = DetectionImage(path, "pos", 200, 100, np.array([[20.0, 10.0, 120.0, 60.0]]), np.array([1]))
    data = DetectionSet([negative, boxed], {1: 1}, dense_transforms(64, True, augment_spec("none", "detect"), mean=None, std=None,
                                                                     keep_aspect=True))
    image, target, _ = data[0]
    assert image.shape == (3, 32, 64) and target["boxes"].shape == (0, 4) and target["labels"].numel() == 0
    _, target, _ = data[1]
    assert torch.allclose(target["boxes"], torch.tensor([[6.4, 3.2, 38.4, 19.2]]), atol=1e-4)
    batch = collate_detection([data[0], None, data[1]])
    assert len(batch[0]) == 2 and batch[2].tolist() == [0, 1]
    assert collate_detection([None]) is None


def test_annotation_size_differs_from_file(tmp_path):
    """A COCO record says 128x96 but the file is 64x48: boxes are scaled into the file's pixels."""
    path = _image(tmp_path / "small.png", "RGB", (64, 48))
    record = DetectionImage(path, 1, 128, 96, np.array([[20.0, 20.0, 60.0, 80.0]]), np.array([1]))
    _, target, _ = DetectionSet([record], {1: 1}, dense_transforms(None, False, mean=None, std=None))[0]
    assert torch.allclose(target["boxes"], torch.tensor([[10.0, 10.0, 30.0, 40.0]]))


def test_unreadable_image_is_skipped(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    record = DetectionImage(bad, 1, 10, 10)
    assert DetectionSet([record], {}, dense_transforms(None, False, mean=None, std=None))[0] is None


def test_pad_detections_sorts_filters_and_pads():
    det = [{"boxes": torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]), "scores": torch.tensor([0.2, 0.9, 0.5]),
            "labels": torch.tensor([1, 2, 1])},
           {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = pad_detections(det, max_det=2)
    assert out["boxes"].shape == (2, 2, 4)
    assert out["scores"][0].tolist() == pytest.approx([0.9, 0.5]) and out["labels"][0].tolist() == [2, 1]
    assert out["labels"][1].tolist() == [0, 0]
    kept = pad_detections(det, max_det=5, keep={1})
    assert kept["labels"][0].tolist() == [1, 1, 0, 0, 0] and kept["scores"][0, :2].tolist() == pytest.approx([0.5, 0.2])


def test_coco_results_use_dataset_ids():
    images = [DetectionImage(Path("a.png"), 42, 10, 10), DetectionImage(Path("b.png"), "b", 10, 10)]
    task = DetectTask(images, [(17, "cat"), (90, "dog")], [17, 90, None])
    outputs = {"index": np.array([1, 0]),
               "boxes": np.array([[[1, 2, 4, 6], [0, 0, 1, 1]], [[2, 2, 3, 3], [0, 0, 0, 0]]], dtype=np.float32),
               "scores": np.array([[0.8, 0.4], [0.6, 0.0]], dtype=np.float32),
               "labels": np.array([[2, 3], [1, 0]])}
    results = task.coco_results(outputs)
    assert results == [{"image_id": 42, "category_id": 17, "bbox": [2.0, 2.0, 1.0, 1.0], "score": pytest.approx(0.6)},
                       {"image_id": "b", "category_id": 90, "bbox": [1.0, 2.0, 3.0, 4.0], "score": pytest.approx(0.8)}]


def test_coco_results_return_to_the_recorded_frame():
    """An annotation that records the image at half its file's size (resized after labelling): the detector
    sees the file, its boxes go back to the frame the ground truth is in."""
    images = [DetectionImage(Path("a.png"), 1, 50, 40)]
    task = DetectTask(images, [(1, "cat")], [1])
    outputs = {"index": np.array([0]), "size": np.array([[80, 100]]),  # [H, W] of the loaded file
               "boxes": np.array([[[10, 20, 30, 60]]], dtype=np.float32), "scores": np.array([[0.9]], dtype=np.float32),
               "labels": np.array([[1]])}
    assert task.coco_results(outputs)[0]["bbox"] == [5.0, 10.0, 10.0, 20.0]


def test_confusion_matrix_by_hand():
    # image 1: a cat found as a cat, a dog found as a cat; image 2: a missed dog and a false cat
    truth = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 1])),
             (np.array([[0, 0, 10, 10]]), np.array([1]))]
    predicted = [(np.array([[0, 0, 10, 11], [20, 21, 30, 30]]), np.array([0, 0])),
                 (np.array([[50, 50, 60, 60]]), np.array([0]))]
    matrix = confusion_matrix(truth, predicted, num_classes=2)
    expected = np.array([[1, 0, 0],    # cat: found as cat
                         [1, 0, 1],    # dog: once as cat, once missed (background)
                         [1, 0, 0]])   # background: one false cat
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_ignores_low_overlap():
    truth = [(np.array([[0, 0, 10, 10]]), np.array([0]))]
    predicted = [(np.array([[6, 6, 16, 16]]), np.array([0]))]  # IoU 16/184
    np.testing.assert_array_equal(confusion_matrix(truth, predicted, 1), [[0, 1], [1, 0]])


def test_confusion_matrix_pairs_one_to_one_for_the_most_overlap():
    # cat [0, 10] and dog [3, 13] (x; all boxes 10 high). Prediction cat [2, 12] overlaps the dog most (IoU 9/11)
    # but the cat too (8/12); prediction dog [5, 16] overlaps only the dog enough (8/13; the cat 5/16). Pairing
    # the best overlap first would call the dog a cat, miss the cat and raise a false dog; the one-to-one
    # pairing of most total overlap pairs cat-cat and dog-dog.
    truth = [(np.array([[0, 0, 10, 10], [3, 0, 13, 10]]), np.array([0, 1])),
             (np.array([[50, 50, 60, 60]]), np.array([0]))]
    predicted = [(np.array([[2, 0, 12, 10], [5, 0, 16, 10]]), np.array([0, 1])),
                 (np.array([[50, 50, 60, 60], [50, 50, 60, 61]]), np.array([0, 0]))]  # the second cat box twice
    matrix = confusion_matrix(truth, predicted, num_classes=2)
    np.testing.assert_array_equal(matrix, [[2, 0, 0],   # both cats found as cats
                                           [0, 1, 0],   # the dog as a dog
                                           [1, 0, 0]])  # the duplicate: one true box pairs with one prediction


def test_val_confusion_matrix_from_coco_results_by_hand(tmp_path, monkeypatch):
    """What val draws: results in COCO form (x, y, w, h boxes, the dataset's category ids 17 and 90), only
    those scoring at least 0.25 counted."""
    from cnnkit.evaluate import plots
    from cnnkit.tasks.detect import task as detect

    drawn = {}
    real = plots.plot_confusion_matrix

    def keep(matrix, names, path, **kwargs):
        drawn["matrix"], drawn["names"] = np.asarray(matrix), names
        return real(matrix, names, path, **kwargs)

    monkeypatch.setattr(plots, "plot_confusion_matrix", keep)
    images = [DetectionImage(tmp_path / "a.png", 1, 100, 100, np.array([[10.0, 10.0, 30.0, 40.0], [50.0, 50.0, 90.0, 70.0]]),
                             np.array([17, 90])),
              DetectionImage(tmp_path / "b.png", "b", 100, 100, np.array([[0.0, 0.0, 20.0, 20.0]]), np.array([90]))]
    results = [{"image_id": 1, "category_id": 17, "bbox": [10.0, 10.0, 20.0, 30.0], "score": 0.9},  # the 17, found
               {"image_id": 1, "category_id": 17, "bbox": [50.0, 50.0, 40.0, 20.0], "score": 0.6},  # the 90, called 17
               {"image_id": "b", "category_id": 90, "bbox": [0.0, 0.0, 20.0, 20.0], "score": 0.2},  # right, too unsure
               {"image_id": "b", "category_id": 90, "bbox": [60.0, 60.0, 10.0, 10.0], "score": 0.5}]  # a false 90
    detect.draw(images, [(17, "cat"), (90, "dog")], results, tmp_path)
    assert drawn["names"] == ["cat", "dog", "background"]
    np.testing.assert_array_equal(drawn["matrix"], [[1, 0, 0],   # cat found
                                                    [1, 0, 1],   # one dog called a cat, one missed
                                                    [0, 1, 0]])  # one false dog


def test_pr_curves_match_cocoeval(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from cnnkit.evaluate.coco import coco_ground_truth

    rng = np.random.default_rng(0)
    images, results = [], []
    for i in range(6):
        boxes = rng.uniform(0, 50, (3, 2))
        boxes = np.concatenate([boxes, boxes + rng.uniform(5, 30, (3, 2))], axis=1)
        labels = rng.integers(1, 3, 3)
        images.append(DetectionImage(Path(f"{i}.png"), i + 1, 100, 100, boxes, labels))
        for box, label in zip(boxes, labels):
            jitter = box + rng.normal(0, 2, 4)
            results.append({"image_id": i + 1, "category_id": int(label), "bbox": [*jitter[:2], *(jitter[2:] - jitter[:2])],
                            "score": float(rng.uniform())})
    categories = [(1, "a"), (2, "b")]
    curves = pr_curves(images, categories, results)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = coco_ground_truth(images, categories)
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
    for k, name in enumerate(["a", "b"]):
        reference = evaluation.eval["precision"][0, :, k, 0, -1]
        recall, precision, ap = curves[name]
        np.testing.assert_allclose(precision, np.where(reference < 0, 0, reference))
        assert ap == pytest.approx(float(np.mean(reference)))


def test_confusion_matrix_leaves_detections_on_ignored_regions_out():
    """A detection on a crowd region or VOC difficult object is neither a hit nor a false alarm, as in COCOeval;
    one elsewhere stays a false alarm, and a missed true box stays a miss."""
    import numpy as np

    from cnnkit.tasks.detect.task import confusion_matrix

    truth = [(np.array([[0, 0, 10, 10]], float), np.array([0]))]
    predicted = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], float), np.array([0, 1, 1]))]
    plain = confusion_matrix(truth, predicted, 2)
    assert plain[2, 1] == 2 and plain[0, 0] == 1
    ignored = [np.array([[48, 48, 62, 62]], float)]  # holds the second detection whole, not the third
    matrix = confusion_matrix(truth, predicted, 2, ignored=ignored)
    assert matrix[2, 1] == 1 and matrix[0, 0] == 1 and matrix.sum() == 2
    missed = confusion_matrix(truth, [(np.zeros((0, 4)), np.zeros(0, int))], 2, ignored=ignored)
    assert missed[0, 2] == 1 and missed.sum() == 1
