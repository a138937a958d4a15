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


def test_the_torch_fast_backend_indexes_rgb_photos_by_the_gallery_encoder_and_re_scores_by_the_model(
        tmp_path, processor):
    """"torch-fast": RGB photos alone by the gallery encoder in float32 (at its size), everything else by the model,
    under a fingerprint of its own (not the int8 graph's, not the full model's); a search with the whole index
    re-scored ranks as the full model does; a checkpoint without an encoder is refused."""
    from modeling_aio.export import TorchGalleryEncoderRuntime, runtime_for
    from modeling_aio.search import AIOSearcher

    from conftest import random_image

    torch.manual_seed(0)
    model = AIOModel(tiny_config(rgb_gallery_image_size=(64, 32))).eval()
    runtime = runtime_for(model, tmp_path, "torch-fast")
    assert isinstance(runtime, TorchGalleryEncoderRuntime) and runtime.rgb_gallery_size == (64, 32)
    folder = tmp_path / "people"
    folder.mkdir()
    for index in range(6):
        random_image(500 + index, (30 + index, 70)).save(folder / f"{index}.png")
    fast, full = AIOSearcher(model, processor, backend=runtime), AIOSearcher(model, processor)
    photos = sorted(str(p) for p in folder.iterdir())
    pixels = fast.rgb_gallery_processor(photos, modality="rgb", return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape[-2:]) == (64, 32)
    np.testing.assert_allclose(fast.embed(rgb=photos), model.get_rgb_gallery_features(pixels).detach().numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(fast.embed(text=["a man"]), full.embed(text=["a man"]), atol=1e-6)
    assert fast.fingerprint.startswith(full.fingerprint + "+rgb-gallery-float32-")
    fast_index, full_index = fast.index(folder), full.index(folder)
    assert not np.allclose(fast_index.embeddings, full_index.embeddings, atol=1e-3)
    hits = fast.search(fast_index, k=6, text="a man in a red shirt", rescore=6)
    assert [h.path for h in hits] == [h.path for h in full.search(full_index, k=6, text="a man in a red shirt")]
    with pytest.raises(ValueError, match="the torch-fast backend needs a checkpoint with an RGB gallery encoder"):
        runtime_for(AIOModel(tiny_config()), tmp_path, "torch-fast")


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


@pytest.mark.slow
def test_the_openvino_int8_backend_indexes_rgb_photos_with_the_gallery_encoder_in_int8(tmp_path, processor):
    """`export_rgb_gallery_int8` writes the int8 graph whole, close to PyTorch; "openvino-int8" embeds RGB photos
    alone with it (at the encoder's size) and everything else with the float graphs, under a fingerprint of its own
    and of the graph's calibration; without the graph, or without an encoder, the backend is refused with what to do."""
    pytest.importorskip("nncf")
    from conftest import random_image
    from modeling_aio.export import RGB_GALLERY_INT8, export_rgb_gallery_int8, rgb_pixel_batches, runtime_for
    from modeling_aio.search import AIOSearcher

    torch.manual_seed(0)
    model = AIOModel(tiny_config(rgb_gallery_image_size=(64, 32))).eval()
    with pytest.raises(FileNotFoundError, match="--backend openvino-int8 --calibration-images FOLDER"):
        runtime_for(model, tmp_path, "openvino-int8")
    photos = []
    for index in range(16):
        photos.append(tmp_path / f"photo{index}.png")
        random_image(index, (40, 90)).save(photos[-1])
    batches = rgb_pixel_batches(photos, (64, 32), batch_size=8)
    xml, cosine = export_rgb_gallery_int8(model, tmp_path, batches)
    assert xml == tmp_path / "openvino" / RGB_GALLERY_INT8 and cosine > 0.9
    assert sorted(p.name for p in xml.parent.iterdir()) == ["rgb_gallery-int8.bin", "rgb_gallery-int8.json",
                                                             RGB_GALLERY_INT8]
    searcher = AIOSearcher(model, processor, backend=runtime_for(model, tmp_path, "openvino-int8"))
    plain = AIOSearcher(model, processor)
    embeds, reference = searcher.embed(rgb=photos), model.get_rgb_gallery_features(torch.cat(batches)).numpy()
    assert embeds.shape == reference.shape and (embeds * reference).sum(1).mean() > 0.9
    np.testing.assert_array_equal(searcher.embed(images=photos), embeds)  # the processor's alias of rgb
    captions = ["a man in a red shirt", "a woman with a blue bag"]
    assert (searcher.embed(text=captions) * plain.embed(text=captions)).sum(1).min() > 0.999  # the float graph
    # an index knows which network made it, and which calibration of it: photos calibrated apart embed differently
    assert searcher.fingerprint.startswith(plain.fingerprint + "+rgb-gallery-int8-")
    export_rgb_gallery_int8(model, tmp_path, batches[:1])
    recalibrated = AIOSearcher(model, processor, backend=runtime_for(model, tmp_path, "openvino-int8"))
    assert recalibrated.fingerprint.startswith(plain.fingerprint) and recalibrated.fingerprint != searcher.fingerprint
    with pytest.raises(ValueError, match="the openvino-int8 backend needs a checkpoint with an RGB gallery encoder"):
        runtime_for(AIOModel(tiny_config()), tmp_path, "openvino-int8")
    with torch.no_grad():  # other weights: the graph is not theirs, and the error says how to calibrate again
        model.rgb_gallery_encoder.to_search_space.bias.add_(0.1)
    with pytest.raises(ValueError, match="not exported from this checkpoint's RGB gallery encoder.*--calibration"):
        runtime_for(model, tmp_path, "openvino-int8")


def test_graphs_run_only_while_whole_and_exported_from_the_weights_at_hand(tmp_path):
    """`export_checkpoint` writes a record after the graphs; the runtime exports again when the record is missing,
    a graph file changed (half-written) or the weights changed, and a saved-and-loaded model still matches it."""
    pytest.importorskip("onnxruntime")
    from modeling_aio.export import GRAPHS_RECORD, ExportedRuntime, export_checkpoint, graphs_are_current

    torch.manual_seed(0)
    model = AIOModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert not graphs_are_current(model, tmp_path, "onnx")
    export_checkpoint(model, tmp_path, "onnx")
    record = tmp_path / "onnx" / GRAPHS_RECORD
    assert graphs_are_current(model, tmp_path, "onnx") and "text.onnx" in record.read_text()
    loaded = AIOModel.from_pretrained(tmp_path).eval()
    assert graphs_are_current(loaded, tmp_path, "onnx")  # the config's saving keys and paths do not count
    text = tmp_path / "onnx" / "text.onnx"
    text.write_bytes(text.read_bytes()[:100])  # a graph cut short
    assert not graphs_are_current(model, tmp_path, "onnx")
    ExportedRuntime.for_checkpoint(model, tmp_path, "onnx")  # exported again, whole
    assert graphs_are_current(model, tmp_path, "onnx") and text.stat().st_size > 100
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    assert not graphs_are_current(model, tmp_path, "onnx")
    record.write_text("[not a record")
    assert not graphs_are_current(loaded, tmp_path, "onnx")
    record.unlink()
    assert not graphs_are_current(loaded, tmp_path, "onnx")


@pytest.mark.slow
def test_an_int8_graph_keeps_the_layers_asked_in_float(tmp_path):
    pytest.importorskip("nncf")
    import openvino as ov

    from modeling_aio.export import export_int8_openvino

    torch.manual_seed(0)
    encoder = AIOModel(tiny_config(rgb_gallery_image_size=(64, 32))).eval().rgb_gallery_encoder
    pixels = torch.randn(8, 3, 64, 32)
    export_int8_openvino(encoder, [pixels], tmp_path / "float-map.xml", keep_float=(".*to_search_space.*",))
    graph = ov.Core().read_model(str(tmp_path / "float-map.xml"))
    maps = [op for op in graph.get_ops()
            if op.get_type_name() == "MatMul" and "to_search_space" in op.get_friendly_name()]
    assert maps and not any(i.get_source_output().get_node().get_type_name() == "FakeQuantize"
                            for op in maps for i in op.inputs())
    assert any(op.get_type_name() == "FakeQuantize" for op in graph.get_ops())  # the rest is int8


def test_the_openvino_runner_gives_a_batch_split_over_streams_the_outputs_of_one_call_in_order(tmp_path):
    """`OpenVINORunner` runs a batch as slices over parallel streams and a single input on a latency-compiled copy;
    both give what PyTorch gives, row for row (in float32; an odd batch, so the slices differ in size)."""
    ov = pytest.importorskip("openvino")
    from modeling_aio.export import OpenVINORunner, export_pixels_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    xml = tmp_path / "graph.xml"
    ov.save_model(ov.convert_model(str(export_pixels_onnx(module, torch.zeros(2, 3, 16, 8), tmp_path / "g.onnx"))),
                  str(xml), compress_to_fp16=False)
    runner = OpenVINORunner(xml, {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 2, "INFERENCE_PRECISION_HINT": "f32"})
    pixels = np.random.default_rng(0).standard_normal((7, 3, 16, 8)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(runner({"pixel_values": pixels}), expected, atol=1e-5)
    np.testing.assert_allclose(runner({"pixel_values": pixels[3:4]}), expected[3:4], atol=1e-5)
