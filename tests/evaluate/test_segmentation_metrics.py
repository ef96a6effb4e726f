"""cnnkit's segmentation metrics against independent references: scikit-learn's confusion matrix,
torchmetrics' per-class Jaccard index and F1 (= Dice), plain numpy on the masks, and a brute-force
Hausdorff distance over boundary points (scipy's cdist and directed_hausdorff)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist, directed_hausdorff
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from cnnkit.evaluate.segmentation import confusion_matrix, hd95, per_class_hd95, segmentation_scores

IGNORE = 255


def _random_maps(seed: int, shape: tuple[int, ...], num_classes: int, ignore_share: float = 0.1,
                 truth_classes: int | None = None, pred_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) int64 maps, about ``ignore_share`` of the target set to IGNORE; the truth and the
    prediction may be drawn from fewer classes so that some classes are absent from one or both."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, truth_classes or num_classes, shape)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, pred_classes or num_classes, shape))  # mostly right
    target[rng.random(shape) < ignore_share] = IGNORE
    return torch.as_tensor(pred), torch.as_tensor(target)


def _blob(rng: np.random.Generator, shape: tuple[int, ...], smooth: float = 3.0) -> np.ndarray:
    """A random boolean mask of a few smooth irregular regions."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
    return noise > noise.std() * 0.5


def _brute_force_hd(pred: np.ndarray, truth: np.ndarray, percentile: float, spacing=None) -> float:
    """Every boundary point against every other: the directed percentiles both ways, then the larger."""
    pred_points, truth_points = _boundary_points(pred, spacing), _boundary_points(truth, spacing)
    distances = cdist(pred_points, truth_points)
    return max(np.percentile(distances.min(axis=1), percentile), np.percentile(distances.min(axis=0), percentile))


def _boundary_points(mask: np.ndarray, spacing=None) -> np.ndarray:
    edges = mask & ~ndimage.binary_erosion(mask)
    return np.argwhere(edges) * np.asarray(spacing if spacing is not None else [1.0] * mask.ndim)


def _square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


# confusion_matrix

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(997,), (3, 17, 23)])
def test_confusion_matrix_matches_sklearn(seed, shape):
    pred, target = _random_maps(seed, shape, num_classes=5)
    matrix = confusion_matrix(pred, target, 5)
    counted = target.numpy() != IGNORE
    expected = sklearn_confusion_matrix(target.numpy()[counted], pred.numpy()[counted], labels=range(5))
    assert matrix.dtype == torch.int64 and matrix.shape == (5, 5)
    np.testing.assert_array_equal(matrix.numpy(), expected)


def test_confusion_matrix_of_uint8_masks_with_many_classes():
    """target * C would overflow uint8 (40 * 39 > 255): the matrix must still be right."""
    pred, target = _random_maps(3, (4, 31, 29), num_classes=40)
    matrix = confusion_matrix(pred.to(torch.uint8), target.to(torch.uint8), 40)
    counted = target.numpy() != IGNORE
    expected = sklearn_confusion_matrix(target.numpy()[counted], pred.numpy()[counted], labels=range(40))
    np.testing.assert_array_equal(matrix.numpy(), expected)


def test_confusion_matrix_leaves_out_target_outside_classes():
    target = torch.tensor([0, 1, 2, 7, 255, 1])
    pred = torch.tensor([0, 1, 1, 2, 0, 0])
    expected = [[1, 0, 0], [1, 1, 0], [0, 1, 0]]  # the 7 and the 255 are not counted
    assert confusion_matrix(pred, target, 3).tolist() == expected
    assert confusion_matrix(pred, target, 3, ignore_index=None).tolist() == expected  # 255 is outside 0..2 anyway
    assert confusion_matrix(pred, target, 3, ignore_index=1).tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0]]


def test_confusion_matrix_sums_over_batches():
    pred, target = _random_maps(4, (6, 20, 20), num_classes=4)
    whole = confusion_matrix(pred, target, 4)
    parts = confusion_matrix(pred[:2], target[:2], 4) + confusion_matrix(pred[2:], target[2:], 4)
    assert torch.equal(whole, parts)
    assert int(whole.sum()) == int((target != IGNORE).sum())


@pytest.mark.parametrize("bad_class", [4, -1])
def test_confusion_matrix_refuses_pred_outside_classes(bad_class):
    target = torch.tensor([[0, 1], [2, 3]])
    pred = torch.tensor([[0, 1], [bad_class, 3]])
    with pytest.raises(ValueError, match="outside 0..3"):
        confusion_matrix(pred, target, 4)


