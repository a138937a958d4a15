"""The end-to-end text fine-tuning experiment on a tiny bundle: what `run_variants` reads, trains and scores."""

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modeling_aio.checkpoint.paths import SHARED, TEXT_GALLERY_SPLIT_FILE
from modeling_aio.experiments.text_finetune import (
    TextTower, Variant, _full_gallery, decode_photos, run_variants, train_variant,
)
from modeling_aio.osnet import OSNet

from conftest import random_image

TINY_BERT = dict(model_type="bert", vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=16, type_vocab_size=2)
CHANNELS = (16, 64, 64, 64)


def tiny_bundle(folder: Path, train_photos: int = 8, gallery_photos: int = 6, mark_share_holdout: bool = True) -> Path:
    """A bundle as `pack_bundle` writes it: photos of 4 training and 3 protocol identities, 2 captions each;
    training identity 3 is the share hold-out's (`photo_share_holdout`, unless not `mark_share_holdout`)."""
    blobs = []
    for n in range(train_photos + gallery_photos):
        buffer = io.BytesIO()
        random_image(n, (20, 40)).save(buffer, "WEBP", quality=75)
        blobs.append(buffer.getvalue())
    offsets = torch.tensor([0] + [len(b) for b in blobs]).cumsum(0)
    labels = torch.tensor([n % 4 for n in range(train_photos)] + [n % 3 for n in range(gallery_photos)])
    photos = torch.arange(train_photos + gallery_photos).repeat_interleave(2)
    ids = torch.randint(1, 12, (len(photos), 16), generator=torch.Generator().manual_seed(0))
    ids[:, 10:] = 0  # padding
    image = {f"image.{k}": v for k, v in OSNet(channels=CHANNELS).state_dict().items()}
    text = {f"text.{k}": v for k, v in TextTower(TINY_BERT, hidden=8, size=4).encoder.state_dict().items()
            if "position_ids" not in k}
    held = torch.tensor([n < train_photos and n % 4 == 3 for n in range(train_photos + gallery_photos)])
    marks = {"photo_share_holdout": held} if mark_share_holdout else {}
    folder.mkdir()
    save_file({"photo_bytes": torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8),
               "photo_offsets": offsets, "photo_labels": labels, "caption_ids": ids.short(), "caption_photo": photos,
               **marks, **image, **text}, str(folder / "bundle.safetensors"))
    (folder / "bundle.json").write_text(json.dumps({
        "train_photos": train_photos, "gallery_photos": gallery_photos, "queries": 2 * gallery_photos,
        "minilm_config": TINY_BERT, "image_channels": list(CHANNELS)}))
    return folder


def test_a_variant_name_must_be_a_safe_file_name():
    with pytest.raises(ValueError, match="0267\\+top2"):
        Variant("0267+top2", True, 2)
    with pytest.raises(ValueError, match="epochs"):
        Variant("x", True, 2, epochs=0)


def test_photos_decode_at_the_processor_size(tmp_path):
    from safetensors.torch import load_file

    bundle = load_file(str(tiny_bundle(tmp_path / "b") / "bundle.safetensors"))
    photos = decode_photos(bundle, workers=2)
    assert photos.shape == (14, 3, 256, 128) and photos.dtype == torch.uint8


@pytest.mark.slow
def test_each_variant_trains_what_it_names_and_is_scored(tmp_path):
    bundle_dir = tiny_bundle(tmp_path / "b")
    variants = (Variant("both", True, 2, epochs=1), Variant("heads", False, 0, epochs=1))
    results = run_variants(bundle_dir, tmp_path / "out.json", variants, budget_seconds=600, save_dir=tmp_path)
    both, heads = results
    from safetensors import safe_open

    with safe_open(str(tmp_path / "both.safetensors"), "pt") as saved:
        keys = set(saved.keys())
        assert json.loads(saved.metadata()["scores"]) == both["scores"][-1]
        assert json.loads(saved.metadata()["data"]) == {"train_identities": 4, "train_captions": 16,
                                                         "share_holdout": None}  # the tiny bundle does not say
    assert any(k.startswith("image.trunk.") for k in keys) and "text.output.weight" in keys
    assert {k.split(".")[4] for k in keys if k.startswith("text.encoder.")} == {"0", "1"}  # both tuned layers
    with safe_open(str(tmp_path / "heads.safetensors"), "pt") as saved:
        assert not any(k.startswith("text.encoder.") for k in saved.keys())
    assert both["trainable_parameters"] > heads["trainable_parameters"]
    for result in results:
        score = result["scores"][-1]
        assert 0 <= score["rank-1"] <= 100 and 0 <= score["mAP"] <= 100
    written = json.loads((tmp_path / "out.json").read_text())
    assert [v["name"] for v in written["variants"]] == ["both", "heads"]


