"""Person search with an AIO checkpoint: embed a gallery once, then query it by any mix of text, sketch, IR, RGB.

`AIOSearcher` is the Python API; the `aio-reid` command line only wraps it. The index it writes is `index.GalleryIndex`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from processing_aio import ImageInputError

from .index import GalleryIndex, SearchHit, _assemble, merge_parts
from .rerank import k_reciprocal_rerank

#: File-name layouts whose person id (group 1) and camera (group 2) `aio-reid index --layout` records.
LAYOUTS: dict[str, str] = {
    "market1501": r"^(-?\d+)_c(\d)s\d",
    "dukemtmc-reid": r"^(\d+)_c(\d+)_",
    "msmt17": r"^(\d+)_\d+_(\d+)_",
    "pku-sketch": r"^(\d+)_(\d+)_",
}

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
            from ..export import ExportedRuntime

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


__all__ = ["AIOSearcher", "list_images", "describe_image", "LAYOUTS"]
