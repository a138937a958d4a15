"""The text-aligned part (modeling_aio.training.text_alignment and AIOModel's join of it), on a tiny OSNet model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_aio import AIOModel
from modeling_aio.training.data import TrainingItem
from modeling_aio.training.text_alignment import (
    SHARE_GRID, add_text_alignment, align_text_heads, choose_alignment_shares, joined, merged_inputs,
    text_alignment_inputs, train_alignment_heads,
)

from conftest import OSNET, TINY_BERT, random_image, tiny_config


@pytest.fixture
def aligned_model() -> AIOModel:
    torch.manual_seed(0)
    return AIOModel(tiny_config(text_alignment_size=8, text_alignment_hidden=16, **OSNET)).eval()


def test_the_search_vector_joins_both_parts_by_the_query_kind_share(aligned_model, osnet_processor, captioned_items):
    from PIL import Image

    model = aligned_model
    model.alignment_shares.copy_(torch.tensor([0.2, 0.7, 0.3, 0.4]))
    photos = [Image.open(item.image).convert("RGB") for item in captioned_items[:2]]
    inputs = osnet_processor(rgb=photos, sketch=photos, ir=photos, text=["a man in a red shirt", "blue jacket"],
                             return_tensors="pt")
    size = model.config.search_embedding_size
    assert size == 256 + 8
    with torch.no_grad():
        rgb = model(pixel_values_rgb=inputs["pixel_values_rgb"])
        text = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        sketch = model(pixel_values_sketch=inputs["pixel_values_sketch"])
        composed = model(pixel_values_sketch=inputs["pixel_values_sketch"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"])
        with_ir = model(pixel_values_ir=inputs["pixel_values_ir"], input_ids=inputs["input_ids"],
                        attention_mask=inputs["attention_mask"])
        both = model(pixel_values_ir=inputs["pixel_values_ir"], pixel_values_sketch=inputs["pixel_values_sketch"],
                     input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        rgb_text = model(pixel_values_rgb=inputs["pixel_values_rgb"], input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"])
    for out, share in ((rgb, 0.2), (text, 0.7), (composed, 0.4), (with_ir, 0.3), (both, 0.3), (rgb_text, 0.2)):
        assert out.embeds.shape == (2, size)
        assert torch.allclose(out.embeds.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert torch.allclose(out.embeds[:, 256:].norm(dim=-1), torch.full((2,), math.sqrt(share)), atol=1e-5)
        assert torch.allclose(out.embeds[:, :256], F.normalize(out.features, dim=-1) * math.sqrt(1 - share), atol=1e-5)
    # no RGB and no text: the ReID part whole, the aligned part zero, so its ranking of a gallery is unchanged
    assert torch.equal(sketch.embeds[:, 256:], torch.zeros(2, 8)) and sketch.aligned_embeds is None
    assert torch.allclose(sketch.embeds[:, :256], F.normalize(sketch.features, dim=-1))


def test_zero_shares_rank_as_the_model_without_the_part(osnet_processor, captioned_items):
    from PIL import Image

    torch.manual_seed(0)
    plain = AIOModel(tiny_config(**OSNET)).eval()
    grown = add_text_alignment(plain, size=8, hidden=16)
    photos = [Image.open(item.image).convert("RGB") for item in captioned_items[:3]]
    inputs = osnet_processor(rgb=photos, text=["red shirt", "a blue bag", "black"], return_tensors="pt")
    for query in ({"pixel_values_rgb": inputs["pixel_values_rgb"]},
                  {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}):
        with torch.no_grad():
            before, after = plain(**query).embeds, grown(**query).embeds
        assert torch.allclose(after[:, :256], before, atol=1e-6) and not after[:, 256:].any()
    # a model that already has a part (here with a context layer) gets a new one of another shape, untrained
    regrown = add_text_alignment(grown, size=4, hidden=8, layers=1)
    assert regrown.config.text_alignment_layers == 1 and regrown.config.search_embedding_size == 256 + 4
    assert not regrown.alignment_shares.any()


def test_the_image_head_can_read_the_second_rgb_trunk(osnet_processor, captioned_items, tmp_path):
    """With `text_alignment_trunk="second_rgb"` the image head reads the second RGB trunk's map (x0.5 channels,
    whatever the shared trunk's width), in the model, in the cached training inputs and after a reload; the
    shared trunk's map no longer moves the part. Without a second trunk the option is refused."""
    torch.manual_seed(0)
    model = AIOModel(tiny_config(osnet_width=2, second_rgb_trunk_share=0.3, **OSNET)).eval()
    grown = add_text_alignment(model, size=8, hidden=16, trunk="second_rgb").eval()
    assert grown.text_alignment_image.expand.in_channels == 256 and grown.config.osnet_channels[-1] == 512
    grown.alignment_shares.fill_(0.5)
    cache = text_alignment_inputs(grown, osnet_processor, captioned_items[:4], batch_size=4)
    pixels = osnet_processor(rgb=[random_image(seed=n) for n in range(2)], return_tensors="pt")["pixel_values_rgb"]
    with torch.no_grad():
        second_map = grown.second_rgb_trunk(pixels)[0]
        expected = F.normalize(grown.text_alignment_image(second_map), dim=-1)
        out = grown(pixel_values_rgb=pixels)
        assert torch.allclose(out.aligned_embeds, expected, atol=1e-5)
        grown.embeddings.image_backbone.conv5.conv.weight.mul_(3.0)  # the shared trunk's map changes ...
        assert torch.allclose(grown(pixel_values_rgb=pixels).aligned_embeds, expected, atol=1e-5)  # ... not the part
    assert cache["maps"].shape[1] == 256
    grown.save_pretrained(tmp_path / "second")
    reloaded = AIOModel.from_pretrained(tmp_path / "second").eval()
    assert reloaded.config.text_alignment_trunk == "second_rgb"
    with torch.no_grad():
        assert torch.allclose(reloaded(pixel_values_rgb=pixels).embeds, grown(pixel_values_rgb=pixels).embeds,
                              atol=1e-5)
    with pytest.raises(ValueError, match="needs a second RGB trunk"):
        add_text_alignment(AIOModel(tiny_config(**OSNET)), size=8, hidden=16, trunk="second_rgb")
    with pytest.raises(ValueError, match="text_alignment_trunk"):
        tiny_config(text_alignment_size=8, text_alignment_trunk="sketch", **OSNET)


