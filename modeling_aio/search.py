"""Person search with an AIO checkpoint: embed a gallery once, then query it by any mix of text, sketch, IR, RGB.

`AIOSearcher` is the Python API; the `aio-reid` command line only wraps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from processing_aio import ImageInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
INDEX_FORMAT_VERSION = 1


@dataclass
class SearchHit:
    rank: int
    path: str
    score: float


@dataclass
class GalleryIndex:
    """Embeddings (N, D) of a gallery with their file paths, and the model that made them."""

    embeddings: np.ndarray
    paths: list[str]
    modality: str = "rgb"
    model_fingerprint: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", self.embeddings.astype(np.float32), allow_pickle=False)
        meta = {"format_version": INDEX_FORMAT_VERSION, "modality": self.modality, "paths": self.paths,
                "model_fingerprint": self.model_fingerprint, "failures": self.failures}
        (directory / "index.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "GalleryIndex":
        directory = Path(directory)
        if not (directory / "index.json").exists():
            raise FileNotFoundError(f"{directory} is not an aio-reid index (no index.json).")
        meta = json.loads((directory / "index.json").read_text())
        embeddings = np.load(directory / "embeddings.npy", allow_pickle=False)
        return cls(embeddings, meta["paths"], meta["modality"], meta["model_fingerprint"],
                   [tuple(f) for f in meta.get("failures", [])])


def list_images(directory: str | Path) -> list[Path]:
    """Every file under `directory` (recursively), sorted; non-images are kept so they get reported, not hidden."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"gallery directory {directory} does not exist or is not a directory.")
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


class AIOSearcher:
    """Embeds galleries and queries with an AIO model and its processor, and ranks by cosine similarity."""

    def __init__(self, model, processor, batch_size: int = 32):
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 32, **kwargs: Any) -> "AIOSearcher":
        import modeling_aio  # noqa: F401  (registers the aio model type)
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(str(path), **kwargs)
        processor = AutoProcessor.from_pretrained(str(path), **kwargs)
        return cls(model, processor, batch_size)

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: vectors from another model or version are not comparable."""
        config = self.model.config
        return f"{config.model_type}:{config.encoder_config.model_type}:{config.embedding_size}:{config._name_or_path}"

    @torch.no_grad()
    def embed(self, **query: Sequence[Any]) -> np.ndarray:
        """(B, D) embeddings of B queries, each made of the given modalities (`text=`, `rgb=`, `ir=`, `sketch=`)."""
        batch = self.processor(**query, return_tensors="pt")
        return self.model.get_features(**batch).numpy()

    def index(self, images: str | Path | Iterable[str | Path], modality: str = "rgb",
              progress: bool = False) -> GalleryIndex:
        """Embeds every image; unreadable files are listed in `failures` and counted, never silently dropped."""
        paths = list_images(images) if isinstance(images, (str, Path)) else [Path(p) for p in images]
        vectors, kept, failures = [], [], []
        batches = range(0, len(paths), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"embedding {modality}", unit="batch")
        for start in batches:
            chunk = paths[start:start + self.batch_size]
            good = []
            for path in chunk:
                try:
                    self.processor.image_processor(path, modality=modality, return_tensors=None)
                    good.append(path)
                except ImageInputError as error:
                    failures.append((str(path), str(error)))
            if good:
                vectors.append(self.embed(**{modality: [str(p) for p in good]}))
                kept.extend(str(p) for p in good)
        dim = self.model.config.embedding_size
        embeddings = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        return GalleryIndex(embeddings, kept, modality, self.fingerprint, failures)

    def search(self, gallery: GalleryIndex, k: int = 10, exclude: Iterable[str] = (), **query: Any) -> list[SearchHit]:
        """Ranks the gallery for one composed query, e.g. `search(index, text="...", sketch="s.jpg")`."""
        if gallery.model_fingerprint and gallery.model_fingerprint != self.fingerprint:
            raise ValueError(
                f"index was built by model {gallery.model_fingerprint!r} but this searcher is {self.fingerprint!r}; "
                "re-index the gallery with this model."
            )
        single = {name: [value] for name, value in query.items() if value is not None}
        vector = self.embed(**single)[0]
        scores = gallery.embeddings @ vector
        excluded = {str(p) for p in exclude}
        order = [i for i in np.argsort(-scores, kind="stable") if gallery.paths[i] not in excluded][:k]
        return [SearchHit(rank + 1, gallery.paths[i], float(scores[i])) for rank, i in enumerate(order)]


__all__ = ["AIOSearcher", "GalleryIndex", "SearchHit", "list_images"]
