"""AIOModel behaviour on tiny random configs: shapes, unit norm, composition, batching, freezing, save/load."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from modeling_aio import AIOConfig, AIOForReIdentification, AIOModel, MODALITIES

from conftest import tiny_config

B = 3


def make_inputs(config: AIOConfig, batch: int, modalities, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    h, w = config.image_size
    inputs = {}
    for m in modalities:
        if m == "text":
            ids = torch.randint(5, config.vocab_size, (batch, 9), generator=gen)
            mask = torch.ones_like(ids)
            for i in range(batch):  # ragged captions: padding must not change results
                length = 3 + i % 6
                ids[i, length:] = 0
                mask[i, length:] = 0
            inputs.update(input_ids=ids, attention_mask=mask)
        else:
            inputs[f"pixel_values_{m}"] = torch.randn(batch, 3, h, w, generator=gen)
    return inputs


ALL_SUBSETS = [s for r in range(1, 5) for s in itertools.combinations(MODALITIES, r)]


@pytest.mark.parametrize("modalities", ALL_SUBSETS, ids=["+".join(s) for s in ALL_SUBSETS])
def test_every_modality_subset_gives_unit_vectors(config, modalities):
    model = AIOModel(config).eval()
    embeds = model.get_features(**make_inputs(config, B, modalities))
    assert embeds.shape == (B, config.embedding_size)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(B), atol=1e-5)
    assert torch.isfinite(embeds).all()


def test_combined_query_differs_from_each_single_modality(config):
    model = AIOModel(config).eval()
    full = make_inputs(config, B, MODALITIES)
    combined = model.get_features(**full)
    for m in MODALITIES:
        keys = ["input_ids", "attention_mask"] if m == "text" else [f"pixel_values_{m}"]
        single = model.get_features(**{k: full[k] for k in keys})
        assert (combined - single).abs().max() > 1e-3, m


def test_batch_of_one_and_batch_of_64_agree(config):
    model = AIOModel(config).eval()
    inputs = make_inputs(config, 64, MODALITIES, seed=3)
    batched = model.get_features(**inputs)
    for i in (0, 5, 63):
        item = {k: v[i:i + 1] for k, v in inputs.items()}
        if "input_ids" in item:  # trim the padding the batch imposed: a lone query has none
            length = int(item["attention_mask"].sum())
            item = {**item, "input_ids": item["input_ids"][:, :length], "attention_mask": item["attention_mask"][:, :length]}
        assert torch.allclose(model.get_features(**item)[0], batched[i], atol=1e-5), i


def test_save_load_round_trip_gives_identical_embeddings(config, tmp_path):
    model = AIOModel(config).eval()
    inputs = make_inputs(config, B, MODALITIES)
    before = model.get_features(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AIOModel.from_pretrained(tmp_path).eval()
    assert torch.equal(before, loaded.get_features(**inputs))


def test_frozen_encoder_unchanged_by_training_step_while_tokenizers_change(config):
    model = AIOForReIdentification(config)
    model.train()
    encoder = model.aio.encoder
    assert all(not p.requires_grad for p in encoder.parameters())
    assert not encoder.training and model.aio.embeddings.training
    encoder_before = copy.deepcopy(encoder.state_dict())
    stem_before = model.aio.embeddings.image_tokenizers["rgb"].projection.weight.detach().clone()
    text_before = model.aio.embeddings.text_tokenizer.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = make_inputs(config, 4, ("rgb", "sketch", "text"))
    out = model(**inputs, labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    assert model.aio.embeddings.image_tokenizers["rgb"].projection.weight.grad.abs().sum() > 0  # flows through
    assert all(p.grad is None for p in encoder.parameters())
    optimizer.step()
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[name]), name
    assert not torch.equal(stem_before, model.aio.embeddings.image_tokenizers["rgb"].projection.weight)
    assert not torch.equal(text_before, model.aio.embeddings.text_tokenizer.word_embeddings.weight)


def test_reid_model_returns_losses_per_head(config):
    model = AIOForReIdentification(config)
    inputs = make_inputs(config, 4, ("rgb", "ir", "text"))
    masked = inputs["input_ids"].clone()
    attribute_labels = torch.full_like(masked, -100)
    masked[:, 1] = 4
    attribute_labels[:, 1] = torch.tensor([0, 3, 5, 2])
    out = model(**inputs, labels=torch.tensor([0, 1, 2, 0]), masked_input_ids=masked, attribute_labels=attribute_labels)
    for name in ("loss", "identity_loss", "binding_loss", "masked_attribute_loss"):
        value = getattr(out, name)
        assert value is not None and torch.isfinite(value) and value > 0, name
    assert out.logits.shape == (4, config.num_identities)
    no_labels = model(**inputs)
    assert no_labels.loss is None and no_labels.embeds.shape == (4, config.embedding_size)


@pytest.mark.parametrize("fused_query_loss", [True, False])
def test_training_encodes_the_composed_queries_that_are_asked(config, fused_query_loss):
    """Text + IR and text + sketch (no RGB: that is the gallery's side) are trained as queries of their own."""
    config.fused_query_loss = fused_query_loss
    model = AIOForReIdentification(config)
    encoded = []
    encode_tokens = model.aio.encode_tokens
    model.aio.encode_tokens = lambda tokens, *a, **k: encoded.append(frozenset(tokens)) or encode_tokens(tokens, *a, **k)
    model(**make_inputs(config, 4, ("rgb", "ir", "sketch", "text")), labels=torch.tensor([0, 1, 2, 0]))
    composed = {frozenset({"text", "ir"}), frozenset({"text", "sketch"})}
    assert (composed <= set(encoded)) == fused_query_loss
    assert {frozenset({m}) for m in MODALITIES} <= set(encoded)


def test_any_encoder_family_fits(tmp_path):
    """The shared encoder is a nested config: a BERT (MiniLM-style) encoder works as well as DINOv2."""
    config = tiny_config(encoder_config=dict(model_type="bert", hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, vocab_size=50))
    model = AIOModel(config).eval()
    inputs = make_inputs(config, 2, ("sketch", "text"))
    embeds = model.get_features(**inputs)
    assert embeds.shape == (2, 16)
    model.save_pretrained(tmp_path)
    assert torch.equal(AIOModel.from_pretrained(tmp_path).get_features(**inputs), embeds)


def test_config_round_trip_and_validation(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    loaded = AIOConfig.from_pretrained(tmp_path)
    assert loaded.image_size == (32, 16) and loaded.encoder_config.hidden_size == 32
    assert loaded.to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="image_size"):
        tiny_config(image_size=(30, 16))
    with pytest.raises(ValueError, match="image_tokenizer"):
        tiny_config(image_tokenizer="resnet")


def test_text_skip_adds_a_projection_of_the_pooled_real_text_positions():
    torch.manual_seed(0)
    config = tiny_config(text_embedding_skip=True)
    model = AIOModel(config).eval()
    inputs = make_inputs(config, B, ["text", "rgb"])
    with torch.no_grad():
        out = model(**inputs)
        assert torch.allclose(out.features, out.projected_cls + model.text_skip(out.text_pooled_output), atol=1e-6)
        # The pool reads real caption positions only: the same caption with more padding pools the same.
        padded = {k: torch.nn.functional.pad(v, (0, 5)) if k in ("input_ids", "attention_mask") else v
                  for k, v in inputs.items()}
        assert torch.allclose(model(**padded).text_pooled_output, out.text_pooled_output, atol=1e-5)
        image_only = model(pixel_values_rgb=inputs["pixel_values_rgb"])
        assert image_only.text_pooled_output is None
        assert torch.allclose(image_only.features, image_only.projected_cls)


# --- Bad checkpoints and bad inputs: an error naming the file or the query, never random, cast or NaN results ---


def broken_checkpoint(config, tmp_path, damage: str):
    """A saved tiny AIOModel, then damaged one way."""
    import json

    from safetensors.torch import load_file, save_file

    folder = tmp_path / damage
    AIOModel(config).save_pretrained(folder)
    weights_file = folder / "model.safetensors"
    weights = load_file(str(weights_file))
    if damage == "no encoder":
        save_file({k: v for k, v in weights.items() if not k.startswith("encoder.")}, str(weights_file))
    elif damage == "no projection":
        save_file({k: v for k, v in weights.items() if k != "projection.weight"}, str(weights_file))
    elif damage == "int32 weights":
        save_file({k: v.to(torch.int32) if k == "projection.weight" else v for k, v in weights.items()},
                  str(weights_file))
    elif damage == "truncated":
        weights_file.write_bytes(weights_file.read_bytes()[:-9])
    elif damage == "no encoder_config":
        config_json = json.loads((folder / "config.json").read_text())
        config_json.pop("encoder_config")
        (folder / "config.json").write_text(json.dumps(config_json))
    elif damage == "skip flags on":
        config_json = json.loads((folder / "config.json").read_text())
        config_json["text_embedding_skip"] = True
        (folder / "config.json").write_text(json.dumps(config_json))
    elif damage == "another model type":
        config_json = json.loads((folder / "config.json").read_text())
        config_json["model_type"] = "bert"
        (folder / "config.json").write_text(json.dumps(config_json))
    return folder


@pytest.mark.parametrize("damage, message", [
    ("no encoder", "missing keys"), ("no projection", r"missing keys 1 \(e.g. \['projection.weight'\]\)"),
    ("int32 weights", "non-float weights, e.g. projection.weight"), ("truncated", "model.safetensors is not a complete"),
    ("no encoder_config", "encoder_config missing"), ("skip flags on", "missing keys"),
    ("another model type", "model type 'bert', not an AIO checkpoint"),
])
def test_broken_checkpoints_are_refused_naming_what_is_wrong(config, tmp_path, damage, message):
    folder = broken_checkpoint(config, tmp_path, damage)
    with pytest.raises(OSError, match=message):
        AIOModel.from_pretrained(folder)


def test_strict_false_loads_anyway_and_a_missing_folder_is_named(config, tmp_path):
    model, info = AIOModel.from_pretrained(broken_checkpoint(config, tmp_path, "no projection"), strict=False,
                                           output_loading_info=True)
    assert set(info["missing_keys"]) == {"projection.weight"}
    with pytest.raises(OSError, match="checkpoint folder .*nowhere does not exist"):
        AIOModel.from_pretrained(tmp_path / "nowhere")


def test_non_finite_pixels_an_empty_text_mask_and_nan_embeddings_are_errors(config):
    model = AIOModel(config).eval()
    pixels = torch.randn(3, 3, 32, 16)
    pixels[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"`pixel_values_sketch`\[1\] has NaN"):
        model.get_features(pixel_values_sketch=pixels)
    ids = torch.tensor([[2, 5, 3], [2, 6, 3]])
    with pytest.raises(ValueError, match=r"`attention_mask`\[1\] is all zeros"):
        model.get_features(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with torch.no_grad():
        model.projection.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="query 0 of the batch got a NaN"):
        model.get_features(pixel_values_rgb=torch.randn(2, 3, 32, 16))


def test_second_rgb_trunk_adds_a_weighted_cosine_for_rgb_and_leaves_other_rankings_alone():
    """With `second_rgb_trunk_share` s, an RGB query's dot product with an RGB photo is (1 - s) times the cosine
    without the trunk plus s times the second trunk's cosine; a query without RGB pads zeros, so its ranking of RGB
    photos is unchanged."""
    torch.manual_seed(0)
    osnet = dict(image_tokenizer="osnet", image_size=(256, 128), patch_size=16, embedding_size=256)
    plain = AIOModel(tiny_config(**osnet)).eval()
    with_second = AIOModel(tiny_config(second_rgb_trunk_share=0.25, **osnet)).eval()
    with_second.load_state_dict(plain.state_dict(), strict=False)
    assert with_second.config.search_embedding_size == 256 + 256
    assert not any(p.requires_grad for p in with_second.second_rgb_trunk.parameters())
    photos = make_inputs(with_second.config, 4, ["rgb"], seed=1)
    queries = make_inputs(with_second.config, 2, ["rgb"], seed=2)
    sketches = make_inputs(with_second.config, 2, ["sketch"], seed=3)
    with torch.no_grad():
        gallery, query = with_second.get_features(**photos), with_second.get_features(**queries)
        expected = 0.75 * plain.get_features(**queries) @ plain.get_features(**photos).T + 0.25 * (
            torch.nn.functional.normalize(with_second.second_rgb_trunk(queries["pixel_values_rgb"])[1], dim=-1)
            @ torch.nn.functional.normalize(with_second.second_rgb_trunk(photos["pixel_values_rgb"])[1], dim=-1).T)
        sketch_query = with_second.get_features(**sketches)
    assert torch.allclose(query @ gallery.T, expected, atol=1e-5)
    assert torch.allclose(query.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(sketch_query[:, 256:], torch.zeros(2, 256))
    before = plain.get_features(**sketches) @ plain.get_features(**photos).T
    assert torch.equal((sketch_query @ gallery.T).argsort(dim=1), before.argsort(dim=1))
    for share in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="second_rgb_trunk_share"):
            tiny_config(second_rgb_trunk_share=share, **osnet)
    with pytest.raises(ValueError, match="osnet image tokenizer"):
        tiny_config(second_rgb_trunk_share=0.5)
