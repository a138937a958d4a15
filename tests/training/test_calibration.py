"""Calibration (modeling_aio.training.calibration): the text skip fit and the composed-query weights."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_aio import AIOImageProcessor, AIOModel, AIOProcessor
from modeling_aio.training.calibration import align_text_skip

from conftest import tiny_config


@pytest.mark.parametrize("companions", [(), ("ir", "sketch")])
def test_text_alignment_fits_the_text_skip_then_the_fusion_weights(tokenizer, captioned_items, companions):
    torch.manual_seed(0)
    # Fusion weights matter where a composed query has two skips: the OSNet tokenizer's image skip and the text one.
    osnet = dict(image_tokenizer="osnet", image_size=(256, 128), patch_size=16, embedding_size=256,
                 osnet_embedding_skip=True) if companions else {}
    model = AIOModel(tiny_config(text_embedding_skip=True, **osnet))
    height, width = model.config.image_size
    processor = AIOProcessor(AIOImageProcessor(size={"height": height, "width": width}), tokenizer, max_text_length=16)
    model.skip_log_weights.requires_grad_(False)  # as `set_trainable` leaves it for the Trainer stage
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = align_text_skip(model, processor, captioned_items, steps=40, batch_size=8, learning_rate=1e-2,
                              companions=companions, fusion_fraction=0.5, log_every=10)
    assert not model.skip_log_weights.requires_grad
    text_stage = [h for h in history if h["stage"] == "text"]
    assert text_stage[-1]["loss"] < text_stage[0]["loss"]
    assert set(text_stage[0]) == {"stage", "step", "loss", "text", *(f"text+{m}" for m in companions)}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    fitted = {"text_skip.weight", "text_skip.bias"} | ({"skip_log_weights"} if companions else set())
    assert {"text_skip.weight", "text_skip.bias"} <= changed <= fitted  # the chosen weights may be the initial ones
    if companions:  # the weights are chosen on the identities held back from the text skip's fit
        fusion = [h for h in history if h["stage"] == "fusion"]
        assert [h["kind"] for h in fusion] == ["text+ir", "text+sketch"]
        assert all(0.0 <= h["rank1"] <= 1.0 and h["rank1"] >= h["rank1_equal_weights"] for h in fusion)
        grid = {round(math.exp(x / 4), 4) for x in range(-12, 5)}
        assert all(h["text_over_image_weight"] in grid for h in fusion)
        assert model.skip_log_weights[3] == 0 and model.skip_log_weights[0] == 0  # text is the reference; rgb unused
        for h, image in zip(fusion, (1, 2)):
            assert math.isclose(math.exp(-float(model.skip_log_weights[image])), h["text_over_image_weight"], rel_tol=1e-3)


def test_fusion_weights_are_left_alone_without_an_image_skip(tokenizer, captioned_items):
    model = AIOModel(tiny_config(text_embedding_skip=True))  # conv-stem images: text is a composed query's only skip
    height, width = model.config.image_size
    processor = AIOProcessor(AIOImageProcessor(size={"height": height, "width": width}), tokenizer, max_text_length=16)
    history = align_text_skip(model, processor, captioned_items, steps=2, batch_size=8, companions=("ir",),
                              fusion_fraction=0.5)
    assert {h["stage"] for h in history} == {"text"} and not model.skip_log_weights.any()


def test_text_alignment_needs_a_text_skip(config, processor, training_items):
    with pytest.raises(ValueError, match="text_embedding_skip"):
        align_text_skip(AIOModel(config), processor, training_items, steps=1)


def test_text_alignment_refuses_fusion_identities_it_fits_text_on(processor, captioned_items):
    model = AIOModel(tiny_config(text_embedding_skip=True))
    with pytest.raises(ValueError, match="fusion_items"):
        align_text_skip(model, processor, captioned_items, steps=1, fusion_items=captioned_items[:2])
