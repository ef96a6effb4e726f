"""Grouping a gallery: near-duplicate groups (FAISS range search + connected components) and
spherical k-means clusters (FAISS)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cnnkit.retrieval.index import normalize


def duplicate_groups(vectors: np.ndarray, files: Sequence[str], threshold: float) -> list[dict[str, Any]]:
    """Images linked when their cosine similarity is >= ``threshold``; each connected component of
    two or more images is a group. Largest groups first: [{"files", "min_score", "max_score"}], where
    the scores are over the group's linking pairs."""
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    vectors = normalize(vectors)
    n = len(files)
    if n < 2:
        return []
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    # range_search keeps scores strictly above the radius; nudge it down so ">= threshold" holds
    lims, scores, neighbours = index.range_search(vectors, float(np.nextafter(np.float32(threshold), np.float32(-2))))
    sources = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    pairs = sources != neighbours
    sources, neighbours, scores = sources[pairs], neighbours[pairs], scores[pairs]
    graph = coo_matrix((np.ones(len(sources)), (sources, neighbours)), shape=(n, n))
    n_components, component = connected_components(graph, directed=False)
    groups = []
    for c in np.flatnonzero(np.bincount(component, minlength=n_components) >= 2):
        members = np.flatnonzero(component == c)
        linking = scores[component[sources] == c]
        groups.append({"files": [str(files[i]) for i in members], "min_score": float(linking.min()), "max_score": float(linking.max())})
    groups.sort(key=lambda g: (-len(g["files"]), -g["max_score"]))
    return groups


def kmeans_clusters(vectors: np.ndarray, files: Sequence[str], k: int, seed: int = 0, niter: int = 25, nredo: int = 5) -> dict[str, Any]:
    """{"clusters": [{"id", "size", "files", "scores"}], "assignment": [N]}: spherical k-means on the unit
    vectors; members sorted by cosine similarity to their centroid (most typical first)."""
    import faiss

    vectors = normalize(vectors)
    # FAISS seeds with random points, which can put two seeds in one group: keep the best of nredo runs
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=True, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    kmeans.train(vectors)
    similarity, assignment = kmeans.index.search(vectors, 1)
    similarity, assignment = similarity[:, 0], assignment[:, 0]
    clusters = []
    for c in range(k):
        members = np.flatnonzero(assignment == c)
        members = members[np.argsort(-similarity[members], kind="stable")]
        clusters.append({"id": c, "size": int(len(members)), "files": [str(files[i]) for i in members],
                         "scores": [float(similarity[i]) for i in members]})
    return {"clusters": clusters, "assignment": assignment.astype(int).tolist()}
