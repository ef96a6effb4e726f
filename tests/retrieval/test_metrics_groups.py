"""Retrieval metrics against the reference implementations; duplicate groups and k-means clusters."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.retrieval.groups import duplicate_groups, kmeans_clusters
from cnnkit.retrieval.index import normalize
from cnnkit.retrieval.metrics import retrieval_metrics


def noisy_classes(n: int, classes: int, noise: float, seed: int, dim: int = 12):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, dim))
    return normalize(means[labels] + noise * rng.normal(size=(n, dim))), labels


def test_map_matches_scikit_learn_average_precision():
    from sklearn.metrics import average_precision_score

    queries, q_labels = noisy_classes(40, 5, 1.5, seed=0)
    gallery, g_labels = noisy_classes(300, 5, 1.5, seed=1)
    ours = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 5, 10), chunk_cells=1000)  # several chunks
    sims = queries @ gallery.T
    expected = np.mean([average_precision_score(g_labels == label, row) for row, label in zip(sims, q_labels)])
    assert ours["map"] == pytest.approx(expected, abs=1e-6)
    nearest = np.argsort(-sims, axis=1)
    for k in (1, 5, 10):
        assert ours[f"recall@{k}"] == pytest.approx(np.mean([(g_labels[r[:k]] == l).any() for r, l in zip(nearest, q_labels)]))
    assert 0.1 < ours["recall@1"] < ours["recall@5"] < 1.0  # a hard enough set that the checks mean something


def _at(degrees: list[float]) -> np.ndarray:
    """Unit vectors at these angles: the nearest neighbours are the nearest angles."""
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_recall_at_k_and_map_by_hand():
    gallery, g_labels = _at([0, 10, 20, 30, 40]), np.array(list("ABBAC"))
    # first same-label neighbour: 0° C at rank 5 (only 40° is C); 40° B at rank 3 (40° C, 30° A, 20° B);
    # 27° A at rank 1 (30°); 12° A at rank 3 (10° B, 20° B, 0° A)
    queries, q_labels = _at([0, 40, 27, 12]), np.array(list("CBAA"))
    ours = retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 2, 3, 4, 5), chunk_cells=10)  # chunks of 2 queries
    assert [ours[f"recall@{k}"] for k in (1, 2, 3, 4, 5)] == pytest.approx([1 / 4, 1 / 4, 3 / 4, 3 / 4, 1])
    # AP: C at rank 5: 1/5; B at ranks 3 and 4: (1/3 + 2/4) / 2; A at 1 and 5: (1 + 2/5) / 2; A at 3 and 4
    assert ours["map"] == pytest.approx((1 / 5 + (1 / 3 + 1 / 2) / 2 + (1 + 2 / 5) / 2 + (1 / 3 + 1 / 2) / 2) / 4)

    # leave-one-out within one set: 0° A finds 25° A 2nd; 10° B has no other B (a miss, left out of map);
    # 25° A finds 0° A 3rd (10°, 45° nearer); 45° C finds 70° C 2nd; 70° C finds 45° C 1st
    vectors, labels = _at([0, 10, 25, 45, 70]), np.array(list("ABACC"))
    ours = retrieval_metrics(vectors, labels, vectors, labels, ks=(1, 2, 3, 4), same_set=True)
    assert [ours[f"recall@{k}"] for k in (1, 2, 3, 4)] == pytest.approx([1 / 5, 3 / 5, 4 / 5, 4 / 5])
    assert ours["map"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1) / 4)


def test_leave_one_out_recall_at_1_matches_pytorch_metric_learning():
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    embeddings, labels = noisy_classes(200, 6, 1.2, seed=3)
    ours = retrieval_metrics(embeddings, labels, embeddings, labels, same_set=True)
    reference = AccuracyCalculator(include=("precision_at_1",), k=1).get_accuracy(embeddings, labels)
    assert ours["recall@1"] == pytest.approx(reference["precision_at_1"], abs=1e-6)
    assert 0.3 < ours["recall@1"] < 1.0


def test_duplicate_groups_link_near_copies_only():
    rng = np.random.default_rng(5)
    base = normalize(rng.normal(size=(50, 32)))
    copies = normalize(base[:3] + 0.01 * rng.normal(size=(3, 32)))  # near-duplicates of images 0, 1, 2
    vectors = np.concatenate([base, copies, base[:1]])  # and an exact second copy of image 0
    files = [f"img{i}" for i in range(len(vectors))]
    groups = duplicate_groups(vectors, files, threshold=0.99)
    as_sets = [set(g["files"]) for g in groups]
    assert as_sets == [{"img0", "img50", "img53"}, {"img1", "img51"}, {"img2", "img52"}] or \
        as_sets == [{"img0", "img50", "img53"}, {"img2", "img52"}, {"img1", "img51"}]
    assert len(groups[0]["files"]) == 3 and groups[0]["max_score"] == pytest.approx(1.0, abs=1e-5)
    assert all(g["min_score"] >= 0.99 for g in groups)


def test_kmeans_recovers_well_separated_groups():
    from sklearn.metrics import adjusted_rand_score

    vectors, labels = noisy_classes(300, 4, 0.1, seed=6)
    result = kmeans_clusters(vectors, [str(i) for i in range(300)], k=4)
    assert adjusted_rand_score(labels, result["assignment"]) > 0.95
    assert sum(c["size"] for c in result["clusters"]) == 300
    for c in result["clusters"]:
        assert c["scores"] == sorted(c["scores"], reverse=True)
