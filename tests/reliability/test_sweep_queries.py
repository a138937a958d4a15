"""The bad-input sweep, queries: what `AIOProcessor` and `AIOModel.get_features` do with every hostile image, text
and tensor a user can hand them. Each case either gets an error that names the input (`test_error_*`) or a
documented recovery that is checked (`test_recovery_*`); `make reliability` writes the table in
docs/reliability.md from these tests."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aio import AIOModel
from processing_aio import ImageInputError

from conftest import random_image, write


def jpeg(path: Path) -> Path:
    random_image(1, (40, 80)).save(path, format="JPEG")
    return path


def png(path: Path) -> Path:
    random_image(2, (40, 80)).save(path, format="PNG")
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height in its header but holds one empty row: giant if ever decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# (case, make the input from a temporary folder, what the error must say)
IMAGE_ERRORS = [
    ("0-byte file", lambda d: write(d / "empty.jpg", b""), r"empty\.jpg.*0 bytes"),
    ("truncated JPEG", lambda d: cut(jpeg(d / "cut.jpg")), r"cut\.jpg.*not a readable image"),
    ("truncated PNG", lambda d: cut(png(d / "cut.png")), r"cut\.png.*not a readable image"),
    ("text file named .jpg", lambda d: write(d / "note.jpg", "not an image"),
     r"note\.jpg.*not a readable image"),
    ("HTML page named .png", lambda d: write(d / "page.png", "<html>404</html>"),
     r"page\.png.*not a readable image"),
    ("random bytes", lambda d: write(d / "noise.jpg", np.random.default_rng(0).bytes(4096)),
     r"noise\.jpg.*not a readable image"),
    ("1x1 image", lambda d: Image.new("RGB", (1, 1)).save(d / "dot.png") or d / "dot.png", r"dot\.png.*1x1 px is too small"),
    ("20000x20000 image (header only, never decoded)", lambda d: png_header_only(d / "giant.png", 20000, 20000),
     r"giant\.png.*too large \(.*400000000 pixels"),
    ("a directory", lambda d: d, r"is not a file"),
    ("a FIFO", lambda d: fifo(d / "pipe.jpg"), r"pipe\.jpg.*is not a file"),
    ("a missing path", lambda d: d / "missing.jpg", r"missing\.jpg.*does not exist"),
    ("a URL string", lambda d: "https://example.com/person.jpg", r"https://example.com/person.jpg.*URL"),
    ("None in a batch", lambda d: None, r"rgb\[0\].*NoneType"),
    ("a number", lambda d: 7, r"rgb\[0\].*int"),
    ("a 1-D array", lambda d: np.zeros(100, np.uint8), r"rgb\[0\].*shape \(100,\)"),
    ("an array of 5 channels", lambda d: np.zeros((64, 32, 5), np.uint8), r"rgb\[0\].*shape \(64, 32, 5\)"),
    ("an empty array", lambda d: np.zeros((0, 0, 3), np.uint8), r"rgb\[0\].*0x0 px is too small"),
]


def cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("make, message", [pytest.param(m, e, id=c) for c, m, e in IMAGE_ERRORS])
def test_error_bad_image(processor, tmp_path, make, message):
    """error naming the image (and its place in the batch)"""
    with pytest.raises(ImageInputError, match=message):
        processor(rgb=[make(tmp_path)])


ODD_MODES = ["CMYK", "P", "LA", "RGBA", "1", "L", "I;16", "I", "F", "YCbCr"]


@pytest.mark.parametrize("mode", ODD_MODES)
def test_recovery_odd_image_mode(processor, tmp_path, mode):
    """converted: finite pixels of the model's shape in every modality, not an error"""
    image = random_image(3, (40, 80)).convert("L" if mode in ("I;16", "I", "F") else mode)
    if mode in ("I;16", "I", "F"):
        image = Image.fromarray((np.asarray(image).astype(np.float32) * 100).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    path = tmp_path / "odd.tiff"
    image.save(path)
    batch = processor(rgb=[path], ir=[path], sketch=[path])
    for name in ("pixel_values_rgb", "pixel_values_ir", "pixel_values_sketch"):
        assert batch[name].shape == (1, 3, 32, 16) and torch.isfinite(batch[name]).all()
        assert float(batch[name].std()) > 0.1  # the picture survived, not a flat image


TEXT_ERRORS = [
    ("empty text", "", r"text\[0\] is empty"),
    ("whitespace only", " \t\n ", r"text\[0\] is empty"),
    ("zero-width spaces only", "\u200b\u200c\u200d\u2060", r"text\[0\] is empty"),
    ("control characters only", "\x00\x07\x1b", r"text\[0\] is empty"),
    ("byte-order mark only", "\ufeff", r"text\[0\] is empty"),
    ("None as text", None, r"text\[0\] must be a string, got NoneType"),
    ("bytes as text", b"a man in red", r"text\[0\] must be a string, got bytes"),
    ("a number as text", 42, r"text\[0\] must be a string, got int"),
]


@pytest.mark.parametrize("text, message", [pytest.param(t, e, id=c) for c, t, e in TEXT_ERRORS])
def test_error_bad_text(processor, text, message):
    """error naming the caption's place in the batch"""
    with pytest.raises((ValueError, TypeError), match=message):
        processor(text=["a man in red", text][1:] if text is not None else [None])


def test_recovery_ten_thousand_word_text(processor, config):
    """cut to the model's text positions (max_text_length), embedded without error"""
    batch = processor(text=["a man in a red shirt " * 2000])
    assert batch["input_ids"].shape == (1, processor.max_text_length)
    assert torch.isfinite(AIOModel(config).eval().get_features(**batch)).all()


def test_recovery_invisible_characters_inside_text(processor):
    """dropped: the caption tokenizes as without them"""
    clean = processor(text=["a man in red"])["input_ids"]
    assert torch.equal(processor(text=["a\u200b man\x00 in\ufeff red\u2060"])["input_ids"], clean)


@pytest.mark.parametrize("text", ["\U0001F600\U0001F600", "\u4e00\u4e8c\u4e09"])
def test_recovery_text_of_only_unknown_word_pieces(processor, text):
    """embedded as no description, with a warning naming the caption"""
    with pytest.warns(UserWarning, match=r"text\[0\].*only unknown word pieces"):
        processor(text=[text])


BATCH_ERRORS = [
    ("mismatched batch lengths", dict(text=["a man"], rgb=["a.jpg", "b.jpg"]), r"same length.*'text': 1.*'rgb': 2"),
    ("empty lists", dict(text=[]), r"Empty query lists"),
    ("no modality", dict(), r"needs at least one of"),
    ("unknown modality keyword", dict(thermal=["a.jpg"]), r"unknown modality or argument \['thermal'\]"),
    ("misspelt modality", dict(skecth=["a.jpg"]), r"\['skecth'\]"),
    ("both images and rgb", dict(images=["a.jpg"], rgb=["a.jpg"]), r"not both"),
    ("text longer than the model's positions on request", dict(text=["a man"], max_length=10_000),
     r"max_length=10000 must be between 1"),
]


@pytest.mark.parametrize("kwargs, message", [pytest.param(k, e, id=c) for c, k, e in BATCH_ERRORS])
def test_error_bad_batch(processor, kwargs, message):
    """error naming the keywords and their lengths"""
    with pytest.raises((ValueError, TypeError), match=message):
        processor(**kwargs)


def tensors(config, batch: int = 2, length: int = 5) -> dict[str, torch.Tensor]:
    return {"pixel_values_rgb": torch.zeros(batch, 3, *config.image_size),
            "input_ids": torch.full((batch, length), 5), "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def damaged(config, case: str) -> dict[str, torch.Tensor]:
    inputs = tensors(config)
    if case == "NaN pixels":
        inputs["pixel_values_rgb"][1, 0, 0, 0] = float("nan")
    elif case == "infinite pixels":
        inputs["pixel_values_rgb"][1] = float("inf")
    elif case == "unnormalised 0-255 pixels":
        inputs["pixel_values_rgb"][1] = 255.0
    elif case == "pixels of 1e30":
        inputs["pixel_values_rgb"][1] = 1e30
    elif case == "all-zero attention mask":
        inputs["attention_mask"][1] = 0
    elif case == "word-piece ids beyond the vocabulary":
        inputs["input_ids"][1, 2] = config.vocab_size + 7
    elif case == "negative word-piece ids":
        inputs["input_ids"][1, 2] = -1
    elif case == "mismatched batch sizes":
        inputs["input_ids"] = inputs["input_ids"][:1]
        inputs["attention_mask"] = inputs["attention_mask"][:1]
    elif case == "image of another size":
        inputs["pixel_values_rgb"] = torch.zeros(2, 3, 64, 64)
    elif case == "attention mask of another shape":
        inputs["attention_mask"] = inputs["attention_mask"][:, :3]
    elif case == "unknown input":
        inputs["pixel_values_thermal"] = torch.zeros(2, 3, *config.image_size)
    return inputs


TENSOR_ERRORS = [
    ("NaN pixels", r"`pixel_values_rgb`\[1\] has NaN or infinite"),
    ("infinite pixels", r"`pixel_values_rgb`\[1\] has NaN or infinite"),
    ("unnormalised 0-255 pixels", r"`pixel_values_rgb`\[1\] has values up to 255.*AIOProcessor"),
    ("pixels of 1e30", r"`pixel_values_rgb`\[1\] has values up to 1e\+30"),
    ("all-zero attention mask", r"`attention_mask`\[1\] is all zeros"),
    ("word-piece ids beyond the vocabulary", r"`input_ids`\[1\] has word-piece id \d+ outside"),
    ("negative word-piece ids", r"`input_ids`\[1\] has word-piece id -1 outside"),
    ("mismatched batch sizes", r"same batch size"),
    ("image of another size", r"must have shape \(B, 3, 32, 16\), got \(2, 3, 64, 64\)"),
    ("attention mask of another shape", r"`attention_mask` shape \(2, 3\) differs"),
    ("unknown input", r"unexpected inputs.*pixel_values_thermal"),
]


@pytest.mark.parametrize("case, message", [pytest.param(c, e, id=c) for c, e in TENSOR_ERRORS])
def test_error_bad_model_input(config, case, message):
    """error naming the tensor and the query's row, before anything is embedded"""
    model = AIOModel(config).eval()
    with pytest.raises((ValueError, TypeError), match=message):
        model.get_features(**damaged(config, case))


def test_error_nan_embedding_from_broken_weights(config):
    """error naming the query: a NaN embedding never leaves get_features"""
    model = AIOModel(config).eval()
    with torch.no_grad():
        model.projection.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"query 0 of the batch got a NaN or infinite embedding"):
        model.get_features(**tensors(config))
