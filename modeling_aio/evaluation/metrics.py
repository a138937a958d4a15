"""ReID metrics: CMC Rank-k, mAP and mINP of a similarity matrix (the benchmarks' rules are in `protocols`).

Ranking convention: gallery items are ordered by decreasing similarity (or increasing distance); ties keep gallery
order (a stable sort), so every number is reproducible. A query with no valid match in its gallery is left out of
the averages, as in the reference Market-1501 / SYSU-MM01 code, and counted in `num_valid_queries`.
The metrics are computed on chunks of queries with one sort per chunk (torch, multi-threaded) instead of a Python
loop per query.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

InvalidFn = Callable[[slice], np.ndarray]


def _codes(values: Sequence, other: Sequence | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer codes of arbitrary hashable labels (strings such as 'market:0002' or ints), shared by two arrays."""
    a = np.asarray(values)
    if other is None:
        return np.unique(a, return_inverse=True)[1].reshape(-1), None
    b = np.asarray(other)
    _, inverse = np.unique(np.concatenate([a.astype(str), b.astype(str)]), return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse[: len(a)], inverse[len(a):]


def _cosine(query_features, gallery_features) -> np.ndarray:
    q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(query_features, dtype=np.float32)), dim=1)
    g = torch.nn.functional.normalize(torch.as_tensor(np.asarray(gallery_features, dtype=np.float32)), dim=1)
    return (q @ g.T).numpy()


def rescored_similarity(query_features: np.ndarray, gallery_features: np.ndarray, top_k: int) -> np.ndarray:
    """The ranking of a search that re-scores a fast index's top hits (`search.AIOSearcher.search`, `rescore`):
    features are (N, 2, D), each row its vector in the fast index's space and the full model's. Per query, the
    `top_k` gallery items by the first similarity rank above all others, among themselves by the second."""
    if query_features.ndim != 3 or gallery_features.ndim != 3 or query_features.shape[1] != 2 \
            or gallery_features.shape[1] != 2:
        raise ValueError(f"re-scored similarity needs (N, 2, D) query and gallery features, got "
                         f"{query_features.shape} and {gallery_features.shape}.")
    fast = _cosine(query_features[:, 0], gallery_features[:, 0])
    full = _cosine(query_features[:, 1], gallery_features[:, 1])
    if top_k <= 0:
        return fast
    top = np.argsort(-fast, axis=1, kind="stable")[:, :top_k]
    rows = np.arange(len(fast))[:, None]
    fast[rows, top] = full[rows, top] + 3.0  # cosines lie in [-1, 1]: the re-scored hits come first
    return fast


def similarity_from(query_features=None, gallery_features=None, similarity=None, distance=None) -> np.ndarray:
    """Exactly one of: features (cosine similarity of L2-normalised rows; (N, 2, D) features of a fast index and
    the full model rank as `rescored_similarity` with the search's default depth), a similarity or a distance
    matrix."""
    given = [x is not None for x in (query_features, similarity, distance)]
    if sum(given) != 1:
        raise ValueError("Pass exactly one of query/gallery features, `similarity` or `distance`.")
    if query_features is not None:
        if gallery_features is None:
            raise ValueError("`gallery_features` is required with `query_features`.")
        query_features, gallery_features = np.asarray(query_features), np.asarray(gallery_features)
        if query_features.ndim == 3 or gallery_features.ndim == 3:
            from ..search.searcher import RESCORE_TOP_K

            return rescored_similarity(query_features, gallery_features, RESCORE_TOP_K)
        return _cosine(query_features, gallery_features)
    if similarity is not None:
        return np.asarray(similarity, dtype=np.float32)
    return -np.asarray(distance, dtype=np.float32)


