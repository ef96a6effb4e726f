"""IoU, cosine distances, class masking and the thresholded optimal assignment on hand-made cases."""

from __future__ import annotations

import numpy as np

from cnnkit.track.association import cosine_distance, gallery_distance, iou_matrix, linear_assignment, mask_classes


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0],     # identical: 1
                  [20.0, 20.0, 30.0, 30.0],   # disjoint: 0
                  [5.0, 0.0, 15.0, 10.0],     # half of each overlaps: 50 / 150
                  [0.0, 0.0, 10.0, 5.0],      # inside, half the area: 50 / 100
                  [10.0, 0.0, 20.0, 10.0]])   # touching edges: 0
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 0.0, 1 / 3, 0.5, 0.0]])
    assert iou_matrix(b, a).shape == (5, 1)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 5)
    assert iou_matrix(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 0.0  # empty boxes: no overlap, no nan


def test_linear_assignment_is_globally_optimal_where_greedy_is_not():
    # greedy takes the cheapest pair (0, 0) = 0.1 and is left with (1, 1) = 0.9: 1.0 in all;
    # the optimum crosses over: (0, 1) + (1, 0) = 0.2 + 0.3 = 0.5
    cost = np.array([[0.1, 0.2], [0.3, 0.9]])
    matches, rows, cols = linear_assignment(cost, threshold=1.0)
    assert sorted(map(tuple, matches.tolist())) == [(0, 1), (1, 0)]
    assert rows.size == 0 and cols.size == 0


def test_linear_assignment_leaves_pairs_above_the_threshold_unmatched():
    cost = np.array([[0.1, 0.95], [0.9, 0.8], [np.inf, np.nan]])
    matches, rows, cols = linear_assignment(cost, threshold=0.7)
    assert matches.tolist() == [[0, 0]]
    assert rows.tolist() == [1, 2] and cols.tolist() == [1]
    # an inadmissible pair is never taken in place of an admissible one
    matches, rows, cols = linear_assignment(np.array([[0.5, 100.0], [0.6, 100.0]]), threshold=0.7)
    assert len(matches) == 1 and rows.size == 1 and cols.tolist() == [1]


def test_linear_assignment_on_empty_and_rectangular_costs():
    matches, rows, cols = linear_assignment(np.zeros((0, 3)), 0.5)
    assert matches.shape == (0, 2) and rows.size == 0 and cols.tolist() == [0, 1, 2]
    matches, rows, cols = linear_assignment(np.array([[0.4, 0.1, 0.3]]), 0.5)
    assert matches.tolist() == [[0, 1]] and cols.tolist() == [0, 2]


def test_class_aware_masking_forbids_other_class_pairs():
    cost = np.zeros((3, 3))
    masked = mask_classes(cost, np.array([0, 1, -1]), np.array([0, 1, 2]))
    expected = np.array([[0, np.inf, np.inf], [np.inf, 0, np.inf], [0, 0, 0]])  # -1 (unknown) matches any class
    np.testing.assert_array_equal(masked, expected)
    assert (cost == 0).all()  # a copy
    matches, _, _ = linear_assignment(mask_classes(np.full((2, 2), 0.1), [0, 1], [1, 0]), 0.5)
    assert sorted(map(tuple, matches.tolist())) == [(0, 1), (1, 0)]


def test_cosine_and_gallery_distances():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])  # unnormalised on purpose
    b = np.array([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_distance(a, b), [[0, 1 - 2**-0.5, 2], [1, 1 - 2**-0.5, 1]], atol=1e-12)
    # a track's distance is its nearest gallery feature's
    galleries = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[-1.0, 0.0]])]
    np.testing.assert_allclose(gallery_distance(galleries, np.array([[0.0, 1.0], [1.0, 0.0]]), normalised=True),
                               [[0.0, 0.0], [1.0, 2.0]], atol=1e-12)
    assert gallery_distance(galleries, np.zeros((0, 2))).shape == (2, 0)
    assert gallery_distance([], np.zeros((3, 2))).shape == (0, 3)