def test_heads_learn_to_match_captions_to_their_photos(aligned_model, osnet_processor, captioned_items):
    cache = text_alignment_inputs(aligned_model, osnet_processor, captioned_items, batch_size=4)
    assert cache["maps"].dtype == torch.float16 and cache["maps"].shape[:2] == (16, 256)
    assert cache["states"].shape[:2] == (32, 16) and cache["masks"].dtype == torch.bool
    assert cache["caption_photo"].tolist() == [n for n in range(16) for _ in range(2)]
    frozen = {k: v.clone() for k, v in aligned_model.state_dict().items() if not k.startswith("text_alignment")}
    log = train_alignment_heads(aligned_model, cache, epochs=30, batch_size=16, learning_rate=3e-3, bf16=False,
                                log_every=10)
    assert log[-1]["loss"] < log[0]["loss"]
    assert all(torch.equal(v, aligned_model.state_dict()[k]) for k, v in frozen.items())  # only the heads train
    assert not aligned_model.text_alignment_image.training  # left in eval mode


def test_context_layers_read_only_real_words_train_with_the_heads_and_reload(osnet_processor, captioned_items,
                                                                            tmp_path):
    torch.manual_seed(0)
    model = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16, layers=1)
    head = model.text_alignment_text.eval()
    assert model.config.text_alignment_layers == 1 and len(head.context) == 1
    states = torch.randn(2, 6, model.config.hidden_size)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    padded = states.clone()
    padded[1, 3:] = 100.0
    with torch.no_grad():
        out = head(states, mask)
        assert torch.allclose(head(padded, mask), out, atol=1e-5)  # padding is never attended to
        assert torch.allclose(head(states[1:, :3], mask[1:, :3]), out[1:], atol=1e-5)
        without = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16).text_alignment_text
        without.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("context.")})
        plain = without.eval()(states, mask)
        assert (plain - out).abs().max() > 0.01 * out.abs().max()  # the layer changes what is read
    before = {k: v.clone() for k, v in head.context.state_dict().items()}
    cache = text_alignment_inputs(model, osnet_processor, captioned_items, batch_size=4)
    train_alignment_heads(model, cache, epochs=2, batch_size=16, learning_rate=3e-3, bf16=False, log_every=10)
    assert any(not torch.equal(before[k], v) for k, v in head.context.state_dict().items())
    model.save_pretrained(tmp_path / "layered")
    reloaded = AIOModel.from_pretrained(tmp_path / "layered").eval()
    assert reloaded.config.text_alignment_layers == 1
    with torch.no_grad():
        assert torch.allclose(reloaded.text_alignment_text(states, mask), model.text_alignment_text(states, mask))