def rank_metrics(
    similarity: np.ndarray,
    query_ids: Sequence,
    gallery_ids: Sequence,
    invalid: InvalidFn | None = None,
    ranks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 128,
) -> dict[str, float]:
    """CMC, mAP and mINP of a (Q, G) similarity matrix.

    Args:
        invalid: given a slice of query rows, returns a (rows, G) bool mask of gallery items to remove from those
            queries' rankings (same-camera matches, junk, the source image of a synthetic query...).
    """
    similarity = np.asarray(similarity, dtype=np.float32)
    q_codes, g_codes = _codes(query_ids, gallery_ids)
    num_q, num_g = similarity.shape
    if len(q_codes) != num_q or len(g_codes) != num_g:
        raise ValueError(f"similarity is {similarity.shape} but got {len(q_codes)} query and {len(g_codes)} gallery ids.")
    max_rank = max(ranks)
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    valid_queries = 0
    g_codes_t = torch.as_tensor(g_codes)
    for start in range(0, num_q, chunk_size):
        rows = slice(start, min(start + chunk_size, num_q))
        scores = torch.as_tensor(similarity[rows])
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        matches = g_codes_t[order] == torch.as_tensor(q_codes[rows])[:, None]
        keep = torch.ones_like(matches)
        if invalid is not None:
            keep = ~torch.as_tensor(np.asarray(invalid(rows), dtype=bool)).gather(1, order)
        matches = matches & keep
        kept_position = torch.cumsum(keep, dim=1)  # 1-based rank among kept items
        num_matches = matches.sum(1)
        has_match = num_matches > 0
        if not bool(has_match.any()):
            continue
        matches, kept_position, keep, num_matches = matches[has_match], kept_position[has_match], keep[has_match], num_matches[has_match]
        # float64 throughout: sums over 100,000 gallery items must stay exact to well below 1e-6.
        cumulative_matches = torch.cumsum(matches, dim=1, dtype=torch.float64)
        precision_at_hit = torch.where(matches, cumulative_matches / kept_position.clamp(min=1).double(),
                                       torch.zeros((), dtype=torch.float64))
        ap_sum += float((precision_at_hit.sum(1) / num_matches.double()).sum())
        last_hit = torch.where(matches, kept_position, torch.zeros((), dtype=kept_position.dtype)).max(1).values
        inp_sum += float((num_matches.double() / last_hit.double()).sum())
        first_hit = torch.where(matches, kept_position, torch.full((), num_g + 1, dtype=kept_position.dtype)).min(1).values
        for k in range(max_rank):
            cmc_sum[k] += float((first_hit <= k + 1).sum())
        valid_queries += int(has_match.sum())
    if valid_queries == 0:
        raise ValueError("No query has a valid match in its gallery; check ids, cameras and the protocol.")
    result = {f"rank-{k}": 100.0 * cmc_sum[k - 1] / valid_queries for k in ranks}
    result["mAP"] = 100.0 * ap_sum / valid_queries
    result["mINP"] = 100.0 * inp_sum / valid_queries
    result["num_valid_queries"] = valid_queries
    return result


def compute_reid_metrics(
    query_ids: Sequence,
    gallery_ids: Sequence,
    query_features=None,
    gallery_features=None,
    similarity=None,
    distance=None,
    query_cameras: Sequence | None = None,
    gallery_cameras: Sequence | None = None,
    remove_same_camera: bool = True,
    junk_gallery_ids: Sequence = (),
    ranks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """The general metric: with cameras given and `remove_same_camera`, gallery items of the query's identity from
    the query's camera are removed (they are trivial matches); gallery items whose id is in `junk_gallery_ids` are
    removed for every query."""
    sim = similarity_from(query_features, gallery_features, similarity, distance)
    invalid = _same_camera_and_junk(query_ids, gallery_ids, query_cameras, gallery_cameras, remove_same_camera,
                                    junk_gallery_ids)
    return rank_metrics(sim, query_ids, gallery_ids, invalid, ranks)


def _same_camera_and_junk(query_ids, gallery_ids, query_cameras, gallery_cameras, remove_same_camera, junk_ids):
    q_ids, g_ids = _codes(query_ids, gallery_ids)
    junk = np.isin(np.asarray(gallery_ids).astype(str), np.asarray(list(junk_ids)).astype(str)) if len(junk_ids) else None
    use_cameras = remove_same_camera and query_cameras is not None and gallery_cameras is not None
    if use_cameras:
        q_cams, g_cams = _codes(query_cameras, gallery_cameras)
    if not use_cameras and junk is None:
        return None

    def invalid(rows: slice) -> np.ndarray:
        mask = np.zeros((len(q_ids[rows]), len(g_ids)), dtype=bool)
        if use_cameras:
            mask |= (q_ids[rows, None] == g_ids[None]) & (q_cams[rows, None] == g_cams[None])
        if junk is not None:
            mask |= junk[None]
        return mask

    return invalid


def _average(trials: list[dict[str, float]]) -> dict[str, float]:
    keys = trials[0].keys()
    averaged = {k: float(np.mean([t[k] for t in trials])) for k in keys}
    averaged["num_valid_queries"] = int(round(averaged["num_valid_queries"]))
    averaged["trials"] = len(trials)
    return averaged


__all__ = ["rank_metrics", "compute_reid_metrics", "similarity_from"]
