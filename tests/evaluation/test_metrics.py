"""The vectorised metric against an independent brute-force implementation, and hand-computed protocol cases."""

from __future__ import annotations

import numpy as np
import pytest

from modeling_aio.evaluation import (
    REID_METRIC_PATH,
    composed_query_protocol, compute_reid_metrics, llcm_protocol, market1501_protocol, pku_sketch_protocol,
    regdb_protocol, sample_one_per_identity_camera, sysu_mm01_protocol, text_to_image_protocol,
)


def brute_force(distance, q_ids, g_ids, q_cams, g_cams, remove_same_camera, junk=(), max_rank=10):
    """Per-query loops in plain Python: ascending distance, ties in gallery order."""
    cmc, aps, inps, valid = [0.0] * max_rank, [], [], 0
    for i in range(len(q_ids)):
        order = sorted(range(len(g_ids)), key=lambda j: (distance[i][j], j))
        kept = [j for j in order if g_ids[j] not in junk and
                not (remove_same_camera and g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])]
        hits = [1 if g_ids[j] == q_ids[i] else 0 for j in kept]
        if sum(hits) == 0:
            continue
        valid += 1
        first = hits.index(1)
        for k in range(max_rank):
            cmc[k] += 1.0 if first <= k else 0.0
        found, precisions = 0, []
        for position, hit in enumerate(hits, start=1):
            if hit:
                found += 1
                precisions.append(found / position)
        aps.append(sum(precisions) / len(precisions))
        last = max(p for p, h in enumerate(hits, start=1) if h)
        inps.append(sum(hits) / last)
    return {"rank-1": 100 * cmc[0] / valid, "rank-5": 100 * cmc[4] / valid, "rank-10": 100 * cmc[9] / valid,
            "mAP": 100 * sum(aps) / valid, "mINP": 100 * sum(inps) / valid, "num_valid_queries": valid}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("remove_same_camera", [True, False])
def test_matches_brute_force_with_ties_missing_matches_and_cameras(seed, remove_same_camera):
    rng = np.random.default_rng(seed)
    nq, ng = 37, 83
    distance = rng.integers(0, 6, (nq, ng)).astype(np.float32)  # few values: many ties
    q_ids = rng.integers(0, 15, nq)
    q_ids[:3] = 99  # identities absent from the gallery: no valid match
    g_ids = rng.integers(-1, 15, ng)  # -1 = junk
    q_cams, g_cams = rng.integers(1, 4, nq), rng.integers(1, 4, ng)
    ours = compute_reid_metrics(q_ids, g_ids, distance=distance, query_cameras=q_cams, gallery_cameras=g_cams,
                                remove_same_camera=remove_same_camera, junk_gallery_ids=(-1,))
    ref = brute_force(distance.tolist(), q_ids.tolist(), g_ids.tolist(), q_cams.tolist(), g_cams.tolist(),
                      remove_same_camera, junk=(-1,))
    for key, value in ref.items():
        assert abs(ours[key] - value) <= 1e-6, (key, ours[key], value)


def test_features_and_similarity_inputs_agree():
    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((10, 8)), rng.standard_normal((30, 8))
    q_ids, g_ids = rng.integers(0, 5, 10), rng.integers(0, 5, 30)
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    a = compute_reid_metrics(q_ids, g_ids, query_features=q, gallery_features=g, remove_same_camera=False)
    b = compute_reid_metrics(q_ids, g_ids, similarity=qn @ gn.T, remove_same_camera=False)
    assert a == pytest.approx(b)


def test_hand_computed_ranking():
    # One query of id 1; gallery ids by decreasing similarity: 2, 1, 3, 1 -> first hit at rank 2,
    # AP = (1/2 + 2/4) / 2 = 0.5, INP = 2 / 4 = 0.5
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    out = compute_reid_metrics([1], [2, 1, 3, 1], similarity=sim, remove_same_camera=False)
    assert out["rank-1"] == 0 and out["rank-5"] == 100
    assert out["mAP"] == pytest.approx(50.0) and out["mINP"] == pytest.approx(50.0)


def test_market1501_rule_removes_same_camera_and_junk():
    # Gallery (by similarity): same id same camera (removed), junk (removed), other id, same id other camera.
    q = np.array([[1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.5, 0.5]])
    out = market1501_protocol(q, g, [5], [5, -1, 7, 5], [1], [1, 2, 2, 3])
    assert out["rank-1"] == 0 and out["mAP"] == pytest.approx(50.0)  # the match sits at kept rank 2


