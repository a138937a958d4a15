"""A gallery index: the embeddings of a gallery, their file paths, the model that made them and a faiss index.

Index folder layout (no pickles anywhere):
    index.json            format version, model fingerprint, modality, paths, unreadable files, faiss kind + recall
    embeddings.npy        (N, D) float32, L2-normalised, row i = paths[i]
    faiss.index           faiss index over the embeddings (exact, HNSW or IVF by gallery size)
    parts/                while indexing: one .npy + .json per finished chunk and process (resume / shard merge)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FORMAT_VERSION = 3
EXACT_INDEX_LIMIT = 50_000
HNSW_INDEX_LIMIT = 2_000_000
# HNSW search breadth: on 1M clustered 512-d vectors (benchmarks/bench_search.py, 2 threads) efSearch 256 gave
# recall@10 0.955 at 1.5 ms/query and 512 gave 0.993 at 2.8 ms/query; 512 keeps a margin over the 0.95 target.
HNSW_EF_SEARCH = 512


@dataclass
class SearchHit:
    """One result: its rank, gallery file, score (higher is better; `score_kind` says what it is) and person id."""

    rank: int
    path: str
    score: float
    person_id: str | None = None
    score_kind: str = "cosine similarity"


@dataclass
class GalleryIndex:
    """Embeddings (N, D) of a gallery with their file paths, the model that made them and a faiss index."""

    embeddings: np.ndarray
    paths: list[str]
    modality: str = "rgb"
    model_fingerprint: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    faiss_index: Any = None
    faiss_kind: str = "none"
    recall_at_10: float | None = None
    metadata: list[dict] = field(default_factory=list)  # per image: width, height, person_id, camera_id
    root: str | None = None  # the indexed folder: layouts and id patterns read paths relative to it

    def build_faiss(self, kind: str = "auto", sample_queries: int = 200, seed: int = 0) -> None:
        """Exact inner-product search up to 50k vectors, HNSW up to 2M, IVF beyond; approximate indexes get their
        recall@10 measured against exact search on gallery vectors used as queries."""
        import faiss

        vectors = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        count, dim = vectors.shape
        if kind == "auto":
            kind = "flat" if count <= EXACT_INDEX_LIMIT else "hnsw" if count <= HNSW_INDEX_LIMIT else "ivf"
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = HNSW_EF_SEARCH
        elif kind == "ivf":
            lists = max(1, int(4 * np.sqrt(count)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors[np.random.default_rng(seed).choice(count, min(count, lists * 40), replace=False)])
            index.nprobe = max(1, lists // 16)
        else:
            raise ValueError(f"faiss index kind must be auto, flat, hnsw or ivf, got {kind!r}.")
        if count:
            index.add(vectors)
        self.faiss_index, self.faiss_kind = index, kind
        self.recall_at_10 = 1.0 if kind == "flat" else measure_recall(index, vectors, sample_queries, seed)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", self.embeddings.astype(np.float32), allow_pickle=False)
        meta = {"format_version": INDEX_FORMAT_VERSION, "modality": self.modality, "paths": self.paths,
                "model_fingerprint": self.model_fingerprint, "failures": self.failures,
                "faiss_kind": self.faiss_kind, "recall_at_10": self.recall_at_10, "metadata": self.metadata,
                "root": self.root}
        (directory / "index.json").write_text(json.dumps(meta, indent=1))
        if self.faiss_index is not None:
            import faiss

            faiss.write_index(self.faiss_index, str(directory / "faiss.index"))

    @classmethod
    def load(cls, directory: str | Path) -> "GalleryIndex":
        directory = Path(directory)
        if not (directory / "index.json").exists():
            raise FileNotFoundError(f"{directory} is not an aio-reid index (no index.json).")
        meta = json.loads((directory / "index.json").read_text())
        if meta.get("format_version") != INDEX_FORMAT_VERSION:
            raise ValueError(f"{directory} uses index format {meta.get('format_version')}, this aio-reid reads "
                             f"format {INDEX_FORMAT_VERSION}; re-index the gallery.")
        embeddings = np.load(directory / "embeddings.npy", allow_pickle=False)
        faiss_index = None
        if (directory / "faiss.index").exists():
            import faiss

            faiss_index = faiss.read_index(str(directory / "faiss.index"))
            if meta.get("faiss_kind") == "hnsw":
                faiss_index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(embeddings, meta["paths"], meta["modality"], meta["model_fingerprint"],
                   [tuple(f) for f in meta.get("failures", [])], faiss_index, meta.get("faiss_kind", "none"),
                   meta.get("recall_at_10"), meta.get("metadata", []), meta.get("root"))

    def top_k(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the k most similar gallery items."""
        k = min(k, len(self.paths))
        if self.faiss_index is not None:
            scores, indices = self.faiss_index.search(np.ascontiguousarray(vector[None], dtype=np.float32), k)
            keep = indices[0] >= 0
            return scores[0][keep], indices[0][keep]
        scores = self.embeddings @ vector
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], order


def measure_recall(index, vectors: np.ndarray, sample_queries: int = 200, seed: int = 0, k: int = 10) -> float:
    """recall@k of an approximate index against exact inner-product search, on sampled gallery vectors."""
    rng = np.random.default_rng(seed)
    queries = vectors[rng.choice(len(vectors), min(sample_queries, len(vectors)), replace=False)]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    _, approx = index.search(np.ascontiguousarray(queries), k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def _assemble(results: list[tuple], modality: str, fingerprint: str, dim: int) -> GalleryIndex:
    paths = [p for good, _, _, _ in results for p in good]
    vectors = [v for _, v, _, _ in results if len(v)]
    failures = [f for _, _, fs, _ in results for f in fs]
    metadata = [m for _, _, _, ms in results for m in ms]
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    return GalleryIndex(embeddings, paths, modality, fingerprint, failures, metadata=metadata)


def merge_parts(out_dir: str | Path, faiss_kind: str = "auto") -> GalleryIndex:
    """Assembles `out_dir/parts/` (written by one or many processes) into the final index, in gallery order."""
    out_dir = Path(out_dir)
    parts = out_dir / "parts"
    plan = json.loads((parts / "plan.json").read_text())
    missing = [n for n in range(plan["chunks"]) if not (parts / f"part-{n:06d}.json").exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} chunks of {out_dir} are not embedded yet (first: {missing[0]}); "
                           "run the index command again to resume.")
    results = []
    for n in range(plan["chunks"]):
        meta = json.loads((parts / f"part-{n:06d}.json").read_text())
        results.append((meta["paths"], np.load(parts / f"part-{n:06d}.npy", allow_pickle=False),
                        [tuple(f) for f in meta["failures"]], meta.get("metadata", [])))
    gallery = _assemble(results, plan["modality"], plan["fingerprint"],
                        results[0][1].shape[1] if results and results[0][1].ndim == 2 else 0)
    gallery.root = plan.get("root")
    gallery.build_faiss(faiss_kind)
    gallery.save(out_dir)
    for file in parts.iterdir():
        file.unlink()
    parts.rmdir()
    return gallery


__all__ = ["GalleryIndex", "SearchHit", "merge_parts", "measure_recall", "INDEX_FORMAT_VERSION"]
