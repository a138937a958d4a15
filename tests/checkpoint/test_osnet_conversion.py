"""0277 as a native `OSNet` (modeling_aio.checkpoint.osnet_conversion.osnet_from_openvino_port): the module computes
what the IR port computes, matches OpenVINO on real crops, and refuses a graph of another architecture."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from modeling_aio.checkpoint.build import pretrained_osnet_state
from modeling_aio.checkpoint.openvino_port import DEFAULT_0277_XML, MIN_COSINE, check_against_openvino, load_port
from modeling_aio.checkpoint.osnet_conversion import osnet_from_openvino_port

from conftest import requires_shared_data


def port_parts(port) -> tuple[dict[str, torch.Tensor], list[dict]]:
    return port.constant_tensors(), port.nodes


@pytest.fixture(scope="module")
def port():
    return load_port("omz-0277")


def test_0277_loads_into_osnet_x1_and_computes_what_the_port_computes(port):
    net = osnet_from_openvino_port(*port_parts(port))
    assert net.channels == (64, 256, 384, 512)
    pixels = torch.randn(4, 3, 256, 128)
    with torch.no_grad():
        feature_map, embedding = net(pixels)
        expected = port.embed(pixels)
    assert feature_map.shape == (4, 512, 16, 8)
    assert F.cosine_similarity(embedding, expected).min() > 0.9999


def test_a_graph_of_another_architecture_is_refused(port):
    constants, nodes = port_parts(port)
    nodes = copy.deepcopy(nodes)
    gather = next(i for i, n in enumerate(nodes) if n["op"] == "Gather")
    name = next(n["attrs"]["name"] for i, n in enumerate(nodes) if i == nodes[gather]["inputs"][1][0])
    with pytest.raises(ValueError, match="BGR to RGB"):
        osnet_from_openvino_port(constants | {name: torch.tensor([0, 1, 2])}, nodes)
    first_conv = next(i for i, n in enumerate(nodes) if n["op"] == "Convolution")
    nodes[first_conv]["op"] = "GroupConvolution"
    with pytest.raises(ValueError, match="Convolution consumers"):
        osnet_from_openvino_port(constants, nodes)


def test_the_build_refuses_0277_at_another_width_and_unknown_weights():
    with pytest.raises(SystemExit, match="needs --osnet-width 2"):
        pretrained_osnet_state("omz-0277", 1)
    with pytest.raises(SystemExit, match="unknown OSNet weights 'osnet-9999'"):
        pretrained_osnet_state("osnet-9999", 1)


@pytest.mark.slow
@requires_shared_data
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_osnet_0277_matches_openvino_on_real_crops():
    state, _ = pretrained_osnet_state("omz-0277", 2)
    net = osnet_from_openvino_port(*port_parts(load_port("omz-0277")))
    net.load_state_dict(state)

    class Embedder(torch.nn.Module):
        def embed(self, pixels):
            return net(pixels)[1]

    assert check_against_openvino(Embedder(), DEFAULT_0277_XML) >= MIN_COSINE
