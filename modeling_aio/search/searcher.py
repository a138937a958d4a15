"""Person search with an AIO checkpoint: embed a gallery once, then query it by any mix of text, sketch, IR, RGB.

`AIOSearcher` is the Python API; the `aio-reid` command line only wraps it. The index it writes is `index.GalleryIndex`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch

from processing_aio import ImageInputError

if TYPE_CHECKING:
    from .store import GalleryFilter, GalleryStore

from .index import (
    GalleryIndex, SearchHit, _assemble, chunk_id, merge_parts, part_done, remove_stale_parts, require_some_images,
    write_part, write_plan,
)
from .layout import compile_pattern, parse_ids, parse_time_group, relative_path, require_matches
from .rerank import k_reciprocal_rerank
from .storage import LOADING_CONFIG_KEYS, update_with_weights

#: With a backend that indexes RGB photos by the fast RGB gallery encoder (`export.FAST_INDEX_BACKENDS`), a search
#: re-scores this many of the index's top hits by the full model's vectors of those photos (`AIOSearcher.search`,
#: `rescore`): the index keeps the encoder's speed, the ranking at the top is the full model's (docs/experiments.md,
#: 2026-12-06).
RESCORE_TOP_K = 50
#: How many photos' full-model vectors a searcher keeps for re-scoring (4 KB each), least recently used dropped.
FULL_VECTORS_KEPT = 100_000
FULL_MODEL_SCORE = "cosine similarity, full model"
GALLERY_ENCODER_SCORE = "cosine similarity, gallery encoder"


def describe_image(path: str, layout: re.Pattern | None = None, root: str | Path | None = None) -> dict:
    """Width, height and, with a compiled `layout` (`layout.compile_pattern`), the person id and camera it finds in
    the path relative to the gallery folder `root`; None where unknown."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    person_id, camera_id = parse_ids(layout, relative_path(path, root)) if layout is not None else (None, None)
    return {"width": width, "height": height, "person_id": person_id, "camera_id": camera_id}


def list_images(directory: str | Path) -> list[Path]:
    """Every file under `directory` (recursively), sorted; non-images are kept so they get reported, not hidden."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"gallery directory {directory} does not exist or is not a directory.")
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def gallery_files(images: str | Path | Iterable[str | Path]) -> tuple[str | None, list[Path]]:
    """(the gallery folder or None for a list, its files); a gallery without files is an error."""
    root = str(images) if isinstance(images, (str, Path)) else None
    paths = list_images(images) if root is not None else [Path(p) for p in images]
    if not paths:
        raise ValueError(f"gallery {root or 'list'} holds no files to index.")
    return root, paths


def model_fingerprint(model, processor) -> str:
    """SHA-256 (first 24 hex digits) of every tensor of `model` (name, dtype, shape, bytes), its config without
    where it was loaded from, and the processor's image settings and text limits."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    for key in LOADING_CONFIG_KEYS:
        config.pop(key, None)
    settings = processor.image_processor.to_dict()
    settings.pop("processor_class", None)
    tokenizer = getattr(processor, "tokenizer", None)
    text = {"max_text_length": getattr(processor, "max_text_length", None),
            "vocab_size": len(tokenizer) if tokenizer is not None else None}
    digest.update(json.dumps([config, settings, text], sort_keys=True, default=str).encode())
    update_with_weights(digest, model)
    return digest.hexdigest()[:24]


