"""The evaluation embedder (modeling_aio.evaluation.embedder): an `ensemble:` of models scores with the weighted
mean of its members' cosine similarities, a malformed ensemble is refused naming the part, `backend` runs a
checkpoint the way a deployment does, cached apart from PyTorch's figures, and `rgb_model` embeds every RGB photo
while the other model embeds every other query."""

from __future__ import annotations

import numpy as np
import pytest

from modeling_aio.evaluation.embedder import Embedder, EnsembleEmbedder, RGBPhotoEmbedder, make_embedder

from conftest import random_image


def test_an_ensemble_scores_with_the_weighted_mean_of_its_members_cosines(tmp_path):
    images = [random_image(seed, size=(64, 128)) for seed in range(5)]
    ensemble = make_embedder("ensemble:osnet-0267+omz-0277@0.5", 4, tmp_path)
    assert isinstance(ensemble, EnsembleEmbedder)
    joined = ensemble.embed({"rgb": images}, "photos")
    members = [Embedder(name, 4, tmp_path).embed({"rgb": images}, "photos") for name in ("osnet-0267", "omz-0277")]
    cosines = [(m / np.linalg.norm(m, axis=1, keepdims=True)) for m in members]
    expected = (cosines[0] @ cosines[0].T + 0.5 * cosines[1] @ cosines[1].T) / 1.5
    assert joined.shape == (5, 512)
    assert np.allclose(joined @ joined.T, expected, atol=1e-5)
    assert not np.allclose(expected, cosines[0] @ cosines[0].T, atol=1e-3)  # both members count


@pytest.mark.parametrize("spec, message", [
    ("ensemble:osnet-0267", "names one model"),
    ("ensemble:osnet-0267+omz-0277@-1", "'omz-0277@-1'"),
    ("ensemble:osnet-0267+omz-0277@half", "'omz-0277@half'"),
    ("ensemble:osnet-0267+omz-0277@nan", "'omz-0277@nan'"),
    ("ensemble:osnet-0267++omz-0277", "member ''"),
])
def test_a_malformed_ensemble_is_refused_naming_the_part(tmp_path, spec, message):
    with pytest.raises(SystemExit, match=message):
        make_embedder(spec, 4, tmp_path)


def test_a_backend_runs_the_checkpoint_and_caches_apart_from_pytorch(tmp_path, model_dir):
    images = [random_image(seed, size=(64, 128)) for seed in range(3)]
    plain = Embedder(str(model_dir), 2, tmp_path / "cache")
    autocast = Embedder(str(model_dir), 2, tmp_path / "cache", backend="torch-bf16")
    assert autocast.cache_dir != plain.cache_dir and autocast.cache_dir.name.endswith("-torch-bf16")
    reference, bf16 = plain.embed({"rgb": images}, "photos"), autocast.embed({"rgb": images}, "photos")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, reference)
    assert (bf16 * reference).sum(axis=1).min() > 0.99


def test_a_backend_for_a_peer_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="'osnet-0267' is a peer"):
        Embedder("osnet-0267", 2, tmp_path, backend="onnx")


def test_an_rgb_model_embeds_the_photos_and_the_model_the_other_queries(tmp_path):
    images = [random_image(seed, size=(64, 128)) for seed in range(3)]
    embedder = make_embedder("omz-0277", 4, tmp_path, rgb_model="osnet-0267")
    assert isinstance(embedder, RGBPhotoEmbedder) and embedder.model_name == "omz-0277 (RGB photos: osnet-0267)"
    photos = embedder.embed({"rgb": images}, "photos")
    np.testing.assert_allclose(photos, Embedder("osnet-0267", 4, tmp_path).embed({"rgb": images}, "photos"))
    sketches = embedder.embed({"sketch": images}, "sketches")
    np.testing.assert_allclose(sketches, Embedder("omz-0277", 4, tmp_path).embed({"sketch": images}, "sketches"))
    assert not np.allclose(photos, Embedder("omz-0277", 4, tmp_path).embed({"rgb": images}, "photos"))


def test_a_fast_gallery_backend_embeds_each_row_in_both_spaces(tmp_path, processor):
    """With a backend that indexes RGB photos by the gallery encoder, rows are (N, 2, D): the index's vector and the
    full model's, which evaluation re-scores with as the search does; other queries are the same twice. That
    backend takes no --rgb-model and no ensemble."""
    from modeling_aio import AIOModel
    from modeling_aio.search import AIOSearcher

    from conftest import FastGalleryBackend, tiny_config

    model = AIOModel(tiny_config()).eval()
    size = processor.image_processor.size
    embedder = Embedder.__new__(Embedder)
    embedder.baseline = None
    embedder.searcher = AIOSearcher(model, processor, backend=FastGalleryBackend(model, (size["height"],
                                                                                        size["width"])))
    images = [random_image(seed, size=(64, 128)) for seed in range(3)]
    photos = embedder._embed_batch({"rgb": images})
    assert photos.shape == (3, 2, model.config.search_embedding_size)
    np.testing.assert_allclose(photos[:, 0], embedder.searcher.embed(rgb=images))
    np.testing.assert_allclose(photos[:, 1], AIOSearcher(model, processor).embed(rgb=images), atol=1e-6)
    assert not np.allclose(photos[:, 0], photos[:, 1], atol=1e-3)
    texts = embedder._embed_batch({"text": ["a man in a red shirt"]})
    np.testing.assert_array_equal(texts[:, 0], texts[:, 1])
    for other in ({"rgb_model": "osnet-0267"}, {"model_name": "ensemble:osnet-0267+omz-0277"}):
        with pytest.raises(SystemExit, match="openvino-int8 embeds RGB photos by the checkpoint's own"):
            make_embedder(**{"model_name": "aio-reid", **other}, batch_size=4, cache_dir=tmp_path,
                          backend="openvino-int8")
