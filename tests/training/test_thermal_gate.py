"""The thermal gate (`AIOThermalGate`, `training.thermal_gate`): fitted on thermal-looking against near-infrared
views it routes each IR query to the IR trunk or the shared one; unfitted it never fires; it ships with the IR
trunk."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_aio import AIOModel
from modeling_aio.embeddings_aio import AIOThermalGate
from modeling_aio.experiments.thermal_binding import ship_ir_trunk, with_ir_trunk
from modeling_aio.osnet import OSNet
from modeling_aio.training.thermal_gate import fit_thermal_gate, gate_features, gate_images
from processing_aio import AIOImageProcessor
from processing_aio.synthesis import channel_augment_ir, grayscale_ir, thermal_ir

from conftest import random_image, tiny_config


def textured_photo(seed: int):
    """A busy colour photo: the near-infrared and grayscale views of it have texture everywhere."""
    return random_image(seed, (64, 128))


def views(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed thermal views and near-infrared/grayscale views of `count` textured photos."""
    rng = random.Random(seed)
    photos = [textured_photo(seed * 100 + i) for i in range(count)]
    processor = AIOImageProcessor()
    thermal = processor([thermal_ir(p, rng) for p in photos], modality="ir")["pixel_values"]
    other = processor([v for p in photos for v in (grayscale_ir(p), channel_augment_ir(p, rng))],
                      modality="ir")["pixel_values"]
    return thermal, other


def osnet_model(**overrides) -> AIOModel:
    torch.manual_seed(0)
    return AIOModel(tiny_config(image_tokenizer="osnet", image_size=(256, 128), osnet_width=1, **overrides)).eval()


def test_an_unfitted_gate_never_fires_and_a_fitted_one_separates_unseen_views():
    torch.manual_seed(0)
    trunk = OSNet().eval()
    gate = AIOThermalGate(trunk.embedding_size)
    thermal, other = views(12, seed=1)
    with torch.no_grad():
        assert gate(thermal, trunk(thermal)[1]).max() < 1e-6
        accuracy = fit_thermal_gate(gate, gate_features(gate, trunk, thermal), gate_features(gate, trunk, other))
        unseen_thermal, unseen_other = views(6, seed=2)
        fired_thermal = (gate(unseen_thermal, trunk(unseen_thermal)[1]) > 0.5).float().mean()
        fired_other = (gate(unseen_other, trunk(unseen_other)[1]) > 0.5).float().mean()
    assert accuracy > 0.9 and fired_thermal > 0.8 and fired_other < 0.2
    with pytest.raises(ValueError, match="both kinds"):
        fit_thermal_gate(gate, gate_features(gate, trunk, thermal)[:0], gate_features(gate, trunk, other))
    with pytest.raises(ValueError, match="both kinds"):
        fit_thermal_gate(gate, torch.zeros(3, 7), torch.zeros(3, 7))


def test_gate_images_are_real_crops_plus_synthetic_views(tmp_path):
    photos, crops = [], []
    for i in range(3):
        photos.append(tmp_path / f"photo{i}.png")
        textured_photo(i).save(photos[-1])
    crops.append(tmp_path / "thermal.png")
    textured_photo(9).convert("L").save(crops[-1])
    thermal, other = gate_images(photos, crops, seed=0)
    assert len(thermal) == 1 + 3 and len(other) == 2 * 3
    assert all(image.size == (64, 128) for image in thermal + other)


def test_the_config_needs_an_ir_trunk_for_the_gate():
    with pytest.raises(ValueError, match="ir_thermal_gate"):
        tiny_config(image_tokenizer="osnet", image_size=(256, 128), ir_thermal_gate=True)
    assert osnet_model(osnet_modality_trunks=("ir",), ir_thermal_gate=True).embeddings.thermal_gate is not None
    assert osnet_model().embeddings.thermal_gate is None