def test_the_stage_chooses_shares_on_held_out_people(aligned_model, osnet_processor, captioned_items, tmp_path):
    train, held = captioned_items[:8], captioned_items[8:]
    rgb_held = []
    for person in range(2):
        for shot in range(2):
            path = tmp_path / f"rgb{person}_{shot}.jpg"
            random_image(500 + person * 10 + shot, (20, 40)).save(path)
            rgb_held.append(TrainingItem(str(path), 50 + person, []))
    record = align_text_heads(aligned_model, osnet_processor, train, held, rgb_held, epochs=2, log_every=1)
    shares = record["shares"]
    kinds = ("rgb", "text", "text+ir", "text+sketch")
    assert {shares[kind] for kind in kinds} <= set(SHARE_GRID) and 0 < shares["rgb"] < 1
    assert aligned_model.alignment_shares.tolist() == pytest.approx([shares[kind] for kind in kinds])
    assert record["held_identities"] == 4 and record["rgb_held_identities"] == 2
    assert "text+ir_rank1_map" in shares and "text+sketch_rank1_map" in shares
    assert record["refit"]["identities"] == len({item.label for item in captioned_items})
    assert record["refit"]["captions"] == sum(len(item.captions) for item in captioned_items)
    with pytest.raises(ValueError, match="held-out captions"):
        align_text_heads(aligned_model, osnet_processor, train, held[:1], epochs=1)


def test_the_refit_starts_again_and_keeps_the_shares(aligned_model, osnet_processor, captioned_items):
    train, held = captioned_items[:8], captioned_items[8:]
    shares, heads = [], []
    for refit in (False, True):
        torch.manual_seed(0)
        for module in (aligned_model.text_alignment_image, aligned_model.text_alignment_text):
            for layer in module.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        record = align_text_heads(aligned_model, osnet_processor, train, held, epochs=2, log_every=1, refit=refit)
        shares.append(aligned_model.alignment_shares.clone())
        heads.append({k: v.clone() for k, v in aligned_model.text_alignment_text.state_dict().items()})
        assert ("refit" in record) == refit
    assert torch.equal(shares[0], shares[1])  # the shares come from the first fit in both
    assert any(not torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the refit saw the held captions


def test_merged_inputs_point_captions_at_their_own_photos():
    first = {"maps": torch.zeros(3, 1), "caption_photo": torch.tensor([0, 2]), "photo_labels": torch.tensor([1, 1, 2])}
    second = {"maps": torch.ones(2, 1), "caption_photo": torch.tensor([1]), "photo_labels": torch.tensor([7, 8])}
    merged = merged_inputs(first, second)
    assert merged["caption_photo"].tolist() == [0, 2, 4]
    assert merged["photo_labels"][merged["caption_photo"]].tolist() == [1, 2, 8]
    assert merged["maps"][4].item() == 1.0


def test_joined_matches_the_model_join():
    reid, aligned = F.normalize(torch.randn(3, 5), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    vector = joined(reid, aligned, 0.3)
    assert torch.allclose(vector.norm(dim=-1), torch.ones(3)) and vector.shape == (3, 9)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "context", "tuned"])
