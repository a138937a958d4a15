"""A fast index re-scored by the full model (`AIOSearcher.search`, `rescore`): the index's top hits ranked by the
full model's vectors of those photos, the rest in the index's order, unreadable photos kept with a warning, each
photo embedded once per searcher; the same rule in evaluation (`metrics.rescored_similarity`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_aio import AIOModel
from modeling_aio.evaluation.metrics import rescored_similarity, similarity_from
from modeling_aio.search import AIOSearcher
from modeling_aio.search import searcher as searcher_module
from modeling_aio.search.searcher import FULL_MODEL_SCORE, GALLERY_ENCODER_SCORE

from conftest import FastGalleryBackend, random_image, tiny_config


@pytest.fixture
def people(tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    for index in range(8):
        random_image(300 + index, (20 + index, 44)).save(folder / f"{index:02d}_c1.jpg")
    return folder


@pytest.fixture
def fast_and_full(processor):
    torch.manual_seed(0)
    model = AIOModel(tiny_config()).eval()
    size = processor.image_processor.size
    fast = AIOSearcher(model, processor, batch_size=3, backend=FastGalleryBackend(model, (size["height"],
                                                                                         size["width"])))
    return fast, AIOSearcher(model, processor, batch_size=3)


def test_the_top_hits_rank_by_the_full_model_and_the_rest_follow_the_index(fast_and_full, people):
    fast, full = fast_and_full
    fast_index, full_index = fast.index(people), full.index(people)
    query = str(people / "03_c1.jpg")
    as_indexed = fast.search(fast_index, k=8, rgb=query, rescore=0)
    assert {hit.score_kind for hit in as_indexed} == {"cosine similarity"}
    exact = full.search(full_index, k=8, rgb=query)
    assert [hit.path for hit in as_indexed] != [hit.path for hit in exact]  # the two spaces rank differently
    rescored = fast.search(fast_index, k=8, rgb=query, rescore=8)
    assert [hit.path for hit in rescored] == [hit.path for hit in exact]
    np.testing.assert_allclose([hit.score for hit in rescored], [hit.score for hit in exact], atol=1e-5)
    assert {hit.score_kind for hit in rescored} == {FULL_MODEL_SCORE}
    top3 = fast.search(fast_index, k=8, rgb=query, rescore=3)
    head = [hit.path for hit in as_indexed[:3]]
    assert sorted(hit.path for hit in top3[:3]) == sorted(head)
    assert [hit.path for hit in top3[:3]] == [hit.path for hit in exact if hit.path in head]
    assert [hit.path for hit in top3[3:]] == [hit.path for hit in as_indexed[3:]]
    assert [hit.score_kind for hit in top3] == [FULL_MODEL_SCORE] * 3 + [GALLERY_ENCODER_SCORE] * 5
    text = fast.search(fast_index, k=8, text="a man in a red shirt", rescore=8)
    assert [hit.path for hit in text] == [hit.path for hit in full.search(full_index, k=8, text="a man in a red shirt")]


def test_each_photo_is_embedded_once_and_a_photo_gone_since_indexing_keeps_its_index_score(fast_and_full, people,
                                                                                          monkeypatch):
    fast, _ = fast_and_full
    index = fast.index(people)
    query = str(people / "03_c1.jpg")
    fast.search(index, k=4, rgb=query, rescore=5)
    calls = fast.backend.full_photo_calls
    assert calls == 5 + 1  # five photos and the query
    fast.search(index, k=4, rgb=query, rescore=5)
    assert fast.backend.full_photo_calls == calls + 1  # the query only: the photos' vectors are kept
    monkeypatch.setattr(searcher_module, "FULL_VECTORS_KEPT", 3)  # only the latest three kept
    fast.search(index, k=4, rgb=query, rescore=5)
    assert len(fast._full_photo_vectors) == 3
    gone = fast.search(index, k=5, rgb=query, rescore=0)[1].path
    (people / gone.split("/")[-1]).unlink()
    with pytest.warns(UserWarning, match=f"gallery photo {gone} cannot be read for re-scoring"):
        hits = fast.search(index, k=8, rgb=query, rescore=5)
    assert hits[4].path == gone and hits[4].score_kind == GALLERY_ENCODER_SCORE
    assert [hit.score_kind for hit in hits[:4]] == [FULL_MODEL_SCORE] * 4
    damaged = hits[0].path if hits[0].path != query else hits[1].path
    (people / damaged.split("/")[-1]).write_bytes(b"not a photo any more")  # a new version: not the kept vector
    with pytest.warns(UserWarning, match="cannot be read for re-scoring") as warned:
        hits = fast.search(index, k=8, rgb=query, rescore=5)
    assert sorted(str(w.message).split()[2] for w in warned) == sorted([gone, damaged])
    assert [hit.score_kind for hit in hits].count(FULL_MODEL_SCORE) == 3 and damaged not in [
        hit.path for hit in hits[:3]]


def test_rerank_reads_the_full_models_vectors_and_bad_depths_are_refused(fast_and_full, people):
    fast, full = fast_and_full
    query = str(people / "03_c1.jpg")
    fast_index, full_index = fast.index(people), full.index(people)
    reranked = fast.search(fast_index, k=8, rgb=query, rerank=True)  # re-scores at least 100: all 8 here
    exact = full.search(full_index, k=8, rgb=query, rerank=True)
    assert [hit.path for hit in reranked] == [hit.path for hit in exact]
    np.testing.assert_allclose([hit.score for hit in reranked], [hit.score for hit in exact], atol=1e-5)
    for depth in (-1, 2.5, True):
        with pytest.raises(ValueError, match="rescore must be a whole number"):
            fast.search(fast_index, k=3, rgb=query, rescore=depth)
    assert full.search(full_index, k=3, rgb=query, rescore=0)[0].score_kind == "cosine similarity"  # no-op there


def test_rescored_similarity_ranks_the_fast_top_k_by_the_full_vectors():
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(4, 2, 6)), rng.normal(size=(9, 2, 6))
    fast = similarity_from(query[:, 0], gallery[:, 0])
    full = similarity_from(query[:, 1], gallery[:, 1])
    scores = rescored_similarity(query, gallery, top_k=3)
    for row in range(4):
        top = np.argsort(-fast[row], kind="stable")[:3]
        order = np.argsort(-scores[row], kind="stable")
        assert list(order[:3]) == list(top[np.argsort(-full[row, top], kind="stable")])
        rest = [i for i in np.argsort(-fast[row], kind="stable") if i not in top]
        assert list(order[3:]) == rest
    np.testing.assert_array_equal(rescored_similarity(query, gallery, top_k=0), fast)
    assert similarity_from(query, gallery).shape == (4, 9)  # (N, 2, D) features: the search's own depth
    with pytest.raises(ValueError, match=r"needs \(N, 2, D\) query and gallery features"):
        rescored_similarity(query[:, 0], gallery, top_k=3)


def test_a_database_gallery_is_re_scored_the_same_way(fast_and_full, people, tmp_path):
    pytest.importorskip("lancedb")
    fast, full = fast_and_full
    store, _, _ = fast.index_into_store(people, tmp_path / "fast.db")
    exact_store, _, _ = full.index_into_store(people, tmp_path / "full.db")
    query = str(people / "03_c1.jpg")
    rescored = fast.search(store, k=8, rgb=query, rescore=8)
    exact = full.search(exact_store, k=8, rgb=query)
    assert [hit.path for hit in rescored] == [hit.path for hit in exact]
    assert {hit.score_kind for hit in rescored} == {FULL_MODEL_SCORE}
    assert [hit.path for hit in fast.search(store, k=8, rgb=query, rescore=0)] != [hit.path for hit in exact]
