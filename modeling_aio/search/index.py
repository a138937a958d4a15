"""A gallery index: the embeddings of a gallery, their file paths, the model that made them and a faiss index.

Index folder layout (no pickles anywhere):
    index.json            modality, paths, per-image metadata, unreadable files, faiss kind + recall, gallery folder
    embeddings.npy        (N, D) float32, L2-normalised, row i = paths[i]
    faiss.index           faiss index over the embeddings (exact, HNSW or IVF by gallery size)
    manifest.json         written last: format version, model fingerprint, modality, rows, dimension and the size
                          and SHA-256 of each file above; an index without it, or whose files differ from it, is
                          refused (naming the file), so an index interrupted at any write never loads
    parts/                while indexing: one .npy + .json per finished chunk, named by a hash of the chunk's files
                          and the job (model, modality, layout), so a resume never mixes jobs or duplicates files
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .storage import (
    atomic_write, json_bytes, load_json, load_npy, npy_bytes, read_checked, remove, sha256, sync_directory,
)

INDEX_FORMAT_VERSION = 4
FILES = ("embeddings.npy", "index.json", "faiss.index")
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
    camera: str | None = None  # database galleries: the entry's camera and timestamp
    timestamp: Any = None


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
        """Writes the index: the old manifest goes first, each file atomically, the new manifest last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        remove(directory / "manifest.json")
        meta = {"modality": self.modality, "paths": self.paths, "failures": self.failures,
                "faiss_kind": self.faiss_kind, "recall_at_10": self.recall_at_10, "metadata": self.metadata,
                "root": self.root}
        contents = {"embeddings.npy": npy_bytes(np.ascontiguousarray(self.embeddings, dtype=np.float32)),
                    "index.json": json_bytes(meta)}
        if self.faiss_index is not None:
            import faiss

            contents["faiss.index"] = faiss.serialize_index(self.faiss_index).tobytes()
        for name in FILES:
            if name in contents:
                atomic_write(directory / name, contents[name])
            else:
                remove(directory / name)
        manifest = {"format_version": INDEX_FORMAT_VERSION, "model_fingerprint": self.model_fingerprint,
                    "modality": self.modality, "rows": len(self.paths), "dim": int(self.embeddings.shape[1]),
                    "files": {name: {"bytes": len(data), "sha256": sha256(data)} for name, data in contents.items()}}
        atomic_write(directory / "manifest.json", json_bytes(manifest))

    @classmethod
    def load(cls, directory: str | Path) -> "GalleryIndex":
        """Reads an index after checking every file against its manifest and the files against each other."""
        directory = Path(directory)
        manifest_file = directory / "manifest.json"
        if not manifest_file.is_file():
            state = ("it was interrupted while being written, or written by an older aio-reid"
                     if (directory / "index.json").exists() else "no manifest.json")
            raise FileNotFoundError(f"{directory} is not a complete aio-reid index ({state}); run `aio-reid index` "
                                    "again.")
        try:
            manifest = load_json(manifest_file.read_bytes(), str(manifest_file))
        except ValueError as error:
            raise ValueError(f"{error} The index is damaged: run `aio-reid index` again.") from None
        if not isinstance(manifest, dict) or manifest.get("format_version") != INDEX_FORMAT_VERSION:
            version = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise ValueError(f"{directory} uses index format {version}, this aio-reid reads format "
                             f"{INDEX_FORMAT_VERSION}; re-index the gallery.")
        files = {name: read_checked(directory / name, expected) for name, expected in manifest["files"].items()}
        meta = load_json(files["index.json"], str(directory / "index.json"))
        embeddings = load_npy(files["embeddings.npy"], str(directory / "embeddings.npy"))
        faiss_index = None
        if "faiss.index" in files:
            import faiss

            faiss_index = faiss.deserialize_index(np.frombuffer(files["faiss.index"], dtype=np.uint8))
            if meta.get("faiss_kind") == "hnsw":
                faiss_index.hnsw.efSearch = HNSW_EF_SEARCH
        gallery = cls(embeddings, meta["paths"], meta["modality"], manifest["model_fingerprint"],
                      [tuple(f) for f in meta.get("failures", [])], faiss_index, meta.get("faiss_kind", "none"),
                      meta.get("recall_at_10"), meta.get("metadata", []), meta.get("root"))
        gallery.check(manifest, directory)
        return gallery

    def check(self, manifest: dict, directory: Path) -> None:
        """Refuses an index whose parts disagree: rows, paths, metadata, faiss entries, modality, finite vectors."""
        rows = manifest["rows"]
        counts = {"embeddings.npy rows": len(self.embeddings), "index.json paths": len(self.paths)}
        if self.metadata:
            counts["index.json metadata"] = len(self.metadata)
        if self.faiss_index is not None:
            counts["faiss.index vectors"] = int(self.faiss_index.ntotal)
        wrong = {name: count for name, count in counts.items() if count != rows}
        if wrong or self.embeddings.ndim != 2 or self.embeddings.shape[1] != manifest["dim"]:
            raise ValueError(f"{directory}: the manifest says {rows} rows of {manifest['dim']} but {wrong or counts} "
                             f"(embeddings {self.embeddings.shape}); re-index the gallery.")
        if self.modality != manifest["modality"]:
            raise ValueError(f"{directory}: index.json says modality {self.modality!r}, the manifest "
                             f"{manifest['modality']!r}; re-index the gallery.")
        bad = np.flatnonzero(~np.isfinite(self.embeddings).all(axis=1))
        if len(bad):
            raise ValueError(f"{directory}/embeddings.npy has non-finite (NaN/inf) rows, first {self.paths[bad[0]]}; "
                             "re-index the gallery.")

    def top_k(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the k most similar gallery items."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if not self.paths:
            raise ValueError("the index holds no images; index a folder with readable images first.")
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


def require_some_images(gallery: GalleryIndex) -> None:
    """Refuses a gallery where no file could be used, naming the first failures, rather than an empty index."""
    if not gallery.paths:
        reasons = "; ".join(reason for _, reason in gallery.failures[:3])
        raise ValueError(f"none of the {len(gallery.failures)} files of the gallery could be used ({reasons}).")


def chunk_id(paths: list[Path], job: dict) -> str:
    """Names a chunk's part by its files (path, size, modification time) and the job (model, modality, layout): a
    resume reuses a part only for the same files embedded the same way."""
    digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode())
    for path in paths:
        stat = os.stat(path) if os.path.exists(path) else None
        digest.update(f"{path}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:24]


def write_plan(parts: Path, job: dict, chunks: list[str]) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write(parts / "plan.json", json_bytes({**job, "chunks": chunks}))


def part_done(parts: Path, chunk: str) -> bool:
    """Whether a chunk's part is complete: its JSON (written after its vectors) and its vectors are there."""
    return (parts / f"part-{chunk}.json").is_file() and (parts / f"part-{chunk}.npy").is_file()


def write_part(parts: Path, chunk: str, good: list[str], vectors: np.ndarray, failures: list, metadata: list) -> None:
    """The chunk's vectors, then (the commit) its JSON with their checksum."""
    data = npy_bytes(np.ascontiguousarray(vectors, dtype=np.float32))
    atomic_write(parts / f"part-{chunk}.npy", data)
    atomic_write(parts / f"part-{chunk}.json", json_bytes({
        "paths": good, "failures": failures, "metadata": metadata,
        "npy": {"bytes": len(data), "sha256": sha256(data)}}))


def read_part(parts: Path, chunk: str) -> tuple:
    meta = load_json((parts / f"part-{chunk}.json").read_bytes(), str(parts / f"part-{chunk}.json"))
    vectors = load_npy(read_checked(parts / f"part-{chunk}.npy", meta["npy"]), str(parts / f"part-{chunk}.npy"))
    if len(vectors) != len(meta["paths"]):
        raise ValueError(f"{parts / f'part-{chunk}.npy'} has {len(vectors)} rows for {len(meta['paths'])} paths.")
    return meta["paths"], vectors, [tuple(f) for f in meta["failures"]], meta.get("metadata", [])


def merge_parts(out_dir: str | Path, faiss_kind: str = "auto") -> GalleryIndex:
    """Assembles `out_dir/parts/` (written by one or many processes) into the final index, in gallery order."""
    out_dir = Path(out_dir)
    parts = out_dir / "parts"
    plan = load_json((parts / "plan.json").read_bytes(), str(parts / "plan.json"))
    missing = [chunk for chunk in plan["chunks"] if not part_done(parts, chunk)]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(plan['chunks'])} chunks of {out_dir} are not embedded yet; "
                           "run the index command again to resume.")
    results = [read_part(parts, chunk) for chunk in plan["chunks"]]
    gallery = _assemble(results, plan["modality"], plan["fingerprint"], plan["dim"])
    require_some_images(gallery)
    gallery.root = plan.get("root")
    gallery.build_faiss(faiss_kind)
    gallery.save(out_dir)
    remove_parts(parts)
    return gallery


def remove_parts(parts: Path) -> None:
    """Renames `parts/` away in one step, then deletes it: a run killed while deleting leaves no half-emptied
    `parts/` for the next run to resume from, only a `.parts-removed-*` folder that it deletes."""
    gone = parts.with_name(f".parts-removed-{os.getpid()}")
    os.replace(parts, gone)
    sync_directory(parts.parent)
    shutil.rmtree(gone)


def remove_stale_parts(out_dir: Path) -> None:
    """Deletes what an interrupted `remove_parts` left behind."""
    for stale in Path(out_dir).glob(".parts-removed-*"):
        shutil.rmtree(stale, ignore_errors=True)


__all__ = ["GalleryIndex", "SearchHit", "merge_parts", "measure_recall", "chunk_id", "write_plan", "part_done",
           "write_part", "read_part", "require_some_images", "remove_parts", "remove_stale_parts", "INDEX_FORMAT_VERSION"]
