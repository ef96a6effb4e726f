"""cnnkit's gallery index against raw FAISS calls, on 1,000,000 vectors.

    python benchmarks/search.py [--n 1000000] [--dim 128] [--queries 300] [--kinds flat,ivf,hnsw]
                                [--datasets random,clustered] [--nlist 1024] [--nprobe 16] [--ef-search 64]

For each dataset (uniform random directions, and a clustered set: 1,000 Gaussian clusters) and each
index kind, both sides build an inner-product index of the L2-normalised vectors:
- raw FAISS: ``faiss.normalize_L2`` then IndexFlatIP / IndexIVFFlat (train + add) / IndexHNSWFlat;
- cnnkit: ``GalleryIndex.build`` (the same FAISS index behind an id map, plus the stored vectors and
  file names that ``embed index`` keeps).
Builds are repeated (--repeats, median; the side that goes first alternates). Then single-query latency (p50, p99; the two sides alternate query by query, so machine noise
hits both alike), and recall@10 against exact search. The ratio cnnkit / raw of build time and of
median latency is printed per row; the issue's target is an overhead of at most 10 % (ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def dataset(kind: str, n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((n, dim), dtype=np.float32)
    centers = rng.standard_normal((1000, dim), dtype=np.float32)
    return centers[rng.integers(0, 1000, n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)


def raw_build(kind: str, vectors: np.ndarray, nlist: int, nprobe: int, hnsw_m: int, ef_search: int):
    import faiss

    vectors = vectors.copy()
    faiss.normalize_L2(vectors)
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = nprobe
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
    index.add(vectors)
    return index


def raw_search(index, query: np.ndarray, k: int):
    import faiss

    query = query.copy()
    faiss.normalize_L2(query)
    return index.search(query, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--datasets", default="random,clustered")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="builds per side for flat and ivf (median)")
    parser.add_argument("--hnsw-repeats", type=int, default=1, help="builds per side for hnsw (minutes each at 1M)")
    args = parser.parse_args()

    import faiss

    from cnnkit.retrieval.index import GalleryIndex

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; n={args.n:,} dim={args.dim} "
          f"queries={args.queries} k={args.k} nlist={args.nlist} nprobe={args.nprobe} M={args.hnsw_m} efSearch={args.ef_search}")
    rows = []
    for name in args.datasets.split(","):
        vectors = dataset(name, args.n, args.dim)
        queries = dataset(name, args.queries, args.dim, seed=1)
        files = [f"img{i:07d}.png" for i in range(args.n)]
        exact = raw_build("flat", vectors, 0, 0, 0, 0)
        _, truth = raw_search(exact, queries, args.k)
        del exact
        for kind in args.kinds.split(","):
            raw_times, our_times = [], []
            for repeat in range(args.repeats if kind != "hnsw" else args.hnsw_repeats):
                raw = ours = None  # free the previous pair before building the next
                for side in (("raw", "ours") if repeat % 2 == 0 else ("ours", "raw")):  # alternate who goes first
                    started = time.perf_counter()
                    if side == "raw":
                        raw = raw_build(kind, vectors, args.nlist, args.nprobe, args.hnsw_m, args.ef_search)
                        raw_times.append(time.perf_counter() - started)
                    else:
                        ours = GalleryIndex.build(vectors, files, kind, "benchmark", "none", nlist=args.nlist, nprobe=args.nprobe,
                                                  hnsw_m=args.hnsw_m, ef_search=args.ef_search)
                        our_times.append(time.perf_counter() - started)
            raw_build_s, ours_build_s = statistics.median(raw_times), statistics.median(our_times)
            raw_ms, ours_ms, raw_hits, ours_hits = [], [], 0, 0
            for i in range(args.queries):
                query = queries[i:i + 1]
                t0 = time.perf_counter()
                _, raw_ids = raw_search(raw, query, args.k)
                t1 = time.perf_counter()
                _, our_rows = ours.search(query, args.k)
                t2 = time.perf_counter()
                raw_ms.append((t1 - t0) * 1e3)
                ours_ms.append((t2 - t1) * 1e3)
                raw_hits += len(set(raw_ids[0]) & set(truth[i]))
                ours_hits += len(set(our_rows[0]) & set(truth[i]))  # rows are the insertion order, as raw ids are
            row = {"data": name, "kind": kind, "raw_build_s": raw_build_s, "ours_build_s": ours_build_s,
                   "raw_p50": statistics.median(raw_ms), "raw_p99": float(np.percentile(raw_ms, 99)),
                   "ours_p50": statistics.median(ours_ms), "ours_p99": float(np.percentile(ours_ms, 99)),
                   "raw_recall": raw_hits / (args.k * args.queries), "ours_recall": ours_hits / (args.k * args.queries)}
            rows.append(row)
            print(f"{name:9s} {kind:4s} build raw {raw_build_s:7.1f}s cnnkit {ours_build_s:7.1f}s ({ours_build_s / raw_build_s:.3f})  "
                  f"p50 raw {row['raw_p50']:.3f} ms cnnkit {row['ours_p50']:.3f} ms ({row['ours_p50'] / row['raw_p50']:.3f})  "
                  f"recall@{args.k} {row['raw_recall']:.3f}/{row['ours_recall']:.3f}", flush=True)
            del raw, ours

    print(f"\n| data | index | build s (faiss / cnnkit) | ratio | p50 ms (faiss / cnnkit) | p99 ms (faiss / cnnkit) | ratio p50 "
          f"| recall@{args.k} (faiss / cnnkit) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['data']} | {r['kind']} | {r['raw_build_s']:.1f} / {r['ours_build_s']:.1f} | {r['ours_build_s'] / r['raw_build_s']:.3f} "
              f"| {r['raw_p50']:.3f} / {r['ours_p50']:.3f} | {r['raw_p99']:.3f} / {r['ours_p99']:.3f} "
              f"| {r['ours_p50'] / r['raw_p50']:.3f} | {r['raw_recall']:.3f} / {r['ours_recall']:.3f} |")
    worst = max(max(r["ours_build_s"] / r["raw_build_s"], r["ours_p50"] / r["raw_p50"]) for r in rows)
    print(f"\nworst cnnkit / faiss ratio: {worst:.3f} (target <= 1.10): {'PASS' if worst <= 1.10 else 'FAIL'}")


if __name__ == "__main__":
    main()