def test_the_text_aligned_model_exports_to_onnx_with_parity(aligned_model, tmp_path, variant):
    """Both heads (plain, with context layers, or over a trunk and encoder layers of their own), the shares and the
    join survive ONNX export (text with padding, RGB, sketch); export_onnx itself refuses a graph below MIN_COSINE
    against PyTorch."""
    from modeling_aio.export import MIN_COSINE, export_onnx

    torch.manual_seed(1)
    if variant == "context":
        aligned_model = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16, layers=1)
    elif variant == "tuned":  # encoder layers of its own, and a trunk that branches from the second RGB trunk
        aligned_model = AIOModel(tiny_config(
            encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, text_alignment_size=8, text_alignment_hidden=16,
            text_alignment_trunk="tuned", text_alignment_trunk_from="conv4", text_alignment_tuned_layers=1,
            **OSNET)).eval()
    aligned_model.alignment_shares.copy_(torch.tensor([0.2, 0.7, 0.3, 0.4]))
    cosines = export_onnx(aligned_model, tmp_path / "onnx")
    assert {path.name for path in cosines} == {"image_rgb.onnx", "image_ir.onnx", "image_sketch.onnx", "text.onnx"}
    assert min(cosines.values()) >= MIN_COSINE


def test_tuned_layers_need_a_part_and_at_most_the_encoder_layers():
    with pytest.raises(ValueError, match="text_alignment_tuned_layers"):
        tiny_config(encoder_config=TINY_BERT, text_alignment_tuned_layers=1, **OSNET)
    with pytest.raises(ValueError, match="at most the encoder's 2 layers"):
        tiny_config(encoder_config=TINY_BERT, text_alignment_size=8, text_alignment_tuned_layers=3, **OSNET)


def test_a_branch_needs_a_tuned_trunk_a_second_trunk_and_a_stage():
    from modeling_aio.configuration_aio import OSNET_STAGES
    from modeling_aio.osnet import OSNet

    assert OSNET_STAGES == OSNet.stages
    for wrong in ({"text_alignment_trunk_from": "conv9", "second_rgb_trunk_share": 0.3},
                  {"text_alignment_trunk_from": "conv4"},
                  {"text_alignment_trunk_from": "conv4", "second_rgb_trunk_share": 0.3,
                   "text_alignment_trunk": "shared"}):
        with pytest.raises(ValueError, match="text_alignment_trunk_from"):
            tiny_config(**{"text_alignment_size": 8, "text_alignment_trunk": "tuned", **wrong}, **OSNET)
    branched = AIOModel(tiny_config(text_alignment_size=8, text_alignment_hidden=16, text_alignment_trunk="tuned",
                                    text_alignment_trunk_from="conv4", second_rgb_trunk_share=0.3, **OSNET))
    with pytest.raises(ValueError, match="whole trunk"):  # its lower stages are the second trunk's: not trained here
        train_alignment_heads(branched, {}, trunk_from="conv4")
    assert add_text_alignment(branched, size=8, hidden=16, trunk="tuned").text_alignment_rgb_trunk.stages[0] == "conv2"