def test_a_variant_past_the_budget_is_skipped_not_run(tmp_path):
    bundle_dir = tiny_bundle(tmp_path / "b")
    results = run_variants(bundle_dir, tmp_path / "out.json", (Variant("a", False, 0, epochs=1),
                                                               Variant("b", False, 0, epochs=1)), budget_seconds=-1)
    assert results == [{"name": "a", "skipped": "time budget"}, {"name": "b", "skipped": "time budget"}]


def test_a_frozen_trunk_does_not_move(tmp_path):
    from safetensors.torch import load_file

    bundle_dir = tiny_bundle(tmp_path / "b")
    bundle = load_file(str(bundle_dir / "bundle.safetensors"))
    bundle["caption_mask"] = bundle["caption_ids"] != 0
    description = json.loads((bundle_dir / "bundle.json").read_text())
    photos = decode_photos(bundle, workers=2)
    _, image, text = train_variant(Variant("top1", False, 1, epochs=1), bundle, photos, description,
                                   torch.device("cpu"), batch_size=8)
    for key, value in image.trunk.state_dict().items():
        assert torch.equal(value, bundle[f"image.{key}"]), key  # weights and BatchNorm statistics alike
    moved = {key for key, value in text.encoder.state_dict().items()
             if f"text.{key}" in bundle and not torch.equal(value, bundle[f"text.{key}"])}
    assert moved and all(key.startswith("encoder.layer.1.") for key in moved)  # only the top layer learns


@pytest.mark.skipif(not (SHARED / "data" / "CUHK-PEDES" / "index.csv").exists(), reason="needs ../shared")
def test_the_full_gallery_matches_its_split():
    rows, queries = _full_gallery(TEXT_GALLERY_SPLIT_FILE, SHARED / "data")
    assert len(rows) == json.loads(TEXT_GALLERY_SPLIT_FILE.read_text())["gallery_photos"]
    assert len(queries) == 1228 and all(caption.strip() for caption, _ in queries)


def test_a_variant_without_the_share_holdout_trains_on_the_other_people_only(tmp_path):
    from safetensors.torch import load_file

    from modeling_aio.experiments.text_finetune import training_captions

    bundle_dir = tiny_bundle(tmp_path / "b")
    bundle = load_file(str(bundle_dir / "bundle.safetensors"))
    description = json.loads((bundle_dir / "bundle.json").read_text())
    every = training_captions(Variant("all", False, 0), bundle, description)
    kept = training_captions(Variant("ship", False, 0, share_holdout=False), bundle, description)
    labels = bundle["photo_labels"][bundle["caption_photo"]]
    assert len(every) == 16 and set(labels[every].tolist()) == {0, 1, 2, 3}
    assert len(kept) == 12 and set(labels[kept].tolist()) == {0, 1, 2}


def test_leaving_out_an_unmarked_share_holdout_is_refused(tmp_path):
    from safetensors.torch import load_file

    from modeling_aio.experiments.text_finetune import training_captions

    bundle_dir = tiny_bundle(tmp_path / "b", mark_share_holdout=False)
    bundle = load_file(str(bundle_dir / "bundle.safetensors"))
    description = json.loads((bundle_dir / "bundle.json").read_text())
    with pytest.raises(ValueError, match="ship.*photo_share_holdout"):
        training_captions(Variant("ship", False, 0, share_holdout=False), bundle, description)
    packed_without = description | {"share_holdout": False}  # a bundle packed without them needs no marks
    assert len(training_captions(Variant("ship", False, 0, share_holdout=False), bundle, packed_without)) == 16
