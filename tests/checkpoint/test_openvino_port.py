"""The PyTorch port of OMZ 0277 (modeling_aio.checkpoint.openvino_port): the shipped files load without OpenVINO,
embed any batch (exported to ONNX too) and run on from a cached map where the graph can be cut; against OpenVINO on
real crops the cosine is at least 0.999."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from modeling_aio.checkpoint.openvino_port import (
    DEFAULT_0277_XML, MIN_COSINE, OpenVINOGraph, check_against_openvino, load_port, port_openvino_ir,
)

from conftest import requires_shared_data

requires_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


def test_the_shipped_port_loads_without_openvino_and_embeds_a_batch_like_single_images():
    port = load_port("omz-0277")
    assert sum(p.numel() for p in port.parameters()) == 2_091_989
    pixels = torch.randn(3, 3, 256, 128)
    with torch.no_grad():
        batch = port.embed(pixels)
        single = torch.cat([port.embed(pixels[i:i + 1]) for i in range(3)])
    assert batch.shape == (3, 256) and torch.isfinite(batch).all()
    assert torch.allclose(batch, single, atol=1e-4)


def test_the_graph_runs_on_from_a_cut_node_as_it_runs_whole_and_refuses_a_node_that_does_not_cut():
    port = load_port("omz-0277")
    cuts = port.cut_nodes()
    pools = [index for index in cuts if port.nodes[index]["op"] in ("MaxPool", "AvgPool")]
    assert len(pools) == 3  # the stem's max-pooling and two transitions: the inputs of conv2, conv3, conv4
    bgr = port.to_bgr(torch.randn(2, 3, 256, 128))
    with torch.no_grad():
        whole = port(bgr)
        for node in pools:
            torch.testing.assert_close(port.forward_from(node, port.node_output(bgr, node)), whole)
    inside = next(index for index in range(pools[0], pools[1])
                  if index not in cuts and port.nodes[index]["op"] != "Constant")
    with pytest.raises(ValueError, match=f"graph node {inside} does not cut the graph"):
        port.forward_from(inside, torch.zeros(1))
    with pytest.raises(ValueError, match="no node 99999"):
        port.node_output(bgr[:1], 99999)


class _Embed(torch.nn.Module):
    def __init__(self, port):
        super().__init__()
        self.port = port

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.port.embed(pixels)


@pytest.mark.slow
def test_the_port_exported_to_onnx_at_one_batch_runs_at_any_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    port = load_port("omz-0277")
    pixels = torch.randn(5, 3, 256, 128)
    torch.onnx.export(_Embed(port), (pixels[:3],), str(tmp_path / "port.onnx"), input_names=["pixel_values"],
                      dynamic_axes={"pixel_values": {0: "batch"}}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "port.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = port.embed(pixels).numpy()
    for batch in (1, 3, 5):
        (exported,) = session.run(None, {"pixel_values": pixels[:batch].numpy()})
        assert exported.shape == (batch, 256)
        assert abs(exported - expected[:batch]).max() < 1e-3


@pytest.mark.slow
@requires_shared_data
@requires_openvino
def test_the_port_matches_openvino_on_real_crops_and_the_shipped_files():
    port = OpenVINOGraph(*port_openvino_ir(DEFAULT_0277_XML)).eval()
    assert check_against_openvino(port, DEFAULT_0277_XML) >= MIN_COSINE
    assert check_against_openvino(load_port("omz-0277"), DEFAULT_0277_XML) >= MIN_COSINE


def test_an_unsupported_operation_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import numpy as np
    import openvino as ov
    import openvino.opset8 as ops

    data = ops.parameter([1, 3, 8, 8], np.float32, name="data")
    model = ov.Model([ops.result(ops.tanh(data))], [data])
    ov.save_model(model, str(tmp_path / "tanh.xml"))
    with pytest.raises(ValueError, match="operation Tanh .* is not supported"):
        port_openvino_ir(tmp_path / "tanh.xml")