def test_confusion_matrix_ignores_pred_on_pixels_not_counted():
    """A prediction on an ignored pixel never reaches the matrix, so its value cannot be wrong."""
    target = torch.tensor([0, 1, IGNORE])
    pred = torch.tensor([0, 1, IGNORE])
    assert confusion_matrix(pred, target, 2).tolist() == [[1, 0], [0, 1]]


def test_confusion_matrix_refuses_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="argmax"):
        confusion_matrix(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_confusion_matrix_on_cuda_matches_cpu():
    pred, target = _random_maps(5, (2, 64, 64), num_classes=7)
    on_gpu = confusion_matrix(pred.cuda(), target.cuda(), 7)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.int64
    assert torch.equal(on_gpu.cpu(), confusion_matrix(pred, target, 7))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.full((3,), 9, device="cuda"), torch.zeros(3, dtype=torch.long, device="cuda"), 7)


# segmentation_scores

NAMES6 = ["background", "road", "car", "tree", "sky", "boat"]


def _scores_of_random_maps(seed: int):
    """Truth from classes 0..3, prediction from 0..4: class 4 is only predicted, class 5 in neither.
    The matrix is accumulated over two batches, as an evaluation loop does."""
    pred, target = _random_maps(seed, (4, 24, 24), num_classes=6, truth_classes=4, pred_classes=5)
    matrix = confusion_matrix(pred[:2], target[:2], 6) + confusion_matrix(pred[2:], target[2:], 6)
    return pred, target, segmentation_scores(matrix, NAMES6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_iou_and_dice_match_torchmetrics(seed):
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    pred, target, scores = _scores_of_random_maps(seed)
    jaccard = MulticlassJaccardIndex(6, average=None, ignore_index=IGNORE)(pred, target)
    f1 = MulticlassF1Score(6, average=None, ignore_index=IGNORE)(pred, target)  # F1 = 2TP/(2TP+FP+FN) = Dice
    # torchmetrics scores a class in neither map 0 (its zero_division); compare only the classes present
    present = [c for c in range(6) if (target == c).any() or (pred[target != IGNORE] == c).any()]
    assert present == [0, 1, 2, 3, 4]
    for c in present:
        per_class = scores["per_class"][NAMES6[c]]
        assert per_class["iou"] == pytest.approx(float(jaccard[c]), abs=1e-6)
        assert per_class["dice"] == pytest.approx(float(f1[c]), abs=1e-6)
    assert scores["per_class"]["car"]["iou"] > 0 and scores["per_class"]["sky"]["iou"] == 0.0  # sky: only false positives


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_numpy_on_the_masks(seed):
    pred, target, scores = _scores_of_random_maps(seed)
    pred, target = pred.numpy(), target.numpy()
    counted = target != IGNORE
    iou, dice = {}, {}
    for c, name in enumerate(NAMES6):
        truth_c, pred_c = (target == c) & counted, (pred == c) & counted
        overlap, union = (truth_c & pred_c).sum(), (truth_c | pred_c).sum()
        if union:
            iou[c], dice[c] = overlap / union, 2 * overlap / (truth_c.sum() + pred_c.sum())
        per_class = scores["per_class"][name]
        assert per_class["share"] == pytest.approx(truth_c.sum() / counted.sum())
        assert per_class["recall"] == (pytest.approx(overlap / truth_c.sum()) if truth_c.any() else None)
        assert per_class["precision"] == (pytest.approx(overlap / pred_c.sum()) if pred_c.any() else None)
    assert sorted(iou) == [0, 1, 2, 3, 4]
    assert scores["miou"] == pytest.approx(np.mean(list(iou.values())))
    assert scores["dice"] == pytest.approx(np.mean(list(dice.values())))
    assert scores["miou_fg"] == pytest.approx(np.mean([iou[c] for c in iou if c != 0]))
    assert scores["dice_fg"] == pytest.approx(np.mean([dice[c] for c in dice if c != 0]))
    assert scores["pixel_accuracy"] == pytest.approx((pred == target)[counted].mean())


def test_absent_class_is_none_and_left_out_of_the_means():
    matrix = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])  # class 2 in neither truth nor prediction
    scores = segmentation_scores(matrix, ["a", "b", "c"])
    absent = scores["per_class"]["c"]
    assert absent["iou"] is None and absent["dice"] is None
    assert absent["precision"] is None and absent["recall"] is None and absent["share"] == 0.0
    iou_a, iou_b = 8 / 11, 9 / 12
    assert scores["miou"] == pytest.approx((iou_a + iou_b) / 2)  # not divided by 3, not pulled to 0 or 1
    assert scores["dice"] == pytest.approx((16 / 19 + 18 / 21) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(17 / 20)


def test_foreground_means_leave_out_the_background_class():
    matrix = torch.tensor([[90, 10, 0], [5, 5, 0], [5, 0, 5]])
    iou = [90 / 110, 5 / 20, 5 / 10]
    dice = [180 / 200, 10 / 25, 10 / 15]
    scores = segmentation_scores(matrix, ["background", "cell", "nucleus"])
    assert scores["miou"] == pytest.approx(np.mean(iou))
    assert scores["miou_fg"] == pytest.approx(np.mean(iou[1:]))
    assert scores["dice_fg"] == pytest.approx(np.mean(dice[1:]))
    no_background = segmentation_scores(matrix, ["background", "cell", "nucleus"], background=None)
    assert no_background["miou_fg"] == pytest.approx(no_background["miou"])
    assert no_background["dice_fg"] == pytest.approx(no_background["dice"])
    last_is_background = segmentation_scores(matrix, ["sea", "cell", "background"], background=2)
    assert last_is_background["miou_fg"] == pytest.approx(np.mean(iou[:2]))


def test_empty_matrix_has_no_scores():
    scores = segmentation_scores(torch.zeros(3, 3, dtype=torch.int64), ["a", "b", "c"])
    assert scores["miou"] is None and scores["dice"] is None and scores["pixel_accuracy"] is None
    assert scores["miou_fg"] is None and scores["dice_fg"] is None
    assert all(value is None for per_class in scores["per_class"].values() for value in per_class.values())


def test_scores_are_plain_json_numbers():
    _, _, scores = _scores_of_random_maps(0)
    values = [scores[key] for key in ("miou", "dice", "pixel_accuracy", "miou_fg", "dice_fg")]
    values += [value for per_class in scores["per_class"].values() for value in per_class.values()]
    assert all(value is None or type(value) is float for value in values)
    assert None in values  # class "boat" is absent
    json.dumps(scores, allow_nan=False)


def test_scores_refuse_mismatched_names():
    with pytest.raises(ValueError, match="class names"):
        segmentation_scores(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="background"):
        segmentation_scores(np.eye(3), ["a", "b", "c"], background=3)


# hd95

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("percentile", [95.0, 50.0])
def test_hd95_matches_brute_force_on_random_blobs(seed, percentile):
    rng = np.random.default_rng(seed)
    pred, truth = _blob(rng, (48, 56)), _blob(rng, (48, 56))
    assert pred.any() and truth.any()
    assert hd95(pred, truth, percentile=percentile) == pytest.approx(_brute_force_hd(pred, truth, percentile))


def test_hd95_matches_brute_force_in_3d_with_spacing():
    rng = np.random.default_rng(7)
    pred, truth = _blob(rng, (14, 18, 16), smooth=2.0), _blob(rng, (14, 18, 16), smooth=2.0)
    spacing = (2.5, 0.8, 1.0)
    assert hd95(pred, truth, spacing=spacing) == pytest.approx(_brute_force_hd(pred, truth, 95.0, spacing))


@pytest.mark.parametrize("seed", [0, 1])
def test_hd100_is_the_hausdorff_distance_of_the_boundaries(seed):
    rng = np.random.default_rng(seed)
    pred, truth = _blob(rng, (40, 40)), _blob(rng, (40, 40))
    pred_points, truth_points = _boundary_points(pred), _boundary_points(truth)
    expected = max(directed_hausdorff(pred_points, truth_points)[0], directed_hausdorff(truth_points, pred_points)[0])
    assert hd95(pred, truth, percentile=100.0) == pytest.approx(expected)


def test_hd95_of_two_squares_shifted_by_three_pixels():
    truth = _square((32, 32), 10, 10, 10)
    pred = _square((32, 32), 10, 13, 10)
    assert hd95(pred, truth) == pytest.approx(3.0)
    assert hd95(truth, pred) == pytest.approx(3.0)
    assert hd95(truth, truth) == 0.0


def test_hd95_shrugs_off_a_stray_pixel_that_hausdorff_does_not():
    truth = _square((64, 64), 5, 5, 20)
    pred = truth.copy()
    pred[55, 50] = True  # one false-positive pixel far away: 1 of 77 boundary pixels
    assert hd95(pred, truth) == 0.0
    assert hd95(pred, truth, percentile=100.0) == pytest.approx(math.hypot(55 - 24, 50 - 24))


def test_hd95_anisotropic_spacing():
    truth = _square((40, 40), 10, 10, 10)
    along_rows = _square((40, 40), 13, 10, 10)  # shifted 3 pixels along axis 0
    along_columns = _square((40, 40), 10, 13, 10)  # shifted 3 pixels along axis 1
    assert hd95(along_rows, truth, spacing=(2.0, 0.5)) == pytest.approx(6.0)
    shifted_columns = hd95(along_columns, truth, spacing=(2.0, 0.5))
    assert shifted_columns == pytest.approx(_brute_force_hd(along_columns, truth, 95.0, (2.0, 0.5)))
    assert shifted_columns == pytest.approx(1.5)  # 3 pixels of 0.5 along the columns
    rng = np.random.default_rng(11)
    pred, truth = _blob(rng, (36, 44)), _blob(rng, (36, 44))
    assert hd95(pred, truth, spacing=(0.7, 3.0)) == pytest.approx(_brute_force_hd(pred, truth, 95.0, (0.7, 3.0)))
    assert hd95(pred, truth, spacing=(0.7, 3.0)) != pytest.approx(hd95(pred, truth))


def test_hd95_of_empty_masks():
    empty, square = np.zeros((30, 40), dtype=bool), _square((30, 40), 5, 5, 8)
    assert math.isnan(hd95(empty, empty))
    assert hd95(empty, square) == pytest.approx(50.0)  # the diagonal of 30 x 40
    assert hd95(square, empty) == pytest.approx(50.0)
    assert hd95(square, empty, spacing=(2.0, 0.5)) == pytest.approx(math.hypot(60.0, 20.0))


def test_hd95_refuses_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        hd95(np.ones((4, 4), bool), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((4, 4), bool), np.ones((4, 4), bool), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hd95(np.ones((4, 4), bool), np.ones((4, 4), bool), percentile=101)


# per_class_hd95

def test_per_class_hd95_removes_ignored_pixels_from_both_masks():
    truth = np.zeros((40, 40), dtype=np.int64)
    truth[5:15, 5:15] = 1
    truth[25:35, 25:35] = IGNORE  # unlabelled region
    pred = np.zeros_like(truth)
    pred[5:15, 8:18] = 1  # class 1 shifted by 3 pixels
    pred[28:32, 28:32] = 1  # ... and predicted inside the unlabelled region, which must not count
    pred[0, 39] = 3  # class 3: only predicted
    distances = per_class_hd95(pred, truth, num_classes=4)
    assert distances.dtype == np.float64 and distances.shape == (4,)
    known = truth != IGNORE
    assert distances[0] == pytest.approx(hd95((pred == 0) & known, (truth == 0) & known))
    assert distances[1] == pytest.approx(3.0)
    assert hd95(pred == 1, truth == 1) > 15  # what counting the unlabelled region would give
    assert math.isnan(distances[2])  # in neither map
    assert distances[3] == pytest.approx(math.hypot(40, 40))  # only predicted: the diagonal


def test_per_class_hd95_matches_hd95_per_class_on_random_maps():
    rng = np.random.default_rng(5)
    truth = np.where(_blob(rng, (32, 32)), 1, 0) + np.where(_blob(rng, (32, 32)), 2, 0)  # classes 0..3
    pred = np.where(_blob(rng, (32, 32)), 1, 0) + np.where(_blob(rng, (32, 32)), 2, 0)
    truth[:4] = IGNORE
    known = truth != IGNORE
    expected = [hd95((pred == c) & known, (truth == c) & known, spacing=(1.0, 2.0)) for c in range(4)]
    np.testing.assert_allclose(per_class_hd95(pred, truth, 4, spacing=(1.0, 2.0)), expected)
    # an ignore_index inside 0..C-1 (the background left unlabelled) is removed the same way
    known = (truth != IGNORE) & (truth != 0)
    expected = [hd95((pred == c) & known, (truth == c) & known) for c in range(4)]
    np.testing.assert_allclose(per_class_hd95(pred, truth, 4, ignore_index=0), expected)


def test_per_class_hd95_refuses_pred_outside_classes():
    with pytest.raises(ValueError, match="outside 0..1"):
        per_class_hd95(np.array([[0, 5]]), np.array([[0, 1]]), num_classes=2)
