"""The IR-trunk experiment (modeling_aio.experiments.thermal_binding) on a tiny OSNet-tokenizer config: the grown
model starts as the original (its IR trunk a copy of the shared one) and ships into a trainable-weights file."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from modeling_aio import AIOModel
from modeling_aio.experiments.thermal_binding import ship_ir_trunk, with_ir_trunk

from conftest import tiny_config


def osnet_model() -> AIOModel:
    torch.manual_seed(0)
    return AIOModel(tiny_config(image_tokenizer="osnet", image_size=(256, 128), osnet_width=1,
                                osnet_modality_trunks=("sketch",))).eval()


def test_the_grown_model_embeds_as_before_until_its_ir_trunk_trains():
    model = osnet_model()
    grown = with_ir_trunk(model)
    assert set(grown.embeddings.modality_backbones) == {"ir", "sketch"}
    shared = grown.embeddings.image_backbone.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in grown.embeddings.modality_backbones["ir"].state_dict().items())
    pixels = torch.randn(1, 3, 256, 128)
    assert torch.allclose(grown.get_features(pixel_values_ir=pixels), model.get_features(pixel_values_ir=pixels),
                          atol=1e-5)


def test_ship_adds_the_ir_trunk_to_the_trainable_weights(tmp_path):
    grown = with_ir_trunk(osnet_model())
    grown.save_pretrained(tmp_path / "bound")
    trainable = tmp_path / "aio-reid-trainable.safetensors"
    save_file({"projection.weight": torch.zeros(2, 2, dtype=torch.float16)}, str(trainable))
    trainable.with_suffix(".json").write_text(json.dumps({"osnet_modality_trunks": ["sketch"]}))
    added = ship_ir_trunk(tmp_path / "bound", trainable)
    weights = load_file(str(trainable))
    assert added > 0 and sum(k.startswith("embeddings.modality_backbones.ir.") for k in weights) == added
    assert "projection.weight" in weights and all(v.dtype == torch.float16 for v in weights.values())
    assert json.loads(trainable.with_suffix(".json").read_text())["osnet_modality_trunks"] == ["ir", "sketch"]
