"""The OSNet port (retail-0267 layout) and the osnet image tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_aio import AIOForReIdentification, AIOModel
from modeling_aio.osnet import ConvLayer, LightConv3x3, OSBlock, OSNet

from conftest import REPO, requires_shared_data, tiny_config

ONNX = REPO.parent / "shared" / "weights" / "openvino-person-reid" / "person-reidentification-retail-0267.onnx"
SHIPPED = REPO / "weights" / "osnet-0267.safetensors"


def test_shipped_weights_load_by_name():
    net = OSNet().eval()
    net.load_state_dict(load_file(str(SHIPPED)))  # strict: every parameter and buffer present
    feature_map, embedding = net(torch.randn(2, 3, 256, 128))
    assert feature_map.shape == (2, 256, 16, 8) and embedding.shape == (2, 256)


def _with_running_statistics(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.weight.shape, generator=generator))
        bn.bias.data.copy_(torch.randn(bn.bias.shape, generator=generator))
    return module


@pytest.mark.parametrize("layer", [ConvLayer(8, 16, 3, padding=1), LightConv3x3(16)], ids=["conv", "lite3x3"])
def test_eval_folds_batch_norm_into_the_convolution_with_the_same_values_and_gradients(layer):
    layer = _with_running_statistics(layer).eval()
    conv = layer.conv if isinstance(layer, ConvLayer) else layer.conv2
    unfolded = ((lambda x: torch.relu(layer.bn(layer.conv(x)))) if isinstance(layer, ConvLayer)
                else (lambda x: torch.relu(layer.bn(layer.conv2(layer.conv1(x))))))
    x = torch.randn(2, conv.in_channels if isinstance(layer, ConvLayer) else 16, 8, 6)
    folded_out, reference = layer(x), unfolded(x)
    assert torch.allclose(folded_out, reference, atol=1e-5)
    grads = []
    for out in (layer(x), unfolded(x)):
        layer.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        grads.append([p.grad.clone() for p in (conv.weight, layer.bn.weight, layer.bn.bias)])
    for folded_grad, reference_grad in zip(*grads):
        assert torch.allclose(folded_grad, reference_grad, atol=1e-4)
    layer.train()  # batch statistics: the unfolded path
    assert torch.allclose(layer(x), unfolded(x), atol=1e-5)


def _block_out_of_place(block: OSBlock, x: torch.Tensor) -> torch.Tensor:
    """OSBlock's function written with out-of-place operations only (BatchNorm unfolded), as a reference."""
    def conv_layer(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
        y = layer.bn(layer.conv(x))
        return torch.relu(y) if layer.relu else y

    def stream(layers, x: torch.Tensor) -> torch.Tensor:
        for lite in (layers if isinstance(layers, torch.nn.Sequential) else [layers]):
            x = torch.relu(lite.bn(lite.conv2(lite.conv1(x))))
        return x

    x1 = conv_layer(block.conv1, x)
    x2 = sum(block.gate(stream(s, x1)) for s in (block.conv2a, block.conv2b, block.conv2c, block.conv2d))
    return torch.relu(conv_layer(block.conv3, x2) + x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_block_computes_in_place_with_the_values_and_gradients_of_out_of_place_operations(mode):
    """OSBlock's ReLUs and sums run in place: same output and the same gradients (input and parameters) as the
    out-of-place reference, in training mode (batch statistics) and eval mode (folded BatchNorm); its input is
    never written into."""
    torch.manual_seed(0)
    block = _with_running_statistics(OSBlock(64, 64, group_norm_gate=True)).double().train(mode == "train")
    x = torch.randn(2, 64, 4, 3, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    weights = torch.randn(2, 64, 4, 3, dtype=torch.float64)
    grads = []
    for function in (block, lambda x: _block_out_of_place(block, x)):
        out = function(x)
        grads.append((out.detach(), *torch.autograd.grad((out * weights).sum(), [x, *block.parameters()])))
    assert torch.equal(x.detach(), before)
    for in_place, reference in zip(*grads):
        assert torch.allclose(in_place, reference, atol=1e-10)


def test_trunk_runs_channels_last_and_matches_the_contiguous_layout():
    net = _with_running_statistics(OSNet()).eval()
    pixels = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        feature_map, embedding = net(pixels)
        below = net.features_before(pixels, "conv3")
        from_contiguous = net.feature_map_from(below.contiguous(), "conv3")
    assert below.is_contiguous(memory_format=torch.channels_last)
    assert feature_map.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(from_contiguous, feature_map, atol=1e-5)
    assert torch.isfinite(embedding).all()


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


def test_skipped_blocks_become_identities_and_the_other_modules_keep_their_names():
    torch.manual_seed(0)
    net = OSNet(skipped_blocks=("conv4.1", "conv3.1")).eval()
    assert net.skipped_blocks == ("conv3.1", "conv4.1")
    assert isinstance(net.conv3[1], torch.nn.Identity) and isinstance(net.conv3[2][0], ConvLayer)
    whole = OSNet().state_dict()
    kept = net.state_dict()
    assert not any(k.startswith(("conv3.1.", "conv4.1.")) for k in kept)
    assert set(kept) == {k for k in whole if not k.startswith(("conv3.1.", "conv4.1."))}  # loads by name
    full = OSNet().eval()
    full.load_state_dict({**full.state_dict(), **kept})
    full.skip_blocks(["conv3.1", "conv4.1"])  # skipping in place gives the same network
    pixels = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        torch.testing.assert_close(full(pixels)[1], net(pixels)[1])
        assert net(pixels)[0].shape == (2, 256, 16, 8)
    with pytest.raises(ValueError, match="OSNet block 'conv3.0' cannot be skipped"):
        OSNet(skipped_blocks=("conv3.0",))