def test_single_shot_sampling_takes_one_per_identity_camera():
    ids = ["a", "a", "a", "b", "b", "c"]
    cams = [1, 1, 2, 1, 1, 4]
    chosen = sample_one_per_identity_camera(ids, cams, np.random.default_rng(0))
    pairs = sorted((ids[i], cams[i]) for i in chosen)
    assert pairs == [("a", 1), ("a", 2), ("b", 1), ("c", 4)]


def test_sysu_rules_cameras_and_camera3_skips_camera2():
    # Queries: IR cam 3 and cam 6 (a cam-1 "query" is ignored). Gallery: id 1 only in cam 2 and cam 4.
    q = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.9, 0.1]])
    g_ids, g_cams = [1, 1, 2, 3], [2, 4, 1, 3]  # cam-3 gallery item is IR: never in the RGB gallery
    out = sysu_mm01_protocol(q, g, [1, 1, 1], g_ids, [3, 6, 1], g_cams, mode="all", trials=2)
    # cam-3 query: cam 2 skipped -> gallery [id1@cam4 (sim 0), id2 (0.7)] -> rank 2; cam-6 query: id1@cam2 first.
    assert out["num_valid_queries"] == 2 and out["rank-1"] == pytest.approx(50.0)
    indoor = sysu_mm01_protocol(q, g, [1, 1, 1], g_ids, [3, 6, 1], g_cams, mode="indoor", trials=1)
    assert indoor["num_valid_queries"] == 1  # cam-3 query has only cam 2 (skipped) in the indoor gallery


def test_regdb_and_llcm_directions_and_trials():
    feats = {"visible": np.eye(3), "thermal": np.eye(3)[[1, 0, 2]]}
    ids = {"visible": [0, 1, 2], "thermal": [1, 0, 2]}
    splits = [{"visible": np.array([0, 1, 2]), "thermal": np.array([0, 1, 2])}, {"visible": np.array([0, 1]),
                                                                                 "thermal": np.array([0, 1])}]
    out = regdb_protocol(feats, ids, splits, direction="thermal->visible")
    assert out["rank-1"] == 100 and out["trials"] == 2
    with pytest.raises(ValueError, match="direction"):
        regdb_protocol(feats, ids, splits, direction="visible->sketch")
    cams = {"visible": [1, 1, 2], "infrared": [3, 3, 4]}
    llcm = llcm_protocol({"visible": np.eye(3), "infrared": np.eye(3)}, {"visible": [0, 1, 2], "infrared": [0, 1, 2]},
                         cams, direction="infrared->visible", trials=3)
    assert llcm["rank-1"] == 100 and llcm["trials"] == 3


def test_pku_sketch_protocol_uses_test_identities_only():
    rng = np.random.default_rng(1)
    ids = np.arange(60)
    sketch = rng.standard_normal((60, 4))
    photos = np.repeat(sketch, 2, axis=0) + 0.01 * rng.standard_normal((120, 4))
    out = pku_sketch_protocol(sketch, photos, ids, np.repeat(ids, 2), trials=3, num_test_ids=50)
    assert out["num_valid_queries"] == 50 and out["rank-1"] == 100
    with pytest.raises(ValueError, match="needs 50 identities"):
        pku_sketch_protocol(sketch[:10], photos, ids[:10], np.repeat(ids, 2))


def test_text_to_image_and_composed_source_removal():
    g = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    q = np.array([[1.0, 0.0]])
    assert text_to_image_protocol(q, g, [7], [7, 8, 7])["rank-1"] == 100
    # The query was synthesised from gallery item 0 (its own picture): removing it leaves id 7 at rank 2.
    out = composed_query_protocol(q, g, [7], [7, 8, 7], query_source_index=[0])
    assert out["rank-1"] == 0 and out["mAP"] == pytest.approx(50.0)


