"""The PyTorch port of OMZ 0277 (modeling_aio.checkpoint.openvino_port): the shipped files load without OpenVINO and
embed any batch; against OpenVINO on real crops the cosine is at least 0.999."""

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