def test_the_gate_routes_each_ir_query_to_one_trunk():
    """With the IR trunk changed, a query the gate calls thermal embeds as the IR trunk alone reads it, one it calls
    near-infrared as the shared trunk reads it, in the same batch; the unfitted gate leaves the model as before."""
    base = osnet_model()
    gated = with_ir_trunk(base, thermal_gate=True)
    pixels = torch.randn(2, 3, 256, 128)
    assert torch.allclose(gated.get_features(pixel_values_ir=pixels), base.get_features(pixel_values_ir=pixels),
                          atol=1e-5)
    with torch.no_grad():
        for parameter in gated.embeddings.modality_backbones["ir"].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ungated = with_ir_trunk(base)
    ungated.embeddings.modality_backbones["ir"].load_state_dict(gated.embeddings.modality_backbones["ir"].state_dict())
    gate = gated.embeddings.thermal_gate
    level = AIOThermalGate.statistics(pixels)[:, 4]  # route by mean level: the first image thermal, the second not
    gate.weight.zero_()
    gate.weight[-1] = 80.0 / (level[0] - level[1])  # logits +40 and -40
    gate.bias.fill_(-float(gate.weight[-1] * level.mean()))
    shared = gated.embeddings.image_backbone(pixels)[1]
    assert gate(pixels, shared)[0] == 1.0 and gate(pixels, shared)[1] < 1e-12
    features = gated.get_features(pixel_values_ir=pixels)
    assert torch.allclose(features[0], ungated.get_features(pixel_values_ir=pixels[:1])[0], atol=1e-5)
    assert torch.allclose(features[1], base.get_features(pixel_values_ir=pixels[1:])[0], atol=1e-5)
    assert not torch.allclose(features[0], base.get_features(pixel_values_ir=pixels[:1])[0], atol=1e-3)


def test_ship_carries_the_gate_and_marks_it_in_the_shape_file(tmp_path):
    gated = with_ir_trunk(osnet_model(osnet_modality_trunks=("sketch",)), thermal_gate=True)
    gated.embeddings.thermal_gate.bias.fill_(1.5)
    gated.save_pretrained(tmp_path / "bound")
    trainable = tmp_path / "aio-reid-trainable.safetensors"
    save_file({"projection.weight": torch.zeros(2, 2, dtype=torch.float16)}, str(trainable))
    trainable.with_suffix(".json").write_text(json.dumps({"osnet_modality_trunks": ["sketch"],
                                                          "trained_modules": ["projection"]}))
    ship_ir_trunk(tmp_path / "bound", trainable)
    weights = load_file(str(trainable))
    assert weights["embeddings.thermal_gate.bias"].dtype == torch.float32
    assert float(weights["embeddings.thermal_gate.bias"]) == 1.5
    shapes = json.loads(trainable.with_suffix(".json").read_text())
    assert shapes["ir_thermal_gate"] is True and "embeddings.thermal_gate" in shapes["trained_modules"]
    rebuilt = AIOModel(tiny_config(image_tokenizer="osnet", image_size=(256, 128), osnet_width=1,
                                   osnet_modality_trunks=tuple(shapes["osnet_modality_trunks"]),
                                   ir_thermal_gate=shapes["ir_thermal_gate"]))
    missing, unexpected = rebuilt.load_state_dict({k: v.float() for k, v in weights.items()
                                                   if k.startswith("embeddings.")}, strict=False)
    assert not unexpected and not any(k.startswith("embeddings.thermal_gate") for k in missing)
    assert np.isclose(float(rebuilt.embeddings.thermal_gate.bias), 1.5)


def test_the_gated_ir_path_exports_to_onnx_with_parity(tmp_path):
    """A fitted gate between two different trunks (random weights: some check images go each way) survives ONNX
    export; export_onnx itself refuses a file below MIN_COSINE."""
    from modeling_aio.export import export_onnx

    gated = with_ir_trunk(osnet_model(), thermal_gate=True)
    with torch.no_grad():
        for parameter in gated.embeddings.modality_backbones["ir"].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        gate = gated.embeddings.thermal_gate
        gate.weight.normal_()
        gate.bias.zero_()
    cosines = export_onnx(gated, tmp_path / "onnx")
    assert set(path.name for path in cosines) >= {"image_ir.onnx", "image_rgb.onnx"}
