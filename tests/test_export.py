"""`modeling_aio.export`: exported graphs of models with optional parts agree with PyTorch; the bf16 autocast
runtime embeds every query kind in float32 close to PyTorch's float32; an unknown backend is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_aio import AIOModel

from conftest import tiny_config


@pytest.mark.slow
def test_a_model_with_a_second_rgb_trunk_exports_to_onnx_with_parity(tmp_path):
    """The second RGB trunk's part survives ONNX export: RGB fills it, the other modalities' graphs leave it zero;
    export_onnx itself refuses a graph below MIN_COSINE against PyTorch."""
    import onnxruntime as ort

    from modeling_aio.export import MIN_COSINE, export_onnx

    torch.manual_seed(0)
    model = AIOModel(tiny_config(image_tokenizer="osnet", image_size=(256, 128), patch_size=16, embedding_size=256,
                                 second_rgb_trunk_share=0.4)).eval()
    cosines = export_onnx(model, tmp_path / "onnx")
    assert min(cosines.values()) >= MIN_COSINE
    pixels = np.random.default_rng(0).standard_normal((2, 3, 256, 128)).astype(np.float32)
    for name, second_part_filled in (("image_rgb.onnx", True), ("image_sketch.onnx", False)):
        session = ort.InferenceSession(str(tmp_path / "onnx" / name), providers=["CPUExecutionProvider"])
        second_part = session.run(None, {"pixel_values": pixels})[0][:, -256:]
        assert np.abs(second_part).sum(axis=1).min() > 0 if second_part_filled else not second_part.any()


def test_the_bf16_autocast_runtime_embeds_composed_queries_close_to_float32(tmp_path, processor):
    from modeling_aio.export import BACKENDS, TorchAutocastRuntime, runtime_for

    torch.manual_seed(0)
    model = AIOModel(tiny_config()).eval()
    runtime = runtime_for(model, tmp_path, "torch-bf16")
    assert isinstance(runtime, TorchAutocastRuntime) and runtime_for(model, tmp_path, "torch") is None
    batch = processor(text=["a man in a red coat", "a woman with a blue bag"],
                      rgb=[np.full((64, 32, 3), 90, np.uint8), np.full((64, 32, 3), 200, np.uint8)], return_tensors="pt")
    embeds = runtime.embed(batch)
    reference = model.get_features(**batch).numpy()
    assert embeds.dtype == np.float32 and embeds.shape == reference.shape
    assert not np.array_equal(embeds, reference)  # it did run in bf16
    assert (embeds * reference).sum(axis=1).min() > 0.99
    assert "torch-bf16" in BACKENDS
    with pytest.raises(ValueError, match="backend must be one of .*'tensorrt'"):
        runtime_for(model, tmp_path, "tensorrt")


@pytest.mark.slow
def test_the_compiled_bf16_runtime_embeds_close_to_float32_and_leaves_the_model_eager(tmp_path, processor):
    """torch.compile under bf16 autocast: composed queries and a second batch size embed; the model itself stays
    eager (its weights, their names and its own calls unchanged, so an index's fingerprint and an export still
    work)."""
    from modeling_aio.export import runtime_for

    torch.manual_seed(0)
    model = AIOModel(tiny_config()).eval()
    names = list(model.state_dict())
    rgb = [np.full((64, 32, 3), 30 * i, np.uint8) for i in range(1, 4)]
    batch = processor(text=["a man in a red coat", "a woman with a blue bag", "a child"], rgb=rgb, return_tensors="pt")
    reference = model.get_features(**batch).numpy()
    torch._dynamo.reset()
    runtime = runtime_for(model, tmp_path, "torch-bf16-compiled")
    embeds = runtime.embed(batch)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it compiled
    assert embeds.dtype == np.float32 and (embeds * reference).sum(axis=1).min() > 0.99
    assert list(model.state_dict()) == names
    smaller = processor(rgb=rgb[:2], return_tensors="pt")
    assert runtime.embed(smaller).shape == (2, reference.shape[1])
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert np.array_equal(model.get_features(**batch).numpy(), reference)  # eager float32, as before
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    # the graph holds its weights as constants (freezing): a second model of the same shapes gets its own
    other = AIOModel(tiny_config()).eval()
    other_reference = other.get_features(**batch).numpy()
    assert (other_reference * reference).sum(axis=1).min() < 0.9  # other weights, other vectors
    other_embeds = runtime_for(other, tmp_path, "torch-bf16-compiled").embed(batch)
    assert (other_embeds * other_reference).sum(axis=1).min() > 0.99
    assert (runtime.embed(batch) * reference).sum(axis=1).min() > 0.99  # the first still serves its own
