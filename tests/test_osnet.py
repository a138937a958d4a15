"""The OSNet port (retail-0267 layout) and the osnet image tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_aio import AIOForReIdentification, AIOModel
from modeling_aio.osnet import OSNet

from conftest import REPO, requires_shared_data, tiny_config

ONNX = REPO.parent / "shared" / "weights" / "openvino-person-reid" / "person-reidentification-retail-0267.onnx"
SHIPPED = REPO / "weights" / "osnet-0267.safetensors"


def test_shipped_weights_load_by_name():
    net = OSNet().eval()
    net.load_state_dict(load_file(str(SHIPPED)))  # strict: every parameter and buffer present
    feature_map, embedding = net(torch.randn(2, 3, 256, 128))
    assert feature_map.shape == (2, 256, 16, 8) and embedding.shape == (2, 256)


@pytest.mark.slow
@requires_shared_data
@pytest.mark.skipif(not ONNX.exists(), reason="the 0267 ONNX file is absent")
def test_port_matches_onnxruntime_and_the_shipped_weights():
    from modeling_aio.checkpoint import osnet_conversion as convert
    net = convert.osnet_from_onnx(ONNX)
    differences = convert.verify(net, ONNX, trials=2)
    assert differences["onnxruntime (MVN decomposed)"] < 1e-4
    shipped = load_file(str(SHIPPED))
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, shipped[name]), name


def osnet_config(**overrides):
    return tiny_config(**{"image_tokenizer": "osnet", "image_size": (256, 128), "patch_size": 16,
                          "embedding_size": 256, **overrides})


def test_osnet_tokenizer_queries_and_frozen_trunk():
    config = osnet_config(num_identities=3, osnet_embedding_skip=True)
    model = AIOForReIdentification(config)
    model.aio.embeddings.image_backbone.load_state_dict(load_file(str(SHIPPED)))
    model.train()
    trunk = model.aio.embeddings.image_backbone
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    pixels = torch.randn(3, 3, 256, 128)
    out = model(pixel_values_rgb=pixels, pixel_values_sketch=pixels.flip(-1), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert model.aio.embeddings.image_tokenizers["sketch"].grid_projection.weight.grad.abs().sum() > 0
    for name, value in trunk.state_dict().items():
        assert torch.equal(value, before[name]), name
    model.eval()
    single = model.get_features(pixel_values_ir=pixels)
    assert single.shape == (3, 256) and torch.allclose(single.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(model.get_features(pixel_values_ir=pixels[:1])[0], single[0], atol=1e-5)


def test_osnet_embedding_skip_starts_the_model_as_the_reid_trunk():
    model = AIOModel(osnet_config(osnet_embedding_skip=True, embedding_size=320)).eval()
    model.embeddings.image_backbone.load_state_dict(load_file(str(SHIPPED)))
    torch.nn.init.zeros_(model.projection.weight)
    torch.nn.init.zeros_(model.projection.bias)
    pixels = torch.randn(2, 3, 256, 128)
    trunk = torch.nn.functional.normalize(model.embeddings.image_backbone(pixels)[1], dim=-1)
    embeds = model.get_features(pixel_values_rgb=pixels)
    assert torch.allclose(embeds[:, :256], trunk, atol=1e-5) and embeds[:, 256:].abs().max() == 0
    with pytest.raises(ValueError, match="osnet_embedding_skip"):
        tiny_config(osnet_embedding_skip=True)


def test_osnet_tokenizer_needs_256x128():
    with pytest.raises(ValueError, match="256x128"):
        tiny_config(image_tokenizer="osnet", image_size=(128, 64), patch_size=16)


def test_osnet_checkpoint_round_trip(tmp_path: Path):
    model = AIOModel(osnet_config(osnet_embedding_skip=True)).eval()
    pixels = torch.randn(2, 3, 256, 128)
    before = model.get_features(pixel_values_sketch=pixels)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "osnet.py").exists()  # travels with the checkpoint for remote code
    assert torch.equal(AIOModel.from_pretrained(tmp_path).get_features(pixel_values_sketch=pixels), before)


def test_widened_trunk_computes_the_same_function_with_distinct_copies():
    net = OSNet().eval()
    net.load_state_dict(load_file(str(SHIPPED)))
    wide = net.widened(2, seed=1).eval()
    assert wide.channels == (64, 256, 384, 512)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in net.parameters())
    pixels = torch.randn(3, 3, 256, 128)
    with torch.no_grad():
        feature_map, embedding = net(pixels)
        wide_map, wide_embedding = wide(pixels)
    assert wide_embedding.shape == (3, 256) and wide_map.shape == (3, 512, 16, 8)
    assert torch.allclose(wide_embedding, embedding, atol=1e-4)
    assert torch.allclose(wide_map, feature_map.repeat_interleave(2, dim=1), atol=1e-4)
    # a layer reading repeated inputs splits each weight unequally between the copies (else they would train alike)
    pointwise = wide.conv3[0].conv1.conv.weight[:, :, 0, 0]
    assert not torch.allclose(pointwise[:, 0::2], pointwise[:, 1::2])
    assert torch.allclose(pointwise[:, 0::2] + pointwise[:, 1::2],
                          net.conv3[0].conv1.conv.weight[:, :, 0, 0].repeat_interleave(2, dim=0), atol=1e-6)
    again = net.widened(2, seed=1)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in wide.state_dict().items())


def test_trunk_split_at_a_stage_computes_the_whole_feature_map():
    net = OSNet().eval()
    net.load_state_dict(load_file(str(SHIPPED)))
    pixels = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        whole, _ = net(pixels)
        below = net.features_before(pixels, "conv4")
        assert below.shape == (2, 192, 16, 8)  # what conv3 hands on: a cache of it is all conv4 and conv5 need
        assert torch.allclose(net.feature_map_from(below, "conv4"), whole, atol=1e-5)
        assert torch.allclose(net.feature_map_from(net.features_before(pixels, "conv2"), "conv2"), whole, atol=1e-5)
    with pytest.raises(ValueError, match="stage 'conv9'"):
        net.features_before(pixels, "conv9")


def test_osnet_width_sets_trunk_and_adapter_widths():
    config = osnet_config(osnet_width=2, osnet_modality_trunks=("sketch",), osnet_embedding_skip=True)
    assert config.osnet_channels == (64, 256, 384, 512)
    model = AIOModel(config).eval()
    assert model.embeddings.image_backbone.channels == (64, 256, 384, 512)
    assert model.embeddings.modality_backbones["sketch"].channels == (64, 256, 384, 512)
    assert model.embeddings.image_tokenizers["rgb"].grid_projection.in_features == 512
    embeds = model.get_features(pixel_values_sketch=torch.randn(2, 3, 256, 128))
    assert embeds.shape == (2, 256)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="osnet_width"):
            osnet_config(osnet_width=bad)
    with pytest.raises(ValueError, match="channels"):
        OSNet(channels=(32, 100, 192, 256))
