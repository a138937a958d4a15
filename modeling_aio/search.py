"""Person search with an AIO checkpoint: embed a gallery once, then query it by any mix of text, sketch, IR, RGB.

`AIOSearcher` is the Python API; the `aio-reid` command line only wraps it.

Index folder layout (no pickles anywhere):
    index.json            format version, model fingerprint, modality, paths, unreadable files, faiss kind + recall
    embeddings.npy        (N, D) float32, L2-normalised, row i = paths[i]
    faiss.index           faiss index over the embeddings (exact, HNSW or IVF by gallery size)
    parts/                while indexing: one .npy + .json per finished chunk and process (resume / shard merge)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from processing_aio import ImageInputError

INDEX_FORMAT_VERSION = 3
#: File-name layouts whose person id (group 1) and camera (group 2) `aio-reid index --layout` records.
LAYOUTS: dict[str, str] = {
    "market1501": r"^(-?\d+)_c(\d)s\d",
    "dukemtmc-reid": r"^(\d+)_c(\d+)_",
    "msmt17": r"^(\d+)_\d+_(\d+)_",
    "pku-sketch": r"^(\d+)_(\d+)_",
}
EXACT_INDEX_LIMIT = 50_000
HNSW_INDEX_LIMIT = 2_000_000
# HNSW search breadth: on 1M clustered 512-d vectors (benchmarks/bench_search.py, 2 threads) efSearch 256 gave
# recall@10 0.955 at 1.5 ms/query and 512 gave 0.993 at 2.8 ms/query; 512 keeps a margin over the 0.95 target.
HNSW_EF_SEARCH = 512


@dataclass
class SearchHit:
    rank: int
    path: str
    score: float
    person_id: str | None = None


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
                "faiss_kind": self.faiss_kind, "recall_at_10": self.recall_at_10, "metadata": self.metadata}
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
                   meta.get("recall_at_10"), meta.get("metadata", []))

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


def describe_image(path: str, layout: str | None = None) -> dict:
    """Width, height and, for a known layout (a name of LAYOUTS or a regex with groups id, camera), person id and
    camera parsed from the file name; None where unknown."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    person_id = camera_id = None
    if layout:
        match = re.search(LAYOUTS.get(layout, layout), Path(path).name)
        if match:
            person_id = match.group(1)
            camera_id = match.group(2) if match.re.groups >= 2 else None
    return {"width": width, "height": height, "person_id": person_id, "camera_id": camera_id}


def list_images(directory: str | Path) -> list[Path]:
    """Every file under `directory` (recursively), sorted; non-images are kept so they get reported, not hidden."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"gallery directory {directory} does not exist or is not a directory.")
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def k_reciprocal_rerank(query: np.ndarray, candidates: np.ndarray, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of one query's candidate list; returns final distances.

    Works on the (1 + K) x (1 + K) problem of the query and its top-K candidates, which is how it is applied to
    galleries too large for the full gallery-gallery matrix."""
    features = np.concatenate([query[None], candidates]).astype(np.float32)
    distance = np.clip(2.0 - 2.0 * features @ features.T, 0.0, None)
    distance = distance / distance.max(axis=0, keepdims=True).clip(min=1e-12)
    size = len(features)
    k1, k2 = min(k1, size - 1), min(k2, size - 1)
    ranks = np.argsort(distance, axis=1)
    weights = np.zeros((size, size), dtype=np.float32)
    for i in range(size):
        forward = ranks[i, : k1 + 1]
        reciprocal = forward[np.any(ranks[forward, : k1 + 1] == i, axis=1)]
        expansion = reciprocal
        for candidate in reciprocal:
            c_forward = ranks[candidate, : int(np.around(k1 / 2)) + 1]
            c_reciprocal = c_forward[np.any(ranks[c_forward, : int(np.around(k1 / 2)) + 1] == candidate, axis=1)]
            if len(np.intersect1d(c_reciprocal, reciprocal)) > 2 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-distance[i, expansion])
        weights[i, expansion] = weight / weight.sum()
    if k2 > 1:
        weights = np.stack([weights[ranks[i, :k2]].mean(axis=0) for i in range(size)])
    minimum = np.minimum(weights[0][None], weights[1:]).sum(axis=1)
    jaccard = 1.0 - minimum / (2.0 - minimum)
    return jaccard * (1 - lambda_value) + distance[0, 1:] * lambda_value