def test_evaluate_load_gives_the_same_numbers():
    import evaluate

    rng = np.random.default_rng(5)
    q, g = rng.standard_normal((12, 6)), rng.standard_normal((40, 6))
    q_ids, g_ids = rng.integers(0, 6, 12), rng.integers(0, 6, 40)
    q_cams, g_cams = rng.integers(1, 3, 12), rng.integers(1, 3, 40)
    metric = evaluate.load(REID_METRIC_PATH)
    out = metric.compute(predictions=q.tolist(), references=[str(i) for i in q_ids], gallery_features=g,
                         gallery_ids=g_ids, query_cameras=q_cams, gallery_cameras=g_cams)
    direct = compute_reid_metrics([str(i) for i in q_ids], [str(i) for i in g_ids], query_features=q,
                                  gallery_features=g, query_cameras=q_cams, gallery_cameras=g_cams)
    assert out == pytest.approx(direct)


def _tiny_checkpoint(config, processor, path):
    from modeling_aio import AIOModel

    AIOModel(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.mark.slow
def test_evaluate_script_runs_sysu_and_pku_protocols_on_fixtures(config, processor, tmp_path):
    """scripts/evaluate_reid.py end to end on fixtures in the datasets' layouts, with cached embeddings reused."""
    import json
    import subprocess
    import sys

    from conftest import REPO, random_image

    model = _tiny_checkpoint(config, processor, tmp_path / "model")
    sysu = tmp_path / "SYSU-MM01"
    for pid in (1, 2, 3):
        for camera in range(1, 7):
            for shot in range(2):
                path = sysu / f"cam{camera}" / f"{pid:04d}" / f"{shot:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                random_image(pid * 100 + camera * 10 + shot).save(path)
    (sysu / "exp").mkdir()
    (sysu / "exp" / "test_id.txt").write_text("1,2,3")
    (sysu / "exp" / "train_id.txt").write_text("")
    (sysu / "exp" / "val_id.txt").write_text("")
    pku = tmp_path / "pku"
    for pid in range(1, 6):
        for camera in ("04", "06"):
            (pku / "photo").mkdir(parents=True, exist_ok=True)
            random_image(pid * 3 + int(camera)).save(pku / "photo" / f"{pid}_{camera}_1.jpg")
        (pku / "sketch").mkdir(exist_ok=True)
        random_image(pid).save(pku / "sketch" / f"{pid}.jpg")
    runs = [("sysu-mm01", sysu, ["--trials", "3", "--sysu-mode", "indoor"]), ("pku-sketch", pku, ["--trials", "2"]),
            ("pku-sketch", pku, ["--query-modalities", "sketch,ir"])]
    for dataset, root, extra in runs:
        out = tmp_path / f"{dataset}-{len(extra)}.json"
        command = [sys.executable, str(REPO / "scripts" / "evaluate_reid.py"), "--model", str(model), "--dataset", dataset,
                   "--root", str(root), "--cache-dir", str(tmp_path / "cache"), "--output", str(out), *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads(out.read_text())["metrics"]
        assert 0 <= metrics["rank-1"] <= 100 and 0 < metrics["mAP"] <= 100
        assert out.with_suffix(".model-index.yaml").read_text().startswith("model-index:")
    sysu_metrics = json.loads((tmp_path / "sysu-mm01-4.json").read_text())["metrics"]
    # IR queries: 3 ids x cameras 3 and 6 x 2 shots; indoor gallery is cameras 1-2 (cam-3 queries still have cam 1).
    assert sysu_metrics["trials"] == 3 and sysu_metrics["num_valid_queries"] == 12
    assert any((tmp_path / "cache").rglob("*.npy"))


def test_cross_domain_protocol_searches_one_camera_among_the_other(tmp_path):
    """The held-out-source protocol (splits/cross_domain_*.json): camera c1 photos of the split's people against
    camera c2 photos; other people and other cameras stay out."""
    import argparse
    import csv
    import json

    from modeling_aio.evaluation.runner import evaluate_dataset

    from conftest import random_image

    rows = []
    for person in range(4):
        for camera in ("c1", "c2"):
            image = f"imgs/CUHK01/{person:04d}{camera}.jpg"
            (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
            random_image(person * 7 + len(camera), (20, 40)).save(tmp_path / image)
            rows.append({"image": image, "source": "cuhk01", "person_id": f"cuhk01:{person:04d}", "camera": camera,
                         "pedes_split": "train", "pedes_id": "", "captions": "[]"})
    rows.append({**rows[0], "image": "imgs/CUHK01/other.jpg", "person_id": "market:9", "source": "market1501"})
    random_image(99, (20, 40)).save(tmp_path / "imgs/CUHK01/other.jpg")
    with open(tmp_path / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    split = tmp_path / "cross.json"
    split.write_text(json.dumps({"source": "cuhk01", "query_camera": "c1", "gallery_camera": "c2",
                                 "person_ids": [f"cuhk01:{p:04d}" for p in range(4)]}))

    class PersonEmbedder:  # one direction per person: a perfect model
        def embed(self, query, key):
            (modality, paths), = query.items()
            return np.stack([np.eye(8)[int(str(p).split("/")[-1][:4])] for p in paths]).astype(np.float32)

    args = argparse.Namespace(dataset="pooled", root=tmp_path, split_file=split, query_modalities="rgb",
                              exclude_anchor=False, trials=1, direction=None, sysu_mode="all")
    label, metrics = evaluate_dataset(args, PersonEmbedder())
    assert "cross-domain (cuhk01 held out of training, camera c1 -> c2)" in label
    assert metrics["rank-1"] == 100.0 and metrics["num_valid_queries"] == 4


def test_full_size_text_protocol_queries_only_the_dev_captions_among_every_held_out_photo(tmp_path):
    """splits/text_full_gallery.json: captions of `text_query_person_ids` only, searched among the photos of all
    `person_ids` (the others are distractors, their captions unused); the split builder takes the development
    caption ids, the pooled development ids and the held-out source."""
    import argparse
    import csv
    import json

    from modeling_aio.evaluation.runner import evaluate_dataset
    from modeling_aio.evaluation.split import make_text_gallery_split

    from conftest import random_image

    rows = []
    for person, shot in [(p, "") for p in range(6)] + [(0, "b"), (1, "b")]:  # the query people have 2 photos
        image = f"imgs/CUHK01/{person:04d}{shot}.jpg"
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        random_image(person, (20, 40)).save(tmp_path / image)
        rows.append({"image": image, "source": "cuhk01", "person_id": f"cuhk01:{person:04d}", "camera": "c1",
                     "pedes_split": "val", "pedes_id": str(100 + person),
                     "captions": json.dumps([f"person {person} in a coat", f"person {person} walking"])})
    data = tmp_path / "data"
    (data / "CUHK-PEDES").mkdir(parents=True)
    for folder in (tmp_path, data / "CUHK-PEDES"):
        with open(folder / "index.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    split = make_text_gallery_split(data, {"cuhk_pedes_test_pedes_ids": [100, 101],
                                           "pooled_test_person_ids": ["cuhk01:0002"]},
                                    {"person_ids": ["cuhk01:0003", "cuhk01:0004"]})
    assert split["text_query_person_ids"] == ["cuhk01:0000", "cuhk01:0001"]
    assert split["person_ids"] == [f"cuhk01:{p:04d}" for p in range(5)] and split["gallery_photos"] == 7
    (tmp_path / "text.json").write_text(json.dumps(split))
    embedded = {}

    class PersonEmbedder:  # photos and captions of a person share one direction: a perfect model
        def embed(self, query, key):
            (modality, items), = query.items()
            embedded[modality] = list(items)
            people = [int(str(x).split("/")[-1][:4]) if modality == "rgb" else int(x.split()[1]) for x in items]
            return np.stack([np.eye(8)[p] for p in people]).astype(np.float32)

    args = argparse.Namespace(dataset="pooled", root=tmp_path, split_file=tmp_path / "text.json",
                              query_modalities="text", exclude_anchor=False, trials=1, direction=None, sysu_mode="all")
    label, metrics = evaluate_dataset(args, PersonEmbedder())
    assert label == "text->rgb" and metrics["rank-1"] == 100.0
    assert len(embedded["rgb"]) == 7 and len(embedded["text"]) == 8
    assert all(caption.split()[1] in ("0", "1") for caption in embedded["text"])
    # composed and single-image baselines on the same protocol: only the development people make queries
    for modalities, queries in (("text,ir", 8), ("ir", 4), ("text", 8)):
        counted = CountingEmbedder()
        args.query_modalities, args.exclude_anchor = modalities, modalities == "text"
        evaluate_dataset(args, counted)
        assert counted.sizes == {"rgb": 7, **{m: queries for m in modalities.split(",")}}


class CountingEmbedder:
    """Counts the items of each modality it is asked to embed (every query points the same way)."""

    def __init__(self):
        self.sizes: dict[str, int] = {}

    def embed(self, query, key):
        self.sizes.update({modality: len(items) for modality, items in query.items()})
        return np.ones((len(next(iter(query.values()))), 8), dtype=np.float32)
