"""AIOProcessor: output keys and shapes per modality, and a clear error naming the input for every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aio import AIOModel
from processing_aio import ImageInputError

from conftest import random_image


def test_all_modalities_and_images_alias(processor, image_files):
    batch = processor(text=["a man in red", "a woman with a black bag"], rgb=image_files[:2],
                      ir=image_files[2:], sketch=[random_image(9), np.asarray(random_image(8))])
    assert set(batch) == {"pixel_values_rgb", "pixel_values_ir", "pixel_values_sketch", "input_ids", "attention_mask"}
    for key in ("pixel_values_rgb", "pixel_values_ir", "pixel_values_sketch"):
        assert batch[key].shape == (2, 3, 32, 16) and batch[key].dtype == torch.float32
    assert batch["input_ids"].shape[0] == 2
    alias = processor(images=image_files[:2])
    assert torch.equal(alias["pixel_values_rgb"], batch["pixel_values_rgb"])


def test_ir_and_sketch_are_grayscale_replicated(processor, image_files):
    batch = processor(ir=image_files[:1], sketch=image_files[:1])
    for key in ("pixel_values_ir", "pixel_values_sketch"):
        pixels = batch[key][0]
        std = torch.tensor(processor.image_processor.image_std)[:, None, None]
        mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
        raw = pixels * std + mean
        assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)


def test_processor_output_feeds_the_model(processor, config, image_files):
    model = AIOModel(config).eval()
    embeds = model.get_features(**processor(text=["a man in red"] * 2, sketch=image_files[:2]))
    assert embeds.shape == (2, config.embedding_size)


def test_processor_round_trip(processor, tmp_path, image_files):
    from transformers import AutoProcessor

    import modeling_aio  # noqa: F401

    processor.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "aio"}')
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "AIOProcessor"
    a, b = processor(text=["a man"], rgb=image_files[:1]), loaded(text=["a man"], rgb=image_files[:1])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_image_file_is_named(processor, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageInputError, match=r"rgb\[0\].*broken.jpg.*not a readable image"):
        processor(rgb=[bad])


def test_zero_byte_image_file_is_named(processor, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"sketch\[0\].*empty.png.*0 bytes"):
        processor(sketch=[empty])


def test_missing_image_file_is_named(processor, tmp_path):
    with pytest.raises(ImageInputError, match=r"ir\[0\].*nope.jpg.*does not exist"):
        processor(ir=[tmp_path / "nope.jpg"])


def test_unknown_modality_keyword_is_named(processor, image_files):
    with pytest.raises(TypeError, match="thermal"):
        processor(thermal=image_files[:1])


def test_text_options_go_to_the_tokenizer_within_the_models_positions(processor):
    captions = ["a man in red", "a woman wearing a long blue dress and white shoes"]
    longest = processor(text=captions)["input_ids"]
    assert longest.shape[1] < 16 and processor(text=captions, padding=True)["input_ids"].shape == longest.shape
    fixed = processor(text=captions, padding="max_length")  # the fixed shape of an exported graph
    assert fixed["input_ids"].shape == (2, 16)
    assert fixed["attention_mask"].sum(1).tolist() == processor(text=captions)["attention_mask"].sum(1).tolist()
    assert processor(text=captions, max_length=6)["input_ids"].shape == (2, 6)
    with pytest.raises(ValueError, match="max_length=32"):
        processor(text=captions, max_length=32)
    with pytest.raises(ValueError, match="truncation=False"):
        processor(text=[" ".join(["red"] * 20)], truncation=False)
    with pytest.raises(TypeError, match="return_offsets"):
        processor(text=captions, return_offsets_mapping=True)


def test_lists_of_different_lengths(processor, image_files):
    with pytest.raises(ValueError, match=r"same length.*'text': 1.*'rgb': 2"):
        processor(text=["a man"], rgb=image_files[:2])


@pytest.mark.parametrize("text", ["", "   ", "\u200b\u200c\u2060", "\x00\x07 \t", "\ufeff"])
def test_empty_text_is_refused(processor, text):
    with pytest.raises(ValueError, match=r"text\[1\] is empty"):
        processor(text=["a man in red", text])


def test_one_pixel_image_is_refused(processor, tmp_path):
    tiny = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(ImageInputError, match=r"dot.png.*1x1 px is too small"):
        processor(rgb=[tiny])


def test_huge_image_is_refused(processor, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("L", (20000, 40)).save(huge)
    with pytest.raises(ImageInputError, match=r"huge.png.*20000x40 px is too large"):
        processor(sketch=[huge])


def test_both_images_and_rgb(processor, image_files):
    with pytest.raises(ValueError, match="not both"):
        processor(rgb=image_files[:1], images=image_files[:1])


def test_model_names_mismatched_batch_sizes(config):
    model = AIOModel(config).eval()
    with pytest.raises(ValueError, match=r"same batch size.*'rgb': 2.*'text': 3"):
        model(pixel_values_rgb=torch.randn(2, 3, 32, 16), input_ids=torch.ones(3, 4, dtype=torch.long))


def test_model_names_wrong_image_shape_and_unknown_inputs(config):
    model = AIOModel(config).eval()
    with pytest.raises(ValueError, match=r"pixel_values_sketch.*\(2, 3, 64, 64\)"):
        model(pixel_values_sketch=torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="pixel_values_thermal"):
        model(pixel_values_thermal=torch.randn(2, 3, 32, 16))
    with pytest.raises(ValueError, match="at least one modality"):
        model()


def test_invisible_characters_are_dropped_and_unknown_only_text_warns(processor):
    plain = processor(text=["a man in red"], return_tensors="pt")["input_ids"]
    hidden = processor(text=["a\u200b man\x07 in red"], return_tensors="pt")["input_ids"]
    assert torch.equal(plain, hidden)
    with pytest.warns(UserWarning, match=r"text\[1\] .* only unknown word pieces"):
        processor(text=["a man", "\U0001F600\U0001F600"], return_tensors="pt")


def test_sixteen_bit_thermal_frames_are_stretched_not_clipped_white(processor, tmp_path):
    from PIL import Image

    frame = np.linspace(20000, 30000, 64 * 32).reshape(64, 32).astype(np.uint16)  # a warm 16-bit thermal crop
    Image.fromarray(frame).save(tmp_path / "thermal16.png")
    pixels = processor(ir=[str(tmp_path / "thermal16.png")], return_tensors="pt")["pixel_values_ir"]
    assert float(pixels.std()) > 0.5  # a ramp, not a white (clipped) image


def test_an_oversized_image_is_refused_from_its_header(processor, tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (12000, 16)).save(tmp_path / "wide.png")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded before the size check"))
    with pytest.raises(ImageInputError, match=r"12000x16 px is too large"):
        processor(rgb=[str(tmp_path / "wide.png")])
