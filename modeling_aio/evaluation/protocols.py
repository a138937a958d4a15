"""The evaluation protocols of the standard ReID benchmarks (Market-1501, SYSU-MM01, RegDB, LLCM, PKU-Sketch,
CUHK-PEDES text-to-image, composed queries). Each takes embeddings computed once and applies the benchmark's own
rule on top of `metrics.rank_metrics`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import _average, compute_reid_metrics, rank_metrics, similarity_from


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
    "market1501_protocol", "sysu_mm01_protocol",
    "regdb_protocol", "llcm_protocol", "pku_sketch_protocol", "text_to_image_protocol", "composed_query_protocol",
    "cross_modality_trials_protocol", "sample_one_per_identity_camera",
]