def test_tuned_layers_train_on_cached_lower_layer_states_and_freeze_again(osnet_processor, captioned_items):
    """`--tuned-layers` on the CPU path: the cache holds the caption's pass below the tuned layers, and the stage
    trains the tuned copies (at their own learning rate) with the heads, while the shared encoder stays as it was."""
    torch.manual_seed(0)
    base = AIOModel(tiny_config(encoder_config=TINY_BERT, second_rgb_trunk_share=0.3, **OSNET)).eval()
    model = add_text_alignment(base, size=8, hidden=16, trunk="second_rgb", tuned_layers=1)
    cache = text_alignment_inputs(model, osnet_processor, captioned_items, batch_size=8)
    ids = osnet_processor(text=captioned_items[0].captions[:1], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        lower = model.encoder.lower_layers(model.embeddings.text_tokenizer(ids["input_ids"]), ids["attention_mask"], 1)
    assert torch.allclose(cache["states"][0].float(), lower[0], atol=1e-2)  # fp16 cache of layer 0's outputs
    tuned_before = {k: v.clone() for k, v in model.text_alignment_text.tuned_layers.state_dict().items()}
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    train_alignment_heads(model, cache, epochs=2, batch_size=16, bf16=False, log_every=10, tuned_learning_rate=1e-2)
    tuned_after = model.text_alignment_text.tuned_layers.state_dict()
    assert any(not torch.equal(tuned_before[k], v) for k, v in tuned_after.items())
    assert all(torch.equal(encoder_before[k], v) for k, v in model.encoder.state_dict().items())
    assert not any(p.requires_grad for p in model.text_alignment_text.tuned_layers.parameters())


def test_a_tuned_trunk_starts_as_0267_without_a_second_rgb_trunk():
    from modeling_aio.checkpoint.build import pretrained_osnet_state

    torch.manual_seed(0)
    model = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16, trunk="tuned")
    start, _ = pretrained_osnet_state("osnet-0267", 1)
    assert all(torch.equal(model.text_alignment_rgb_trunk.state_dict()[k], v.to(torch.float32) if v.is_floating_point()
                           else v) for k, v in start.items())


def test_a_tuned_trunks_top_stages_train_on_cached_lower_maps_and_start_again_for_the_refit(
        osnet_processor, captioned_items):
    """`--tune-trunk-from conv4`: the cache holds what conv4 reads, conv4 and conv5 train with the heads (the
    stages below stay 0267's), the shares are chosen on feature maps of the trunk as trained, and the refit starts
    the trunk again from 0267."""
    torch.manual_seed(0)
    model = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16, trunk="tuned")
    trunk = model.text_alignment_rgb_trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    cache = text_alignment_inputs(model, osnet_processor, captioned_items[:8], batch_size=8, trunk_from="conv4")
    assert cache["maps"].shape[1:] == (trunk.channels[2], 16, 8)
    train_alignment_heads(model, cache, epochs=2, batch_size=16, bf16=False, log_every=10, trunk_from="conv4",
                          trunk_learning_rate=1e-2)
    after = trunk.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("conv4."))
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("conv5."))
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith(("conv1.", "conv2.", "conv3.")))
    assert not any(p.requires_grad for p in trunk.parameters()) and not trunk.training
    with pytest.raises(ValueError, match="conv9"):
        train_alignment_heads(model, cache, epochs=1, trunk_from="conv9")
    shared = add_text_alignment(AIOModel(tiny_config(**OSNET)).eval(), size=8, hidden=16)
    with pytest.raises(ValueError, match="trunk of its own"):
        text_alignment_inputs(shared, osnet_processor, captioned_items[:2], trunk_from="conv4")

    trunk.load_state_dict(before)
    trained = {}

    def keep_first_fit(model, held, *args, **kwargs):  # the trunk as the shares see it, before the refit
        trained.update({k: v.clone() for k, v in model.text_alignment_rgb_trunk.state_dict().items()})
        return choose_alignment_shares(model, held, *args, **kwargs)

    from unittest import mock

    with mock.patch("modeling_aio.training.text_alignment.choose_alignment_shares", keep_first_fit):
        record = align_text_heads(model, osnet_processor, captioned_items[:8], captioned_items[8:], epochs=2,
                                  log_every=1, trunk_from="conv4")
    assert "refit" in record
    assert any(not torch.equal(trained[k], before[k]) for k in trained if k.startswith("conv4."))
    refitted = trunk.state_dict()  # trained again from 0267 on more captions: not the first fit's trunk
    assert any(not torch.equal(trained[k], refitted[k]) for k in refitted if k.startswith("conv4."))
    assert all(torch.equal(before[k], refitted[k]) for k in refitted if k.startswith("conv3."))
