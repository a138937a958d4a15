#!/usr/bin/env python
"""Top-10 search latency on N synthetic 512-d unit vectors (default 1,000,000): faiss (the index `aio-reid index`
would pick for that size, or --kind) against brute-force numpy, with recall@10 of faiss against the exact top-10.

The vectors are clustered (like person embeddings: many images per identity) so that recall is meaningful.
Prints build time, per-query latency of both (median over the queries, one query at a time) and recall@10.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from modeling_aio.search import GalleryIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--kind", default="auto", choices=("auto", "flat", "hnsw", "ivf"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((args.vectors // 20, args.dim), dtype=np.float32)
    vectors = centers[rng.integers(0, len(centers), args.vectors)]
    vectors += 0.5 * rng.standard_normal(vectors.shape, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(args.vectors, args.queries, replace=False)] + 0.05 * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    gallery = GalleryIndex(vectors, [str(i) for i in range(args.vectors)])
    start = time.perf_counter()
    gallery.build_faiss(args.kind)
    build = time.perf_counter() - start

    exact, brute_times = [], []
    for q in queries:
        start = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        exact.append(set(top[np.argsort(-scores[top])]))
        brute_times.append(time.perf_counter() - start)
    brute_ms = 1000 * np.median(brute_times)
    print(f"{args.vectors:,} x {args.dim}-d vectors, {args.queries} queries one at a time, {args.threads} threads")
    print(f"  brute-force numpy: {brute_ms:.2f} ms/query (exact)")
    print(f"  faiss {gallery.faiss_kind}: build {build:.1f} s; sweep of its search-time knob:")
    index = gallery.faiss_index
    knob = "efSearch" if gallery.faiss_kind == "hnsw" else "nprobe" if gallery.faiss_kind == "ivf" else None
    settings = {"hnsw": (128, 256, 512, 1024), "ivf": (8, 16, 32, 64, 128)}.get(gallery.faiss_kind, (None,))
    # (the index is built with efSearch HNSW_EF_SEARCH = 512, the default `aio-reid index` uses)
    for value in settings:
        if knob == "efSearch":
            index.hnsw.efSearch = value
        elif knob == "nprobe":
            index.nprobe = value
        faiss_times, recalls = [], []
        for q, truth in zip(queries, exact):
            start = time.perf_counter()
            _, indices = gallery.top_k(q, 10)
            faiss_times.append(time.perf_counter() - start)
            recalls.append(len(truth & set(indices.tolist())) / 10)
        faiss_ms, recall = 1000 * np.median(faiss_times), float(np.mean(recalls))
        met = "meets" if faiss_ms < 20 and recall >= 0.95 else "misses"
        print(f"    {knob or 'exact'}={value}: {faiss_ms:6.2f} ms/query, recall@10 {recall:.3f}, "
              f"{brute_ms / faiss_ms:5.1f}x faster than numpy ({met} the goal < 20 ms with recall >= 0.95)")


if __name__ == "__main__":
    main()