class AIOSearcher:
    """Embeds galleries and queries with an AIO model and its processor, and ranks by cosine similarity."""

    def __init__(self, model, processor, batch_size: int = 32, backend=None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size!r}.")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.backend = backend  # a runtime of modeling_aio.export (bf16 autocast, exported graphs) or None
        self._fingerprint: str | None = None
        self._rgb_gallery_processor = None
        self._full_photo_vectors: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()  # (path, mtime, size)

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 32, backend: str = "torch",
                        **kwargs: Any) -> "AIOSearcher":
        """Loads a checkpoint (`aio-reid`, a folder or a Hub id, see `checkpoint.locate.resolve_model`)."""
        from transformers import AutoProcessor

        from ..checkpoint.locate import load_model

        model, path = load_model(path, **kwargs)
        try:
            processor = AutoProcessor.from_pretrained(path, **kwargs)
        except (OSError, ValueError, TypeError) as error:
            raise OSError(f"{path}: the checkpoint's processor files (processor_config.json, tokenizer) cannot be "
                          f"loaded ({str(error).splitlines()[0]}).") from None
        from ..export import runtime_for

        return cls(model, processor, batch_size, runtime_for(model, Path(path), backend))

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space by content: a SHA-256 of the weights, the config and the processor's
        settings (not the folder's name), so the same weights anywhere match and other weights never do."""
        if self._fingerprint is None:
            self._fingerprint = f"{self.model.config.model_type}:{model_fingerprint(self.model, self.processor)}"
            if self.rgb_gallery_processor is not None:  # RGB photos are embedded by another network, this graph
                kind, digest = self.backend.rgb_gallery_kind, self.backend.rgb_gallery_digest
                self._fingerprint += f"+rgb-gallery-{kind}-{digest}"
        return self._fingerprint

    @property
    def rgb_gallery_processor(self):
        """With a backend that embeds RGB photos by the RGB gallery encoder (`export.FAST_INDEX_BACKENDS`): the image
        processor at that encoder's size; else None."""
        size = getattr(self.backend, "rgb_gallery_size", None)
        if size is None:
            return None
        if self._rgb_gallery_processor is None:
            self._rgb_gallery_processor = copy.deepcopy(self.processor.image_processor)
            self._rgb_gallery_processor.size = {"height": size[0], "width": size[1]}
        return self._rgb_gallery_processor

    @torch.no_grad()
    def embed(self, **query: Sequence[Any]) -> np.ndarray:
        """(B, D) embeddings of B queries, each made of the given modalities (`text=`, `rgb=`, `ir=`, `sketch=`); RGB
        photos alone go through the RGB gallery encoder where the backend has one."""
        if len(query) == 1 and set(query) <= {"rgb", "images"} and self.rgb_gallery_processor is not None:
            (name, photos), = query.items()  # `images` is the processor's alias of `rgb`
            pixels = self.rgb_gallery_processor(photos, modality="rgb", input_name=name, return_tensors="pt")
            return self.backend.embed_rgb_gallery(pixels["pixel_values"])
        return self.embed_full(**query)

    @torch.no_grad()
    def embed_full(self, **query: Sequence[Any]) -> np.ndarray:
        """As `embed`, but RGB photos through the full model too, where the backend indexes them by the RGB gallery
        encoder: the vectors a fast index's top hits are re-scored with."""
        batch = self.processor(**query, return_tensors="pt")
        if self.backend is not None:
            return self.backend.embed(batch)
        return self.model.get_features(**batch).numpy()

    def full_photo_vectors(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(the full model's vectors of the RGB photos `paths`, which of them could be read); the searcher keeps
        the latest `FULL_VECTORS_KEPT` per file and version, so repeated queries embed each photo once. A photo
        that cannot be read any more (moved, deleted, damaged since indexing) gets a zero row and a warning naming
        it."""
        keys: list[tuple[str, int, int] | None] = []
        for path in paths:
            try:
                stat = Path(path).stat()
                keys.append((str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size))
            except OSError as error:
                self._unreadable(path, error)
                keys.append(None)
        todo = []
        for key in sorted({key for key in keys if key is not None and key not in self._full_photo_vectors}):
            try:
                self.processor.image_processor(key[0], modality="rgb", return_tensors=None)
                todo.append(key)
            except ImageInputError as error:
                self._unreadable(key[0], error)
                keys = [None if other == key else other for other in keys]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            for key, vector in zip(chunk, self.embed_full(rgb=[key[0] for key in chunk])):
                self._full_photo_vectors[key] = vector
        vectors = np.zeros((len(paths), self.model.config.search_embedding_size), dtype=np.float32)
        for row, key in enumerate(keys):
            if key is not None:
                vectors[row] = self._full_photo_vectors[key]
                self._full_photo_vectors.move_to_end(key)
        while len(self._full_photo_vectors) > FULL_VECTORS_KEPT:
            self._full_photo_vectors.popitem(last=False)
        return vectors, np.array([key is not None for key in keys], dtype=bool)

    @staticmethod
    def _unreadable(path: str, error: Exception) -> None:
        warnings.warn(f"gallery photo {path} cannot be read for re-scoring ({error}); it keeps the index's score, "
                      "below the re-scored hits.", stacklevel=4)

    def rescored(self, query: dict[str, list], query_vector: np.ndarray, paths: Sequence[str], scores: np.ndarray,
                 depth: int) -> dict:
        """The top `depth` of a fast index's candidates (`paths`, in the index's order, with its `scores`) for
        `query` (whose vector in the index's space is `query_vector`) ranked by the full model. Returns `order` (of
        the candidates), `scores` (in that order: the full model's cosine similarity for the first `full`, the
        index's after), `full`, and the full model's `query` vector and `vectors` of those first `full`. Photos
        that cannot be read, then the candidates below `depth`, follow the re-scored ones in the index's order."""
        if set(query) <= {"rgb", "images"}:  # only RGB photos alone are embedded apart; other queries are the same
            query_vector = self.embed_full(**query)[0]
        vectors, readable = self.full_photo_vectors(list(paths[:depth]))
        head = np.flatnonzero(readable)
        full_scores = vectors[head] @ query_vector
        by_full = np.argsort(-full_scores, kind="stable")
        ranked = head[by_full]
        order = np.concatenate([ranked, np.flatnonzero(~readable), np.arange(len(vectors), len(paths))]).astype(int)
        new_scores = np.asarray(scores, dtype=np.float32)[order]
        new_scores[:len(ranked)] = full_scores[by_full]
        return {"order": order, "scores": new_scores, "full": len(ranked), "query": query_vector,
                "vectors": vectors[ranked]}

    def _embed_paths(self, paths: list[Path], modality: str, layout: re.Pattern | None = None,
                     root: str | Path | None = None):
        """(kept paths, their embeddings, failures, their metadata) of one chunk."""
        good, failures = [], []
        for path in paths:
            try:
                self.processor.image_processor(path, modality=modality, return_tensors=None)
                good.append(str(path))
            except ImageInputError as error:
                failures.append((str(path), str(error)))
        vectors = self.embed(**{modality: good}) if good else np.zeros((0, self.model.config.search_embedding_size),
                                                                         np.float32)
        return good, vectors, failures, [describe_image(p, layout, root) for p in good]

    def index(self, images: str | Path | Iterable[str | Path], modality: str = "rgb", progress: bool = False,
              out_dir: str | Path | None = None, faiss_kind: str = "auto", rank: int = 0,
              world_size: int = 1, layout: str | None = None) -> GalleryIndex | None:
        """Embeds every image; unreadable files are listed in `failures`, never silently dropped.

        With `out_dir`, each finished chunk is written to `out_dir/parts/` first, so an interrupted run resumes
        where it stopped without duplicates (parts are named by their files and the job, so a resume with another
        model, modality, layout, batch size or a changed gallery re-embeds what changed and never mixes), and
        `world_size` processes (e.g. under `accelerate launch`) can each take every `world_size`-th chunk;
        `merge_parts` then assembles the index (rank 0 does it here)."""
        root, paths = gallery_files(images)
        if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise NotADirectoryError(f"index folder {out_dir} is a file, not a folder; pass a new or index folder.")
        pattern = self._checked_layout(layout, paths, root)
        job = {"fingerprint": self.fingerprint, "modality": modality, "layout": layout, "root": root,
               "dim": self.model.config.search_embedding_size}
        chunks = [paths[i:i + self.batch_size] for i in range(0, len(paths), self.batch_size)]
        ids = [chunk_id(chunk, job) for chunk in chunks]
        mine = [(chunk_number, chunk) for chunk_number, chunk in enumerate(chunks) if chunk_number % world_size == rank]
        parts = Path(out_dir) / "parts" if out_dir is not None else None
        if parts is not None:
            remove_stale_parts(out_dir)
            write_plan(parts, job, ids)
        results = {}
        iterator = mine
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(mine, desc=f"embedding {modality}", unit="batch", disable=rank != 0)
        for number, chunk in iterator:
            if parts is not None and part_done(parts, ids[number]):
                continue  # finished before an interruption
            good, vectors, failures, metadata = self._embed_paths(chunk, modality, pattern, root)
            if parts is not None:
                write_part(parts, ids[number], good, vectors, failures, metadata)
            else:
                results[number] = (good, vectors, failures, metadata)
        if parts is not None:
            return merge_parts(out_dir, faiss_kind) if world_size == 1 else None
        gallery = _assemble([results[n] for n in sorted(results)], modality, self.fingerprint,
                            self.model.config.search_embedding_size)
        require_some_images(gallery)
        gallery.root = root
        gallery.build_faiss(faiss_kind)
        return gallery

    def index_into_store(self, images: str | Path, uri: str | Path, modality: str = "rgb", layout: str | None = None,
                         timestamps: str | Path | None = None, source: str | None = None,
                         progress: bool = False) -> tuple["GalleryStore", int, list[tuple[str, str]]]:
        """Adds the images of folder `images` that the database gallery at `uri` (`store.GalleryStore`) does not
        hold yet: (the store, how many were added, unreadable files). Incremental and safe to interrupt: each chunk
        is one commit, and a rerun skips every stored path. Each row gets its person id and camera from `layout`,
        its timestamp from the layout's `time` group, else the CSV `timestamps` (path,timestamp[,camera]), else the
        file's modification time (UTC), and its `source` (default: the folder's name)."""
        from .store import GalleryStore

        root, paths = gallery_files(Path(images))
        root = Path(root)
        pattern = self._checked_layout(layout, paths, str(root))
        sidecar = read_timestamps(timestamps, root) if timestamps is not None else {}
        store = GalleryStore.open(uri, self.fingerprint, self.model.config.search_embedding_size, create=True)
        stored = store.paths()
        todo = [path for path in paths if str(path.resolve()) not in stored]
        chunks = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"embedding {modality}", unit="batch")
        added, failures = 0, []
        for chunk in chunks:
            good, vectors, failed, metadata = self._embed_paths(chunk, modality, pattern, root)
            records = []
            for path, meta in zip(good, metadata):
                resolved = str(Path(path).resolve())
                listed = sidecar.get(resolved, {})
                when = (parse_time_group(pattern, relative_path(path, root)) if pattern is not None else None) or \
                    listed.get("timestamp") or modification_time(path)
                records.append({"path": resolved, "modality": modality, "person_id": meta["person_id"],
                                "camera": meta["camera_id"] or listed.get("camera"), "timestamp": when,
                                "source": source or root.resolve().name})
            store.add(vectors, records)
            added, failures = added + len(good), failures + failed
        store.build_index()
        return store, added, failures

    @staticmethod
    def _checked_layout(layout: str | None, paths: list[Path], root: str | None) -> re.Pattern | None:
        """The compiled `layout`, refused before anything is embedded when it matches none of the gallery's files;
        a warning says how many it misses when it matches only some."""
        if not layout:
            return None
        pattern = compile_pattern(layout, "--layout")
        relatives = [relative_path(path, root) for path in paths]
        matched = require_matches(pattern, relatives, "--layout", layout)
        if matched < len(relatives):
            missed = next(r for r in relatives if pattern.search(r) is None)
            warnings.warn(f"--layout {layout!r} matched {matched} of {len(relatives)} files; the others get no person "
                          f"id (e.g. {missed!r}).", stacklevel=3)
        return pattern

    def search(self, gallery: "GalleryIndex | GalleryStore", k: int = 10, exclude: Iterable[str | Path] = (),
               rerank: bool = False, id_pattern: str | None = None, filters: "GalleryFilter | None" = None,
               rescore: int = RESCORE_TOP_K, **query: Any) -> list[SearchHit]:
        """Ranks the gallery for one composed query, e.g. `search(index, text="...", sketch="s.jpg")`; scores are
        higher-is-better (cosine similarity, or 1 - the re-ranked distance with `rerank`). `exclude`: gallery files
        left out (e.g. the query image itself). `id_pattern`: a regex whose group 1 (or group `id`) is the person id
        in each hit's path relative to the gallery folder; a pattern that matches none of the hits is an error.
        `filters` (`store.GalleryFilter`: cameras, time window, sources) need a database gallery (`GalleryStore`).
        `rescore`: with a backend whose RGB photos go through the fast RGB gallery encoder, the index's top
        `rescore` hits (at least 100 with `rerank`) are ranked by the full model's vectors of those photos
        (`rescored`; 0: the index's ranking as it is); other backends index by the full model already."""
        from .store import GalleryStore

        if isinstance(gallery, GalleryStore):
            return self._search_store(gallery, k, exclude, rerank, id_pattern, filters, rescore, query)
        if filters:
            raise ValueError("filters (--camera, --after, --before, --source) need a database gallery: index the folder "
                             "with `aio-reid index FOLDER --db URI`.")
        if gallery.model_fingerprint and gallery.model_fingerprint != self.fingerprint:
            raise ValueError(
                f"index was built by model {gallery.model_fingerprint!r} but this searcher is {self.fingerprint!r}; "
                "re-index the gallery with this model."
            )
        pattern = compile_pattern(id_pattern, "--id-pattern") if id_pattern else None
        single = {name: [value] for name, value in query.items() if value is not None}
        vector = self.embed(**single)[0]
        excluded = {str(Path(p).resolve()) for p in exclude}
        rescore = self._rescore_depth(rescore, 100 if rerank else 0)
        depth = max(k + len(excluded), 100 if rerank else k + len(excluded), rescore)
        scores, indices = gallery.top_k(vector, depth)
        kinds = ["cosine similarity"] * len(indices)
        candidates = gallery.embeddings[indices]
        if rescore:
            top = self.rescored(single, vector, [gallery.paths[i] for i in indices], scores, rescore)
            scores, indices, full = top["scores"], indices[top["order"]], top["full"]
            kinds = [FULL_MODEL_SCORE] * full + [GALLERY_ENCODER_SCORE] * (len(indices) - full)
            vector, candidates = top["query"], top["vectors"]
        if rerank and len(candidates) > 1:  # with re-scoring: over the re-scored hits, by the full model's vectors
            distances = k_reciprocal_rerank(vector, candidates)
            order = np.argsort(distances, kind="stable")
            reranked = len(candidates)
            scores = np.concatenate([1.0 - distances[order], scores[reranked:]])
            indices = np.concatenate([indices[:reranked][order], indices[reranked:]])
            kinds = ["1 - re-ranked distance"] * reranked + kinds[reranked:]
        hits, relatives = [], []
        for score, index, kind in zip(scores, indices, kinds):
            path = gallery.paths[index]
            if str(Path(path).resolve()) in excluded:
                continue
            stored = gallery.metadata[index].get("person_id") if index < len(gallery.metadata) else None
            relatives.append(relative_path(path, gallery.root))
            person_id = parse_ids(pattern, relatives[-1])[0] if pattern is not None else stored
            hits.append(SearchHit(len(hits) + 1, path, float(score), person_id, kind))
            if len(hits) == k:
                break
        if pattern is not None:
            require_matches(pattern, relatives, "--id-pattern", id_pattern)
        return hits


    def _rescore_depth(self, rescore: int, least: int = 0) -> int:
        """How many of the index's top hits a search re-scores by the full model: 0 without a fast RGB gallery
        encoder, else `rescore` (0: none), raised to `least`; a negative or non-integer `rescore` is refused."""
        if isinstance(rescore, bool) or not isinstance(rescore, (int, np.integer)) or rescore < 0:
            raise ValueError(f"rescore must be a whole number of hits, 0 or more, got {rescore!r}.")
        return 0 if self.rgb_gallery_processor is None or rescore == 0 else max(int(rescore), least)

    def _search_store(self, store, k, exclude, rerank, id_pattern, filters, rescore, query) -> list[SearchHit]:
        if store.model_fingerprint != self.fingerprint:
            raise ValueError(f"gallery {store.uri} was embedded by model {store.model_fingerprint!r} but this searcher "
                             f"is {self.fingerprint!r}; re-index the gallery with this model.")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if rerank or id_pattern:
            raise ValueError("--rerank and --id-pattern work on folder indexes; a database gallery stores person ids "
                             "from --layout at indexing time.")
        single = {name: [value] for name, value in query.items() if value is not None}
        vector = self.embed(**single)[0]
        excluded = {str(Path(p).resolve()) for p in exclude}
        rescore = self._rescore_depth(rescore)
        rows = [row for row in store.search(vector, max(k + len(excluded), rescore), filters)
                if row["path"] not in excluded]
        kinds = ["cosine similarity"] * len(rows)
        if rescore:
            top = self.rescored(single, vector, [row["path"] for row in rows],
                                np.array([row["score"] for row in rows]), rescore)
            rows = [{**rows[i], "score": float(score)} for i, score in zip(top["order"], top["scores"])]
            kinds = [FULL_MODEL_SCORE] * top["full"] + [GALLERY_ENCODER_SCORE] * (len(rows) - top["full"])
        return [SearchHit(rank, row["path"], row["score"], row["person_id"], kind, row["camera"], row["timestamp"])
                for rank, (row, kind) in enumerate(zip(rows[:k], kinds), 1)]


def modification_time(path: str | Path):
    """The file's modification time as naive UTC: the timestamp of last resort."""
    import datetime as dt

    return dt.datetime.fromtimestamp(Path(path).stat().st_mtime, dt.timezone.utc).replace(tzinfo=None)


def read_timestamps(csv_file: str | Path, root: Path) -> dict[str, dict]:
    """A sidecar CSV with columns path,timestamp (and optionally camera): {resolved path: {timestamp, camera}};
    paths are relative to the gallery folder or absolute. Errors name the file and line."""
    import csv

    from .store import parse_time

    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise FileNotFoundError(f"--timestamps file {csv_file} does not exist.")
    table = {}
    with open(csv_file, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "timestamp"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_file} needs a header with columns path,timestamp (optionally camera), got "
                             f"{reader.fieldnames}.")
        for line, row in enumerate(reader, 2):
            path = Path(row["path"]) if Path(row["path"]).is_absolute() else root / row["path"]
            table[str(path.resolve())] = {"timestamp": parse_time(row["timestamp"], f"{csv_file}:{line} timestamp"),
                                          "camera": row.get("camera") or None}
    return table


__all__ = ["AIOSearcher", "RESCORE_TOP_K", "FULL_VECTORS_KEPT", "list_images", "describe_image", "read_timestamps",
           "modification_time"]
