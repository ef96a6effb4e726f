"""Text detection's geometry: DBNet targets and post-processing on drawn quadrilaterals, ICDAR matching, reading
order and rectification."""

import cv2
import numpy as np
import pytest

from cnnkit.tasks.ocr.detect_post import (
    SHRINK_RATIO,
    boxes_from_prob,
    db_targets,
    detection_scores,
    join_row_pieces,
    match_pairs,
    order_points,
    polygon_iou,
    reading_order,
    rectify,
    unclip_distance,
)


def _raster_iou(a, b, shape=(300, 500)):
    ma, mb = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    cv2.fillPoly(ma, [np.round(np.asarray(a) * 8).astype(np.int32)], 1, shift=3)
    cv2.fillPoly(mb, [np.round(np.asarray(b) * 8).astype(np.int32)], 1, shift=3)
    return (ma & mb).sum() / (ma | mb).sum()


QUADS = [np.float32([[40, 50], [300, 70], [297, 110], [37, 90]]),      # a slanted line
         np.float32([[40, 150], [100, 150], [100, 180], [40, 180]]),   # a word
         np.float32([[120, 200], [460, 200], [460, 222], [120, 222]])]  # a long thin line


@pytest.mark.parametrize("quad", QUADS)
def test_targets_then_post_processing_recover_a_drawn_quadrilateral(quad):
    maps = db_targets([quad], [False], 300, 500)
    assert maps["gt"].sum() > 0 and maps["gt"].sum() < cv2.contourArea(quad)  # the kernel is inside, and smaller
    assert maps["thresh"].min() == pytest.approx(0.3) and maps["thresh"].max() == pytest.approx(0.7, abs=0.02)
    # a detector that predicts exactly the kernel gets the drawn quadrilateral back
    quads, scores = boxes_from_prob(maps["gt"] * 0.9)
    assert len(quads) == 1 and scores[0] == pytest.approx(0.9)
    assert polygon_iou(quads[0], quad) > 0.75


def test_ignored_and_tiny_text_is_masked_not_taught():
    tiny = np.float32([[10, 10], [40, 10], [40, 12], [10, 12]])
    maps = db_targets([QUADS[1], tiny], [True, False], 300, 500)
    assert maps["gt"].sum() == 0
    assert maps["mask"][165, 70] == 0 and maps["mask"][11, 25] == 0 and maps["mask"][250, 250] == 1


def test_unclip_distance_inverts_the_shrink_for_rectangles():
    for w, h in [(200, 20), (60, 30), (40, 40)]:
        k = 1 - SHRINK_RATIO ** 2
        shrink = w * h * k / (2 * (w + h))
        kernel_w, kernel_h = w - 2 * shrink, h - 2 * shrink
        assert unclip_distance(kernel_w, kernel_h) == pytest.approx(shrink, rel=1e-6)


