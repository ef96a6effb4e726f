"""Retrieval metrics: recall@k and mean average precision of queries against a gallery.

recall@k is the fraction of queries with at least one same-label image among their k nearest
gallery images (the metric-learning literature's Recall@K; recall@1 equals precision@1, which
``tests/retrieval`` checks against pytorch-metric-learning's AccuracyCalculator). map is the mean
over queries of the average precision of the whole gallery ranking (checked against scikit-learn's
``average_precision_score``). Similarities are inner products of L2-normalised vectors (cosine).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cnnkit.retrieval.index import normalize


def retrieval_metrics(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                      ks: Sequence[int] = (1, 5), same_set: bool = False, chunk_cells: int = 20_000_000) -> dict[str, float]:
    """{"recall@K" for K in ks, "map"}; ``same_set``: queries are the gallery, each query's own row is
    left out (leave-one-out retrieval within one split). Queries without any same-label gallery image
    count as misses for recall and are left out of map."""
    queries, gallery = normalize(queries), normalize(gallery)
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    n_q, n_g = len(queries), len(gallery) - (1 if same_set else 0)
    if n_q == 0 or n_g <= 0:
        return {**{f"recall@{k}": 0.0 for k in ks}, "map": 0.0}
    hits = {k: 0 for k in ks}
    ap_sum, ap_count = 0.0, 0
    rows_per_chunk = max(1, chunk_cells // max(1, len(gallery)))
    for start in range(0, n_q, rows_per_chunk):
        stop = min(n_q, start + rows_per_chunk)
        sims = queries[start:stop] @ gallery.T
        if same_set:
            sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        # stable sort: ties keep gallery order, like FAISS and scikit-learn's tie handling of equal scores
        order = np.argsort(-sims, axis=1, kind="stable")
        if same_set:
            order = order[:, :-1]  # the query itself, ranked last by its -inf
        relevant = gallery_labels[order] == query_labels[start:stop, None]
        for k in ks:
            hits[k] += int(relevant[:, :k].any(axis=1).sum())
        positives = relevant.sum(axis=1)
        precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, relevant.shape[1] + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = (precision_at_rank * relevant).sum(axis=1) / positives
        ap_sum += float(ap[positives > 0].sum())
        ap_count += int((positives > 0).sum())
    out = {f"recall@{k}": hits[k] / n_q for k in ks}
    out["map"] = ap_sum / ap_count if ap_count else 0.0
    return out