class AIOSearcher:
    """Embeds galleries and queries with an AIO model and its processor, and ranks by cosine similarity."""

    def __init__(self, model, processor, batch_size: int = 32, backend=None):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.backend = backend  # an exported runtime (modeling_aio.export) or None for PyTorch

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 32, backend: str = "torch",
                        **kwargs: Any) -> "AIOSearcher":
        import modeling_aio  # noqa: F401  (registers the aio model type)
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(str(path), **kwargs)
        processor = AutoProcessor.from_pretrained(str(path), **kwargs)
        runtime = None
        if backend != "torch":
            from .export import ExportedRuntime

            runtime = ExportedRuntime.for_checkpoint(model, Path(path), backend)
        return cls(model, processor, batch_size, runtime)

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: vectors from another model or version are not comparable."""
        config = self.model.config
        return (f"{config.model_type}:{config.encoder_config.model_type}:{config.image_tokenizer}:"
                f"{config.embedding_size}:{Path(config._name_or_path).name}")

    @torch.no_grad()
    def embed(self, **query: Sequence[Any]) -> np.ndarray:
        """(B, D) embeddings of B queries, each made of the given modalities (`text=`, `rgb=`, `ir=`, `sketch=`)."""
        batch = self.processor(**query, return_tensors="pt")
        if self.backend is not None:
            return self.backend.embed(batch)
        return self.model.get_features(**batch).numpy()

    def _embed_paths(self, paths: list[Path], modality: str, layout: str | None = None):
        """(kept paths, their embeddings, failures, their metadata) of one chunk."""
        good, failures = [], []
        for path in paths:
            try:
                self.processor.image_processor(path, modality=modality, return_tensors=None)
                good.append(str(path))
            except ImageInputError as error:
                failures.append((str(path), str(error)))
        vectors = self.embed(**{modality: good}) if good else np.zeros((0, self.model.config.embedding_size),
                                                                         np.float32)
        return good, vectors, failures, [describe_image(p, layout) for p in good]

    def index(self, images: str | Path | Iterable[str | Path], modality: str = "rgb", progress: bool = False,
              out_dir: str | Path | None = None, faiss_kind: str = "auto", rank: int = 0,
              world_size: int = 1, layout: str | None = None) -> GalleryIndex | None:
        """Embeds every image; unreadable files are listed in `failures`, never silently dropped.

        With `out_dir`, each finished chunk is written to `out_dir/parts/` first, so an interrupted run resumes
        where it stopped without duplicates, and `world_size` processes (e.g. under `accelerate launch`) can each
        take every `world_size`-th chunk; `merge_parts` then assembles the index (rank 0 does it here)."""
        paths = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        mine = [(n, chunk) for n, chunk in enumerate(chunks) if n % world_size == rank]
        parts = Path(out_dir) / "parts" if out_dir is not None else None
        if parts is not None:
            parts.mkdir(parents=True, exist_ok=True)
            (parts / "plan.json").write_text(json.dumps({"chunks": len(chunks), "modality": modality,
                                                         "fingerprint": self.fingerprint}))
        results = {}
        iterator = mine
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(mine, desc=f"embedding {modality}", unit="batch", disable=rank != 0)
        for number, chunk in iterator:
            part = parts / f"part-{number:06d}" if parts is not None else None
            if part is not None and part.with_suffix(".json").exists():
                continue  # finished before an interruption
            good, vectors, failures, metadata = self._embed_paths(chunk, modality, layout)
            if part is not None:
                np.save(part.with_suffix(".npy"), vectors.astype(np.float32), allow_pickle=False)
                part.with_suffix(".json").write_text(json.dumps({"paths": good, "failures": failures,
                                                                 "metadata": metadata}))
            else:
                results[number] = (good, vectors, failures, metadata)
        if parts is not None:
            return merge_parts(out_dir, faiss_kind) if world_size == 1 else None
        gallery = _assemble([results[n] for n in sorted(results)], modality, self.fingerprint,
                            self.model.config.embedding_size)
        gallery.build_faiss(faiss_kind)
        return gallery

    def search(self, gallery: GalleryIndex, k: int = 10, exclude: Iterable[str] = (), rerank: bool = False,
               id_pattern: str | None = None, **query: Any) -> list[SearchHit]:
        """Ranks the gallery for one composed query, e.g. `search(index, text="...", sketch="s.jpg")`."""
        if gallery.model_fingerprint and gallery.model_fingerprint != self.fingerprint:
            raise ValueError(
                f"index was built by model {gallery.model_fingerprint!r} but this searcher is {self.fingerprint!r}; "
                "re-index the gallery with this model."
            )
        single = {name: [value] for name, value in query.items() if value is not None}
        vector = self.embed(**single)[0]
        excluded = {str(p) for p in exclude}
        depth = max(k + len(excluded), 100 if rerank else k + len(excluded))
        scores, indices = gallery.top_k(vector, depth)
        if rerank and len(indices) > 1:
            distances = k_reciprocal_rerank(vector, gallery.embeddings[indices])
            order = np.argsort(distances, kind="stable")
            scores, indices = -distances[order], indices[order]
        hits, pattern = [], re.compile(id_pattern) if id_pattern else None
        for score, index in zip(scores, indices):
            path = gallery.paths[index]
            if path in excluded:
                continue
            match = pattern.search(Path(path).name) if pattern else None
            stored = gallery.metadata[index].get("person_id") if index < len(gallery.metadata) else None
            hits.append(SearchHit(len(hits) + 1, path, float(score), match.group(1) if match else stored))
            if len(hits) == k:
                break
        return hits


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
    gallery.build_faiss(faiss_kind)
    gallery.save(out_dir)
    for file in parts.iterdir():
        file.unlink()
    parts.rmdir()
    return gallery


__all__ = ["AIOSearcher", "GalleryIndex", "SearchHit", "list_images", "merge_parts", "k_reciprocal_rerank",
           "measure_recall", "describe_image", "LAYOUTS"]
