"""scripts/text_scaling.py: the text skip's learning curve scores what evaluate.py scores, fits on exactly the drawn
identities' captions and leaves the checkpoint's text skip as it was."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_aio import AIOModel
from modeling_aio.training.calibration import alignment_features, cached_query_features

from modeling_aio.experiments import text_scaling

from conftest import tiny_config




@pytest.fixture
def text_model() -> AIOModel:
    torch.manual_seed(0)
    return AIOModel(tiny_config(text_embedding_skip=True)).eval()


def test_cached_queries_are_the_models_own_text_and_photo_embeddings(text_model, processor, captioned_items):
    cache = alignment_features(text_model, processor, captioned_items)
    captions = [c for item in captioned_items for c in item.captions]
    queries = F.normalize(cached_query_features(text_model, cache, "text", torch.arange(len(captions))), dim=-1)
    with torch.no_grad():
        expected_text = text_model.get_features(**processor(text=captions, return_tensors="pt"))
        expected_rgb = text_model.get_features(**processor(rgb=[item.image for item in captioned_items],
                                                           return_tensors="pt"))
    torch.testing.assert_close(queries, expected_text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cache["rgb"], expected_rgb, atol=1e-5, rtol=1e-4)
    assert cache["labels"].tolist() == [item.label for item in captioned_items for _ in item.captions]


def test_learning_curve_fits_each_draw_and_restores_the_text_skip(text_model, processor, captioned_items):
    train, dev = captioned_items[:12], captioned_items[12:]  # 6 identities to fit on, 2 to score
    train_cache = alignment_features(text_model, processor, train)
    dev_cache = alignment_features(text_model, processor, dev)
    shipped = {k: v.clone() for k, v in text_model.text_skip.state_dict().items()}
    points = text_scaling.learning_curve(text_model, train_cache, dev_cache, [2, 4, 6], trials=2, steps=3, seed=0)
    assert [(p["identities"], p["trial"]) for p in points] == [(2, 0), (2, 1), (4, 0), (4, 1), (6, 0)]
    assert [p["captions"] for p in points] == [8, 8, 16, 16, 24]  # 2 photos x 2 captions per identity
    assert all(0 <= p["rank-1"] <= 100 and 0 <= p["mAP"] <= 100 for p in points)
    assert all(torch.equal(v, shipped[k]) for k, v in text_model.text_skip.state_dict().items())
    with pytest.raises(ValueError, match="6 identities"):
        text_scaling.learning_curve(text_model, train_cache, dev_cache, [2, 7], trials=1, steps=1, seed=0)
    assert all(torch.equal(v, shipped[k]) for k, v in text_model.text_skip.state_dict().items())


def test_rank1_per_doubling_is_the_slope_over_log2_identities():
    points = [{"identities": n, "rank-1": 3.0 * math.log2(n) + 1 + (0.5 if trial else -0.5)}
              for n in (50, 100, 400) for trial in (0, 1)]
    assert text_scaling.rank1_per_doubling(points) == pytest.approx(3.0)
    assert text_scaling.rank1_per_doubling(points[:2]) is None


def test_distractors_join_the_gallery_as_other_people(text_model, processor, captioned_items):
    """The full-size variant: distractor photos (gallery embeddings of other people) can only lower the ranks; copies
    of the development photos as distractors make every caption's first match a tie at best."""
    dev_cache = alignment_features(text_model, processor, captioned_items[12:])
    alone = text_scaling.text_rank_metrics(text_model, dev_cache)
    assert text_scaling.text_rank_metrics(text_model, dev_cache, None) == alone
    copies = text_scaling.text_rank_metrics(text_model, dev_cache, dev_cache["rgb"].clone() * 1.001)
    assert copies["rank-1"] <= alone["rank-1"] and copies["mAP"] < alone["mAP"]
    photos = [item.image for item in captioned_items[:3]]
    embedded = text_scaling.rgb_embeddings(text_model, processor, photos, batch_size=2)
    with torch.no_grad():
        expected = text_model.get_features(**processor(rgb=photos, return_tensors="pt"))
    torch.testing.assert_close(embedded, expected, atol=1e-5, rtol=1e-4)
