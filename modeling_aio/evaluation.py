"""ReID metrics (CMC Rank-k, mAP, mINP) and the evaluation protocols of the standard benchmarks.

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


def similarity_from(query_features=None, gallery_features=None, similarity=None, distance=None) -> np.ndarray:
    """Exactly one of: features (cosine similarity of L2-normalised rows), a similarity or a distance matrix."""
    given = [x is not None for x in (query_features, similarity, distance)]
    if sum(given) != 1:
        raise ValueError("Pass exactly one of query/gallery features, `similarity` or `distance`.")
    if query_features is not None:
        if gallery_features is None:
            raise ValueError("`gallery_features` is required with `query_features`.")
        q = torch.nn.functional.normalize(torch.as_tensor(np.asarray(query_features, dtype=np.float32)), dim=1)
        g = torch.nn.functional.normalize(torch.as_tensor(np.asarray(gallery_features, dtype=np.float32)), dim=1)
        return (q @ g.T).numpy()
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


# ---------------------------------------------------------------------------------------------------------------
# Benchmark protocols. Each takes embeddings computed once and applies the benchmark's own rule.
# ---------------------------------------------------------------------------------------------------------------


def market1501_protocol(query_features, gallery_features, query_ids, gallery_ids, query_cameras, gallery_cameras,
                        ranks=(1, 5, 10)) -> dict[str, float]:
    """Market-1501 / DukeMTMC-reID / MSMT17 / CUHK03-NP single-query evaluation (Zheng et al., ICCV 2015,
    `evaluation/evaluate.m`): for each query, gallery images of the same identity from the same camera are
    removed, and junk images (person id -1) are dropped; distractors (id 0) stay as negatives."""
    return compute_reid_metrics(query_ids, gallery_ids, query_features, gallery_features,
                                query_cameras=query_cameras, gallery_cameras=gallery_cameras,
                                remove_same_camera=True, junk_gallery_ids=("-1", -1), ranks=ranks)


def sample_one_per_identity_camera(ids: Sequence, cameras: Sequence, rng: np.random.Generator) -> np.ndarray:
    """Indices of one random item per (identity, camera) pair: the single-shot gallery of SYSU-MM01 and LLCM."""
    groups: dict[tuple, list[int]] = {}
    for index, key in enumerate(zip(np.asarray(ids).astype(str), np.asarray(cameras).astype(str))):
        groups.setdefault(key, []).append(index)
    return np.sort(np.array([rng.choice(members) for _, members in sorted(groups.items())]))


def sysu_mm01_protocol(query_features, gallery_features, query_ids, gallery_ids, query_cameras, gallery_cameras,
                       mode: str = "all", trials: int = 10, seed: int = 0, ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """SYSU-MM01 (Wu et al., ICCV 2017, `evaluation/eval_sysu.m`): IR queries from cameras 3 and 6; the RGB gallery is
    cameras 1, 2, 4, 5 (`mode="all"`) or 1, 2 (`mode="indoor"`), single-shot: one random image per identity per
    camera, re-drawn in each of `trials` seeded trials whose results are averaged. A query from camera 3 ignores
    gallery camera 2 (both indoor, same room). Cameras are given as integers 1..6."""
    if mode not in ("all", "indoor"):
        raise ValueError(f"SYSU-MM01 mode must be 'all' or 'indoor', got {mode!r}.")
    q_cams, g_cams = np.asarray(query_cameras).astype(int), np.asarray(gallery_cameras).astype(int)
    query_rows = np.flatnonzero(np.isin(q_cams, (3, 6)))
    allowed = (1, 2, 4, 5) if mode == "all" else (1, 2)
    candidates = np.flatnonzero(np.isin(g_cams, allowed))
    sim_all = similarity_from(np.asarray(query_features)[query_rows], np.asarray(gallery_features)[candidates])
    q_ids, q_cam = np.asarray(query_ids)[query_rows], q_cams[query_rows]
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(trials):
        chosen = sample_one_per_identity_camera(np.asarray(gallery_ids)[candidates], g_cams[candidates], rng)
        chosen_cams = g_cams[candidates][chosen]

        def invalid(rows: slice, chosen_cams=chosen_cams) -> np.ndarray:
            return (q_cam[rows, None] == 3) & (chosen_cams[None] == 2)

        results.append(rank_metrics(sim_all[:, chosen], q_ids, np.asarray(gallery_ids)[candidates][chosen],
                                    invalid, ranks))
    return _average(results)


def cross_modality_trials_protocol(trial_sets: Sequence[dict], ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """RegDB (Nguyen et al., Sensors 2017; 10 trials following Ye et al., TIFS 2020) and the like: each trial gives
    its own query and gallery features and ids (e.g. visible queries against the thermal images of that trial's
    test identities); all gallery images are used, no camera filtering; the trials are averaged."""
    return _average([
        compute_reid_metrics(t["query_ids"], t["gallery_ids"], t["query_features"], t["gallery_features"],
                             remove_same_camera=False, ranks=ranks)
        for t in trial_sets
    ])


def regdb_protocol(features: dict[str, np.ndarray], ids: dict[str, Sequence], test_splits: Sequence[dict],
                   direction: str = "visible->thermal", ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """RegDB: for each of the 10 official trials, `test_splits[t]` lists the indices of its visible and thermal test
    images; queries are one modality, the gallery all test images of the other; results averaged over trials.
    `features` and `ids` are keyed by "visible" and "thermal"; `direction` is "visible->thermal" or the reverse."""
    query, gallery = _directions(direction, ("visible", "thermal"))
    return cross_modality_trials_protocol([
        {"query_features": features[query][split[query]], "gallery_features": features[gallery][split[gallery]],
         "query_ids": np.asarray(ids[query])[split[query]], "gallery_ids": np.asarray(ids[gallery])[split[gallery]]}
        for split in test_splits
    ], ranks)


def _directions(direction: str, names: tuple[str, str]) -> tuple[str, str]:
    parts = tuple(p.strip() for p in direction.split("->"))
    if len(parts) != 2 or set(parts) != set(names):
        raise ValueError(f"direction must be '{names[0]}->{names[1]}' or '{names[1]}->{names[0]}', got {direction!r}.")
    return parts


def llcm_protocol(features: dict[str, np.ndarray], ids: dict[str, Sequence], cameras: dict[str, Sequence],
                  direction: str = "visible->infrared", trials: int = 10, seed: int = 0,
                  ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """LLCM (Zhang & Wang, CVPR 2023): test queries are all images of one modality; in each of 10 seeded trials the
    gallery is one random image per identity per camera of the other modality; same-identity same-camera gallery
    items are removed; both directions (visible->infrared and infrared->visible) are reported separately."""
    query, gallery = _directions(direction, ("visible", "infrared"))
    rng = np.random.default_rng(seed)
    g_ids, g_cams = np.asarray(ids[gallery]), np.asarray(cameras[gallery])
    results = []
    for _ in range(trials):
        chosen = sample_one_per_identity_camera(g_ids, g_cams, rng)
        results.append(compute_reid_metrics(
            ids[query], g_ids[chosen], features[query], features[gallery][chosen],
            query_cameras=cameras[query], gallery_cameras=g_cams[chosen], ranks=ranks))
    return _average(results)


def pku_sketch_protocol(sketch_features, photo_features, sketch_ids, photo_ids, trials: int = 10,
                        num_test_ids: int = 50, seed: int = 0, ranks=(1, 5, 10, 20)) -> dict[str, float]:
    """PKU-Sketch (Pang et al., ACM MM 2018): 10 random splits; in each, `num_test_ids` identities are the test
    set; every sketch of a test identity queries the photos (two cameras) of all test identities."""
    sketch_ids, photo_ids = np.asarray(sketch_ids).astype(str), np.asarray(photo_ids).astype(str)
    identities = np.unique(sketch_ids)
    if len(identities) < num_test_ids:
        raise ValueError(f"PKU-Sketch protocol needs {num_test_ids} identities, got {len(identities)}.")
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(trials):
        test_ids = rng.choice(identities, num_test_ids, replace=False)
        q, g = np.isin(sketch_ids, test_ids), np.isin(photo_ids, test_ids)
        results.append(compute_reid_metrics(sketch_ids[q], photo_ids[g], np.asarray(sketch_features)[q],
                                            np.asarray(photo_features)[g], remove_same_camera=False, ranks=ranks))
    return _average(results)


def text_to_image_protocol(text_features, image_features, text_ids, image_ids, ranks=(1, 5, 10)) -> dict[str, float]:
    """CUHK-PEDES (Li et al., CVPR 2017), ICFG-PEDES (Ding et al. 2021), RSTPReid (Zhu et al. 2021): every caption of
    the test split queries the whole test image gallery; no camera rule; R1/R5/R10, mAP and mINP."""
    return compute_reid_metrics(text_ids, image_ids, text_features, image_features, remove_same_camera=False,
                                ranks=ranks)


def composed_query_protocol(query_features, gallery_features, query_ids, gallery_ids,
                            query_source_index: Sequence[int] | None = None, ranks=(1, 5, 10)) -> dict[str, float]:
    """Composed queries (any subset of text / sketch / IR) against an RGB gallery (AIO, Li et al., CVPR 2024): when a
    query's sketch or IR was synthesised from a gallery image, that image (`query_source_index[i]`, -1 for none) is
    removed from query i's gallery, since matching a picture with itself proves nothing."""
    sim = similarity_from(query_features, gallery_features)
    if query_source_index is None:
        return rank_metrics(sim, query_ids, gallery_ids, None, ranks)
    source = np.asarray(query_source_index, dtype=int)
    num_g = sim.shape[1]

    def invalid(rows: slice) -> np.ndarray:
        mask = np.zeros((len(source[rows]), num_g), dtype=bool)
        has_source = source[rows] >= 0
        mask[np.flatnonzero(has_source), source[rows][has_source]] = True
        return mask

    return rank_metrics(sim, query_ids, gallery_ids, invalid, ranks)


__all__ = [
    "rank_metrics", "compute_reid_metrics", "similarity_from", "market1501_protocol", "sysu_mm01_protocol",
    "regdb_protocol", "llcm_protocol", "pku_sketch_protocol", "text_to_image_protocol", "composed_query_protocol",
    "cross_modality_trials_protocol", "sample_one_per_identity_camera",
]
