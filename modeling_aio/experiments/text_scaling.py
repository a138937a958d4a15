"""How text -> RGB search grows with the number of captioned training identities: a learning curve of the text skip.

Why: text is the one query that only CUHK-PEDES's captions teach. This refits a freshly initialised text skip
(`training.calibration.fit_text_skip`, the last training stage's own fit) on captions of N training identities, for
growing N, with every other part of the checkpoint as it is, and scores each fit on the development identities the
way `scripts/evaluate_reid.py` scores text: every caption queries all their photos. The [CLS] projection stays as
trained, so the curve measures the text skip's need for data. `scripts/text_scaling.py` runs it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor

from processing_aio.datasets import image_paths, load_reid_dataset

from ..evaluation.protocols import text_to_image_protocol
from ..training.calibration import alignment_features, cached_query_features, fit_text_skip, photo_labels_of
from ..training.data import TrainingItem
from ..training.recipe import build_items, shared_recipe


def dev_caption_items(split_file: Path, root: Path) -> list[TrainingItem]:
    """The captioned photos of the development CUHK-PEDES identities (labels: their index among those people)."""
    keep = {str(i) for i in json.loads(split_file.read_text())["cuhk_pedes_test_pedes_ids"]}
    dataset = load_reid_dataset("cuhk-pedes", root).filter(lambda pid: pid in keep, input_columns="person_id")
    columns = dataset.remove_columns("image").to_dict()
    label_of = {pid: n for n, pid in enumerate(sorted(set(columns["person_id"])))}
    return [TrainingItem(path, label_of[pid], list(captions))
            for path, pid, modality, captions in zip(image_paths(dataset), columns["person_id"], columns["modality"],
                                                     columns["captions"])
            if modality == "rgb" and captions]


def distractor_photos(text_gallery_split: Path, data: Path) -> list[Path]:
    """The photos of the full-size text protocol's distractor identities (`splits/text_full_gallery.json`: its
    `person_ids` that are not `text_query_person_ids`), from `CUHK-PEDES/index.csv` under `data`."""
    import csv

    split = json.loads(text_gallery_split.read_text())
    distractors = set(split["person_ids"]) - set(split["text_query_person_ids"])
    with open(data / "CUHK-PEDES" / "index.csv", newline="") as handle:
        return [data / "CUHK-PEDES" / row["image"] for row in csv.DictReader(handle) if row["person_id"] in distractors]


@torch.no_grad()
def rgb_embeddings(model, processor, photos: list[Path], batch_size: int = 64) -> torch.Tensor:
    """(N, D) gallery embeddings of `photos`, as `aio-reid index` stores them."""
    from PIL import Image

    chunks = []
    for start in range(0, len(photos), batch_size):
        pixels = processor(rgb=[Image.open(p).convert("RGB") for p in photos[start:start + batch_size]],
                           return_tensors="pt")["pixel_values_rgb"]
        chunks.append(model.get_features(pixel_values_rgb=pixels))
    return torch.cat(chunks)


@torch.no_grad()
def text_rank_metrics(model, cache: dict[str, torch.Tensor],
                      distractors: torch.Tensor | None = None) -> dict[str, float]:
    """Rank-1 / mAP of every cached caption against every cached photo (no photo removed: the text protocol), and
    the `distractors` (gallery embeddings of other people) when given: the full-size protocol."""
    queries = F.normalize(cached_query_features(model, cache, "text", torch.arange(len(cache["labels"]))), dim=-1)
    photo_labels = photo_labels_of(cache)
    gallery = cache["rgb"]
    if distractors is not None:
        gallery = torch.cat([gallery, distractors])
        photo_labels = torch.cat([photo_labels, -1 - torch.arange(len(distractors))])
    metrics = text_to_image_protocol(queries.numpy(), gallery.numpy(), cache["labels"].numpy(),
                                                photo_labels.numpy())
    return {"rank-1": round(float(metrics["rank-1"]), 2), "mAP": round(float(metrics["mAP"]), 2)}


def learning_curve(model, train_cache: dict[str, torch.Tensor], dev_cache: dict[str, torch.Tensor],
                   sizes: list[int], trials: int, steps: int, seed: int,
                   distractors: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Per size N (and per trial: another draw of N identities; one trial when N is every identity): a fresh text
    skip fitted on the captions of N training identities, scored on the development captions. Restores the
    checkpoint's own text skip afterwards."""
    identities = sorted(set(train_cache["labels"].tolist()))
    for size in sizes:  # all checked before the first fit, so a bad size costs no work
        if not 2 <= size <= len(identities):
            raise ValueError(f"size {size}: the training captions cover {len(identities)} identities (need 2..that).")
    shipped = {k: v.clone() for k, v in model.text_skip.state_dict().items()}
    points = []
    try:
        for size in sizes:
            for trial in range(trials if size < len(identities) else 1):
                chosen = torch.tensor(random.Random(seed + trial).sample(identities, size))
                rows = torch.nonzero(torch.isin(train_cache["labels"], chosen)).flatten()
                torch.manual_seed(seed + trial)
                model.text_skip.reset_parameters()
                fit_text_skip(model, train_cache, ("text",), rows, steps=steps, seed=seed + trial)
                points.append({"identities": size, "captions": len(rows), "trial": trial,
                               **text_rank_metrics(model, dev_cache, distractors)})
                print(f"  {size:5d} identities ({len(rows):5d} captions), trial {trial}: "
                      f"Rank-1 {points[-1]['rank-1']:.2f}  mAP {points[-1]['mAP']:.2f}", flush=True)
    finally:  # the checkpoint's own skip comes back even if a fit fails
        model.text_skip.load_state_dict(shipped)
    return points


