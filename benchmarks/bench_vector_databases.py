#!/usr/bin/env python
"""The database candidates for gallery storage, side by side on one small gallery: filtered top-10 latency and
recall@10 against exact filtered search, with each engine's embedded (serverless) form and its default vector index.

    pip install pymilvus milvus-lite qdrant-client lancedb   # the candidates (only lancedb is an aio-reid extra)
    python benchmarks/bench_vector_databases.py --vectors 20000

Milvus Lite (pymilvus, a local .db file; the same client talks to Milvus Standalone / Distributed by URI), Qdrant's
local mode (qdrant-client with a path; the same client talks to a Qdrant server or cluster) and LanceDB (a folder; the
same client opens s3:// or a LanceDB Enterprise cluster). The filter keeps one camera of ten (~10%). Engines that
are not installed are skipped and said so. docs/database.md records a run and the choice made from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def data(count: int, dim: int, per_person: int, queries: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, count // per_person), dim), dtype=np.float32)
    vectors = centers[rng.integers(0, len(centers), count)] + 0.5 * rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    asked = vectors[rng.choice(count, queries, replace=False)] + 0.05 * rng.standard_normal((queries, dim),
                                                                                            dtype=np.float32)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    return vectors, rng.integers(0, 10, count), asked


def milvus_lite(folder: Path, vectors, cameras):
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(folder / "milvus.db"))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    schema.add_field("camera", DataType.INT64)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 80})
    client.create_collection("gallery", schema=schema, index_params=index)
    for first in range(0, len(vectors), 10_000):
        client.insert("gallery", [{"id": i, "vector": vectors[i], "camera": int(cameras[i])}
                                  for i in range(first, min(len(vectors), first + 10_000))])
    client.flush("gallery")  # seals the segments, so that their HNSW indexes are built before the queries
    client.load_collection("gallery")
    return lambda q: [hit["id"] for hit in client.search("gallery", data=[q], filter="camera == 3", limit=10,
                                                         search_params={"params": {"ef": 128}})[0]]


def qdrant_local(folder: Path, vectors, cameras):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(folder / "qdrant"))
    client.create_collection("gallery", vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                           distance=models.Distance.DOT))
    for first in range(0, len(vectors), 10_000):
        rows = range(first, min(len(vectors), first + 10_000))
        client.upsert("gallery", points=models.Batch(ids=list(rows), vectors=vectors[rows.start:rows.stop].tolist(),
                                                     payloads=[{"camera": int(cameras[i])} for i in rows]))
    only = models.Filter(must=[models.FieldCondition(key="camera", match=models.MatchValue(value=3))])
    return lambda q: [point.id for point in client.query_points("gallery", query=q.tolist(), query_filter=only,
                                                                limit=10).points]


def lancedb_store(folder: Path, vectors, cameras):
    from modeling_aio.search.store import GalleryFilter, GalleryStore

    store = GalleryStore.open(folder / "lancedb", "bench", vectors.shape[1], create=True)
    store.add(vectors, [{"path": str(i), "camera": str(c), "modality": "rgb"} for i, c in enumerate(cameras)])
    store.build_index()
    selection = GalleryFilter(cameras=["3"])
    return lambda q: [int(row["path"]) for row in store.search(q, 10, selection)]


ENGINES = {"Milvus Lite": ("milvus_lite", milvus_lite), "Qdrant local": ("qdrant_client", qdrant_local),
           "LanceDB (aio-reid GalleryStore)": ("lancedb", lancedb_store)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--images-per-person", type=int, default=200)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    vectors, cameras, queries = data(args.vectors, args.dim, args.images_per_person, args.queries)
    kept = np.flatnonzero(cameras == 3)
    truth = [set(kept[np.argsort(-(vectors[kept] @ q))[:10]].tolist()) for q in queries]
    print(f"{args.vectors:,} x {args.dim}-d vectors, filter keeps {len(kept):,} (camera 3 of 10), "
          f"{args.queries} queries one at a time")
    for name, (module, build) in ENGINES.items():
        if importlib.util.find_spec(module) is None:
            print(f"  {name}: skipped ({module} is not installed)")
            continue
        folder = Path(tempfile.mkdtemp(prefix="aio-reid-db-"))
        try:
            start = time.perf_counter()
            search = build(folder, vectors, cameras)
            built = time.perf_counter() - start
            search(queries[0])  # warm-up
            times, recalls = [], []
            for q, expected in zip(queries, truth):
                start = time.perf_counter()
                found = search(q)
                times.append(time.perf_counter() - start)
                recalls.append(len(expected & set(found)) / 10)
            print(f"  {name}: load + index {built:.1f} s; filtered top-10 {1000 * np.median(times):.1f} ms/query "
                  f"median, recall@10 {np.mean(recalls):.3f}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
