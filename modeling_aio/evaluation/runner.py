"""One evaluation run: a model on one dataset with that benchmark's protocol; prints a table and writes JSON and
the model-index block of a model card (what `scripts/evaluate_reid.py` and `scripts/dev_eval.sh` run).

Synthetic sketch / IR queries are made from a gallery photo of the same person, and that photo is removed from the
query's gallery (the composed-query rule).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from processing_aio.datasets import image_paths, load_reid_dataset
from processing_aio.synthesis import grayscale_ir, xdog_sketch

from . import metrics as evaluation_metrics
from . import protocols
from ..checkpoint.paths import REPO_ROOT
from .embedder import Embedder, EnsembleEmbedder, RGBPhotoEmbedder, make_embedder

#: What embeds a run's queries and gallery: one model, an ensemble of several, or one for the RGB photos and another
#: for the rest (`make_embedder`).
AnyEmbedder = Embedder | EnsembleEmbedder | RGBPhotoEmbedder

SYNTHESIS = {"ir": grayscale_ir, "sketch": xdog_sketch}
DEFAULT_QUERY = {"pku-sketch": "sketch", "cuhk-pedes": "text", "icfg-pedes": "text", "rstpreid": "text",
                 "sysu-mm01": "ir", "regdb": "rgb", "llcm": "rgb", "paired-visible-infrared": "ir",
                 "market-sketch-1k": "sketch"}


def read_split(path: Path) -> dict:
    """A split file's JSON object, or an `error:` naming the file."""
    try:
        split = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: --split-file {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: --split-file {path} is not valid JSON ({error}).") from None
    if not isinstance(split, dict):
        raise SystemExit(f"error: --split-file {path} must hold a JSON object, got {type(split).__name__}.")
    return split


def _held_out(dataset, name: str, split: dict | None, split_file: Path | None = None):
    """Restricts a `../shared` dataset to the identities of a split (development, or a cross-domain source)."""
    if split is None:
        return dataset
    needs = {"pku-sketch": ("pku_sketch_test_ids",), "cuhk-pedes": ("cuhk_pedes_test_pedes_ids",),
             "pooled": ("person_ids", "pooled_test_person_ids")}.get(name)
    if needs is not None and not any(key in split for key in needs):
        raise SystemExit(f"error: --split-file {split_file} lacks {needs[0]!r}, the ids {name} is evaluated "
                         "on.")
    if name == "pku-sketch":
        keep = {str(i) for i in split["pku_sketch_test_ids"]}
        return dataset.filter(lambda pid: pid in keep, input_columns="person_id")
    if name == "cuhk-pedes":
        keep = {str(i) for i in split["cuhk_pedes_test_pedes_ids"]}
        return dataset.filter(lambda pid: pid in keep, input_columns="person_id")
    if name == "pooled":
        keep = set(split["person_ids"] if "person_ids" in split else split["pooled_test_person_ids"])
        return dataset.filter(lambda pid: pid in keep, input_columns="person_id")
    raise SystemExit(f"error: --split-file applies to pku-sketch, cuhk-pedes and pooled, not {name}.")


def _composed_queries(gallery_paths: list[str], gallery_ids: np.ndarray, modalities: list[str],
                      anchors: list[int], captions: list[str] | None, real_sketches: list[str] | None,
                      exclude_anchor: bool = False):
    """Queries built around anchor gallery images: text from captions, real sketches where the dataset has them,
    synthetic IR / sketch / the RGB photo itself from the anchor image (which then leaves that query's gallery)."""
    from PIL import Image

    query: dict[str, list] = {m: [] for m in modalities}
    uses_anchor = any(m in ("ir", "rgb") or (m == "sketch" and real_sketches is None) for m in modalities)
    for n, anchor in enumerate(anchors):
        photo = Image.open(gallery_paths[anchor]).convert("RGB") if uses_anchor else None
        for m in modalities:
            if m == "text":
                query["text"].append(captions[n])
            elif m == "sketch" and real_sketches is not None:
                query["sketch"].append(real_sketches[n])
            elif m == "rgb":
                query["rgb"].append(photo)
            else:
                query[m].append(SYNTHESIS[m](photo))
    source = np.array(anchors if uses_anchor or exclude_anchor else [-1] * len(anchors))
    return query, gallery_ids[np.asarray(anchors)], source


def evaluate_dataset(args: argparse.Namespace, embedder: AnyEmbedder) -> tuple[str, dict]:
    """(task label, metrics) of `args.dataset` under its benchmark's protocol for the `args.query_modalities`."""
    name = args.dataset
    modalities = sorted(args.query_modalities.split(",")) if args.query_modalities else [DEFAULT_QUERY.get(name, "rgb")]
    unknown = set(modalities) - {"rgb", "ir", "sketch", "text"}
    if unknown:
        raise SystemExit(f"error: unknown query modalities {sorted(unknown)}; use rgb, ir, sketch, text.")
    if name == "regdb":
        return _regdb(args, embedder)
    split = read_split(args.split_file) if args.split_file is not None else None
    dataset = _held_out(load_reid_dataset(name, args.root), name, split, args.split_file)
    columns = dataset.remove_columns("image").to_dict()
    rows = _Rows(name, image_paths(dataset), np.array(columns["person_id"]), np.array(columns["camera_id"]),
                 np.array(columns["modality"]), np.array(columns["split"]), columns["captions"])
    if name in ("market1501", "dukemtmc-reid", "msmt17", "cuhk03") and modalities == ["rgb"]:
        q, g = rows.split == "query", rows.split == "gallery"
        feats = embedder.embed({"rgb": rows.paths}, f"{name}-rgb")
        return "rgb->rgb", protocols.market1501_protocol(feats[q], feats[g], rows.ids[q], rows.ids[g],
                                                         rows.cams[q], rows.cams[g])
    if name == "sysu-mm01":
        return _sysu_mm01(args, embedder, rows)
    if split is not None and "query_camera" in split:
        return _cross_camera(embedder, rows, split, modalities)
    if name == "llcm":
        return _llcm(args, embedder, rows)
    text_queries = set(split["text_query_person_ids"]) if split and "text_query_person_ids" in split else None
    return _rgb_gallery_task(args, embedder, rows, modalities, text_queries)


class _Rows:
    """The columns of a loaded dataset that the protocols read, as arrays."""

    def __init__(self, name: str, paths: list[str], ids: np.ndarray, cams: np.ndarray, modality: np.ndarray,
                 split: np.ndarray, captions: list[list[str]]):
        self.name, self.paths, self.ids, self.cams = name, paths, ids, cams
        self.modality, self.split, self.captions = modality, split, captions

    def paths_where(self, mask: np.ndarray) -> list[str]:
        return [path for path, keep in zip(self.paths, mask) if keep]


def _cross_camera(embedder: AnyEmbedder, rows: _Rows, split: dict, modalities: list[str]) -> tuple[str, dict]:
    """A source held out of training (e.g. CUHK01): every photo of the query camera (or its synthetic IR view)
    searched among every photo of the gallery camera."""
    if modalities not in (["rgb"], ["ir"]):
        raise SystemExit(f"error: the cross-domain protocol takes rgb or ir queries, not {modalities}.")
    q, g = rows.cams == split["query_camera"], rows.cams == split["gallery_camera"]
    if not q.any() or not g.any():
        raise SystemExit(f"error: no photos of camera {split['query_camera']} or {split['gallery_camera']} in "
                         f"{split['source']}.")
    gallery = embedder.embed({"rgb": rows.paths_where(g)}, f"{rows.name}-{split['source']}-gallery")
    modality = modalities[0]
    queries = rows.paths_where(q)
    if modality == "ir":
        from PIL import Image

        queries = [SYNTHESIS["ir"](Image.open(path).convert("RGB")) for path in queries]
    features = embedder.embed({modality: queries}, f"{rows.name}-{split['source']}-{modality}")
    label = (f"{modality}->rgb cross-domain ({split['source']} held out of training, camera {split['query_camera']} "
             f"-> {split['gallery_camera']}{', synthetic IR' if modality == 'ir' else ''})")
    return label, evaluation_metrics.compute_reid_metrics(rows.ids[q], rows.ids[g], features, gallery,
                                                          remove_same_camera=False)


def _sysu_mm01(args: argparse.Namespace, embedder: AnyEmbedder, rows: _Rows) -> tuple[str, dict]:
    test = rows.split == "test"
    q, g = test & (rows.modality == "ir"), test & (rows.modality == "rgb")
    feats = embedder.embed({"ir": rows.paths_where(q)}, "sysu-mm01-ir")
    gfeats = embedder.embed({"rgb": rows.paths_where(g)}, "sysu-mm01-rgb")
    return f"ir->rgb ({args.sysu_mode}-search)", protocols.sysu_mm01_protocol(
        feats, gfeats, rows.ids[q], rows.ids[g], rows.cams[q].astype(int), rows.cams[g].astype(int),
        mode=args.sysu_mode, trials=args.trials)


def _llcm(args: argparse.Namespace, embedder: AnyEmbedder, rows: _Rows) -> tuple[str, dict]:
    test = rows.split == "test"
    vis, nir = test & (rows.modality == "rgb"), test & (rows.modality == "ir")
    features = {"visible": embedder.embed({"rgb": rows.paths_where(vis)}, "llcm-vis"),
                "infrared": embedder.embed({"ir": rows.paths_where(nir)}, "llcm-nir")}
    direction = args.direction or "infrared->visible"
    return direction, protocols.llcm_protocol(features, {"visible": rows.ids[vis], "infrared": rows.ids[nir]},
                                              {"visible": rows.cams[vis], "infrared": rows.cams[nir]},
                                              direction=direction, trials=args.trials)


def _regdb(args: argparse.Namespace, embedder: AnyEmbedder) -> tuple[str, dict]:
    trials = []
    direction = args.direction or "visible->thermal"
    for trial in range(1, args.trials + 1):
        data = load_reid_dataset("regdb", args.root, trial=trial)
        data_paths = np.array(image_paths(data))
        dm, ds_, di = np.array(data["modality"]), np.array(data["split"]), np.array(data["person_id"])
        vis, th = (ds_ == "test") & (dm == "rgb"), (ds_ == "test") & (dm == "ir")
        trials.append({
            "visible": (embedder.embed({"rgb": list(data_paths[vis])}, f"regdb{trial}-vis"), di[vis]),
            "thermal": (embedder.embed({"ir": list(data_paths[th])}, f"regdb{trial}-th"), di[th])})
    query, gallery = direction.split("->")
    return direction, protocols.cross_modality_trials_protocol([
        {"query_features": t[query][0], "gallery_features": t[gallery][0], "query_ids": t[query][1],
         "gallery_ids": t[gallery][1]} for t in trials])


def _leave_one_out_rgb(gallery: np.ndarray, gallery_ids: np.ndarray, gallery_cams: np.ndarray) -> dict:
    """Each image queries all others; same-id same-camera images are removed where cameras are known, and the
    query image itself always."""
    same_item = np.arange(len(gallery_ids))

    def invalid(rows: slice) -> np.ndarray:
        q_idx = same_item[rows]
        mask = np.zeros((len(q_idx), len(gallery_ids)), dtype=bool)
        mask[np.arange(len(q_idx)), q_idx] = True
        known = gallery_cams[q_idx] != ""
        mask |= (known[:, None] & (gallery_ids[q_idx, None] == gallery_ids[None]) &
                 (gallery_cams[q_idx, None] == gallery_cams[None]))
        return mask

    sim = evaluation_metrics.similarity_from(gallery, gallery)
    return evaluation_metrics.rank_metrics(sim, gallery_ids, gallery_ids, invalid)


def _rgb_gallery_task(args: argparse.Namespace, embedder: AnyEmbedder, rows: _Rows, modalities: list[str],
                      text_queries: set[str] | None = None) -> tuple[str, dict]:
    """Datasets whose gallery is every RGB image: PKU-Sketch, the caption datasets, the pooled and two-camera sets.
    `text_queries`: the identities whose captions are text queries (default: every captioned photo's); the others'
    photos are distractors (the full-size text protocol, `splits/text_full_gallery.json`)."""
    name, ids, mod = rows.name, rows.ids, rows.modality
    label = "+".join(modalities) + "->rgb"
    rgb_rows = np.flatnonzero(mod == "rgb")
    gallery_paths, gallery_ids = [rows.paths[i] for i in rgb_rows], ids[rgb_rows]
    gallery = embedder.embed({"rgb": gallery_paths}, f"{name}-gallery-rgb")
    if name in ("pku-sketch", "market-sketch-1k") and modalities == ["sketch"]:
        sketch_rows = np.flatnonzero(mod == "sketch")
        sketches = embedder.embed({"sketch": [rows.paths[i] for i in sketch_rows]}, f"{name}-sketch")
        if name == "pku-sketch":
            num_test = min(50, len(set(ids[sketch_rows])))
            return label, protocols.pku_sketch_protocol(sketches, gallery, ids[sketch_rows], gallery_ids,
                                                        trials=args.trials, num_test_ids=num_test)
        return label, evaluation_metrics.compute_reid_metrics(ids[sketch_rows], gallery_ids, sketches, gallery,
                                                              remove_same_camera=False)
    if modalities == ["text"] and not args.exclude_anchor:
        captions = [(caption, ids[row]) for row in rgb_rows for caption in rows.captions[row]
                    if text_queries is None or ids[row] in text_queries]
        if not captions:
            raise SystemExit(f"error: {name} has no captions for a text query.")
        texts = embedder.embed({"text": [c for c, _ in captions]}, f"{name}-text")
        return label, protocols.text_to_image_protocol(texts, gallery, np.array([i for _, i in captions]), gallery_ids)
    if name in ("pooled", "two-camera") and modalities == ["rgb"]:
        return "rgb->rgb", _leave_one_out_rgb(gallery, gallery_ids, rows.cams[rgb_rows])
    return _composed_task(args, embedder, rows, modalities, label, rgb_rows, gallery, text_queries)


def _composed_task(args: argparse.Namespace, embedder: AnyEmbedder, rows: _Rows, modalities: list[str], label: str,
                   rgb_rows: np.ndarray, gallery: np.ndarray, text_queries: set[str] | None = None
                   ) -> tuple[str, dict]:
    """Composed (or synthetic single-modality) queries against the RGB gallery; with `text_queries`, only those
    identities' captions (or photos, for a query without text) make queries (default: every identity's)."""
    name, ids, mod = rows.name, rows.ids, rows.modality
    gallery_paths, gallery_ids = [rows.paths[i] for i in rgb_rows], ids[rgb_rows]
    rng = np.random.default_rng(0)
    captions = real_sketches = None
    if name == "pku-sketch":
        sketch_rows = np.flatnonzero(mod == "sketch")
        anchors = [int(rng.choice(np.flatnonzero(gallery_ids == ids[i]))) for i in sketch_rows]
        real_sketches = [rows.paths[i] for i in sketch_rows] if "sketch" in modalities else None
    elif "text" in modalities:
        anchors, captions = [], []
        for g_index, row in enumerate(rgb_rows):
            for caption in rows.captions[row] if text_queries is None or ids[row] in text_queries else ():
                anchors.append(g_index)
                captions.append(caption)
        if not captions:
            raise SystemExit(f"error: {name} has no captions for a composed text query.")
    else:  # every photo once; with `text_queries`, the photos of those identities only (the full-size protocol)
        anchors = [g for g, row in enumerate(rgb_rows) if text_queries is None or ids[row] in text_queries]
    query, query_ids, source = _composed_queries(gallery_paths, gallery_ids, modalities, anchors, captions,
                                                 real_sketches, args.exclude_anchor)
    features = embedder.embed(query, f"{name}-{'+'.join(modalities)}")
    synthetic = [m for m in modalities if m in ("ir", "rgb") or (m == "sketch" and real_sketches is None)]
    if synthetic:
        label += f" (synthetic {'/'.join(m for m in synthetic if m != 'rgb') or 'none'}; source image removed)"
    elif args.exclude_anchor:
        label += " (described image removed)"
    return label, protocols.composed_query_protocol(features, gallery, query_ids, gallery_ids, source)


def model_index_block(model: str, dataset: str, task: str, metrics: dict) -> str:
    lines = [
        "model-index:",
        f"- name: {Path(model).name}",
        "  results:",
        "  - task:",
        "      type: person-re-identification",
        f"      name: {task}",
        "    dataset:",
        f"      type: {dataset}",
        f"      name: {dataset}",
        "    metrics:",
    ]
    for key in [k for k in metrics if k.startswith("rank-")] + ["mAP", "mINP"]:
        lines += [f"    - type: {key}", f"      value: {metrics[key]:.2f}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """Embeds, scores and prints `args.dataset` for `args.model`; writes the JSON result (returned) and its
    model-index block."""
    for option in ("trials", "batch_size"):
        if getattr(args, option) < 1:
            raise SystemExit(f"error: --{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}.")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    backend, rgb_model = getattr(args, "backend", "torch"), getattr(args, "rgb_model", None)
    started = time.time()
    try:
        embedder = make_embedder(args.model, args.batch_size, args.cache_dir, backend, rgb_model)
        task, metrics = evaluate_dataset(args, embedder)
    except (FileNotFoundError, NotADirectoryError, OSError, ValueError) as error:  # inputs the user named
        raise SystemExit(f"error: {error}") from None
    elapsed = time.time() - started

    photos = f", RGB photos by {Path(rgb_model).name}" if rgb_model else ""
    header = f"{Path(args.model).name}{photos} on {args.dataset} ({task})"
    print(f"\n{header}\n" + "-" * len(header))
    for key, value in metrics.items():
        print(f"  {key:18s} {value:8d}" if key in ("trials", "num_valid_queries") else f"  {key:18s} {value:8.2f}")
    suffix = "-anchor-removed" if args.exclude_anchor else ""
    output = args.output or REPO_ROOT / "outputs" / (f"eval-{Path(args.model).name}-{args.dataset}-"
                                                     f"{task.split(' ')[0].replace('->', '-to-')}{suffix}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "rgb_model": rgb_model, "backend": backend,
              "dataset": args.dataset, "root": str(args.root), "task": task,
              "split_file": str(args.split_file) if args.split_file else None, "trials": args.trials,
              "metrics": metrics, "seconds": round(elapsed, 1)}
    output.write_text(json.dumps(result, indent=1) + "\n")
    block = model_index_block(args.model, args.dataset, task, metrics)
    output.with_suffix(".model-index.yaml").write_text(block + "\n")
    print(f"\nwrote {output} and {output.with_suffix('.model-index.yaml').name} ({elapsed:.0f} s)")
    return result


__all__ = ["Embedder", "evaluate_dataset", "model_index_block", "run"]