def _box(x0, y0, x1, y1, degrees=0.0, about=(250, 150)):
    turn = np.radians(degrees)
    rot = np.float32([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return (np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - about) @ rot.T + about


@pytest.mark.parametrize("degrees", [0.0, 8.0])
def test_pieces_of_one_line_are_joined_and_other_boxes_are_not(degrees):
    pieces = [_box(40, 100, 120, 120, degrees), _box(132, 100, 260, 120, degrees)]  # a 12-px gap, 0.6 of the height
    others = [_box(300, 100, 380, 120, degrees),   # 40 px on: another label on the row
              _box(40, 130, 200, 150, degrees),    # the next line
              _box(275, 60, 340, 100, degrees)]    # beside the first, but twice as tall
    quads = np.stack(pieces + others)
    scores = np.float32([0.9, 0.6, 0.8, 0.8, 0.8])
    joined, joined_scores = join_row_pieces(quads, scores, gap=1.0)
    assert len(joined) == 4
    line = next(q for q in joined if polygon_iou(q, _box(40, 100, 260, 120, degrees)) > 0.95)
    assert joined_scores[[np.array_equal(q, line) for q in joined].index(True)] == pytest.approx((0.9 * 80 + 0.6 * 128) / 208, abs=0.01)
    assert all(any(polygon_iou(q, other) > 0.99 for q in joined) for other in others)
    assert len(join_row_pieces(quads, scores, gap=0.5)[0]) == 5  # the gap is 0.6 of the height
    assert join_row_pieces(quads, scores, gap=0.0)[0] is quads


def test_low_scoring_regions_and_empty_maps_give_nothing():
    prob = np.zeros((100, 200), np.float32)
    assert boxes_from_prob(prob)[0].shape == (0, 4, 2)
    prob[40:50, 20:120] = 0.45  # above the binarisation threshold, below the box threshold
    assert len(boxes_from_prob(prob)[0]) == 0


def test_polygon_iou_matches_rasterised_overlap():
    a, b = QUADS[0], QUADS[0] + np.float32([30, 8])
    assert polygon_iou(a, b) == pytest.approx(_raster_iou(a, b), abs=0.02)
    assert polygon_iou(a, a) == pytest.approx(1.0)
    assert polygon_iou(a, QUADS[2]) == 0.0


def test_matching_is_one_to_one_at_iou_half():
    truth = [QUADS[0], QUADS[1]]
    pred = np.stack([QUADS[0] + 2, QUADS[0] + 4, QUADS[1] + np.float32([45, 0])])  # two on one truth, one off by 75 %
    pairs = match_pairs(pred, truth)
    assert pairs == [(0, 0)]
    scores = detection_scores(len(pairs), len(pred), len(truth))
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(0.5)
    assert scores["hmean"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))


def test_reading_order_rows_then_columns():
    box = np.float32([[0, 0], [80, 0], [80, 20], [0, 20]])
    quads = np.stack([box + [200, 62], box + [10, 0], box + [10, 60], box + [200, 3], box + [110, 1]])
    assert reading_order(quads) == [1, 4, 3, 2, 0]
    assert reading_order(np.zeros((0, 4, 2))) == []


def test_order_points_and_rectify():
    quad = QUADS[0]
    assert np.allclose(order_points(quad[[2, 0, 3, 1]]), quad)
    page = np.full((300, 500, 3), 255, np.uint8)
    cv2.fillPoly(page, [np.int32(quad)], (0, 0, 0))
    crop = rectify(page, quad)
    assert crop.shape[1] > 5 * crop.shape[0]  # upright and wide
    assert crop[3:-3, 3:-3].mean() < 30  # the dark region fills it
    tall = np.float32([[100, 50], [130, 50], [130, 250], [100, 250]])
    assert rectify(page, tall).shape[1] > rectify(page, tall).shape[0]  # turned to run left to right


def test_end_to_end_scoring_counts_misses_false_detections_and_dont_care():
    from cnnkit.tasks.ocr.detect_task import score_page

    truth = [QUADS[0], QUADS[1], QUADS[2]]
    texts = ["hello world", "total", "###"]
    quads = np.stack([QUADS[0] + 1, QUADS[2] + 1, QUADS[1] + np.float32([0, 60])])  # line 1 found, "###" hit, a false one
    counts = score_page(quads, truth, [t == "###" for t in texts], ["hello word", "junk", "xy"], texts)
    assert counts["tp"] == 1 and counts["predicted"] == 2 and counts["truths"] == 2  # the "###" hit counts for nothing
    # one edit in line 1, all 5 characters of the missed "total", the 2 the false detection read
    assert counts["char_errors"] == 1 + 5 + 2 and counts["chars"] == len("hello world") + len("total")


def test_expand_quad_grows_each_side_along_the_quads_axes():
    from cnnkit.tasks.ocr.detect_post import expand_quad

    box = np.float32([[10, 20], [110, 20], [110, 40], [10, 40]])
    assert np.allclose(expand_quad(box, 0.25), [[5, 15], [115, 15], [115, 45], [5, 45]])
    tilted = QUADS[0]
    grown = expand_quad(tilted, 0.2)
    assert polygon_iou(grown, tilted) == pytest.approx(cv2.contourArea(tilted) / cv2.contourArea(grown), rel=1e-3)