def rank1_per_doubling(points: list[dict[str, float]]) -> float | None:
    """Least-squares slope of mean Rank-1 against log2(identities): points gained per doubling of the captions."""
    sizes = sorted({p["identities"] for p in points})
    if len(sizes) < 2:
        return None
    x = np.log2(sizes)
    y = np.array([np.mean([p["rank-1"] for p in points if p["identities"] == s]) for s in sizes])
    return float(np.polyfit(x, y, 1)[0])


def run(args: argparse.Namespace) -> dict:
    """Caches the frozen features once, fits each draw, prints the slope and writes `args.output`."""
    if not (args.data / "CUHK-PEDES").is_dir():
        raise SystemExit(f"error: {args.data / 'CUHK-PEDES'} not found (--data: the ../shared/data folder).")
    started = time.time()
    torch.manual_seed(args.seed)
    model = AutoModel.from_pretrained(str(args.model)).eval()
    if not getattr(model.config, "text_embedding_skip", False):
        raise SystemExit(f"error: {args.model} has no text skip (built without --text-embedding-skip).")
    processor = AutoProcessor.from_pretrained(str(args.model))
    items, _ = build_items(shared_recipe(args.split_file, args.max_identities, args.seed))
    train_items = [item for item in items if item.captions]
    dev_items = dev_caption_items(args.split_file, args.data / "CUHK-PEDES")
    print(f"caching frozen features: {len(train_items)} captioned training photos, {len(dev_items)} development "
          "photos", flush=True)
    train_cache = alignment_features(model, processor, train_items)
    dev_cache = alignment_features(model, processor, dev_items)
    distractors = None
    if args.text_gallery_split is not None:
        photos = distractor_photos(args.text_gallery_split, args.data)
        print(f"embedding {len(photos)} distractor photos ({args.text_gallery_split.name})", flush=True)
        distractors = rgb_embeddings(model, processor, photos)
    checkpoint = text_rank_metrics(model, dev_cache, distractors)
    print(f"the checkpoint's own text skip: Rank-1 {checkpoint['rank-1']:.2f}  mAP {checkpoint['mAP']:.2f}")
    every = len(set(train_cache["labels"].tolist()))
    sizes = sorted({s for s in args.sizes if s < every} | {every})
    points = learning_curve(model, train_cache, dev_cache, sizes, args.trials, args.steps, args.seed, distractors)
    slope = rank1_per_doubling(points)
    result = {"model": str(args.model), "split_file": str(args.split_file), "development_captions":
              len(dev_cache["labels"]), "development_photos": len(dev_cache["rgb"]),
              "development_identities": len({item.label for item in dev_items}), "steps": args.steps,
              "distractor_photos": 0 if distractors is None else len(distractors),
              "seed": args.seed, "checkpoint_text_skip": checkpoint, "points": points,
              "rank1_per_doubling": None if slope is None else round(slope, 2),
              "seconds": round(time.time() - started)}
    if slope is not None and slope > 0:
        best = max(p["rank-1"] for p in points if p["identities"] == every)
        doublings = max(0.0, (55.0 - best) / slope)
        result["doublings_to_rank1_55"] = round(doublings, 1)
        print(f"Rank-1 per doubling of the captioned identities: {slope:.2f}; at that slope Rank-1 55 takes "
              f"{doublings:.1f} more doublings of {every} identities (about {every * 2 ** doublings:,.0f})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} ({result['seconds']} s)")
    return result


__all__ = ["dev_caption_items", "distractor_photos", "rgb_embeddings", "text_rank_metrics", "learning_curve", "rank1_per_doubling", "run"]
