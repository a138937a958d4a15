"""Stage 0 (distilling 0277 into the shared 0267 trunk) measured on training-side identities held aside.

Why: the development identities must not steer the recipe, and a full training run takes an hour on a CPU. This
distils 0267 as `scripts/train.py --distill-teacher` does, on the pooled training-side identities minus
`held_identities` drawn with `seed`, and scores RGB -> RGB on the held ones (leave-one-out: every photo queries all
the others). With `reference` it scores the teacher and 0267 there instead. `scripts/distill_holdout.py` runs it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from processing_aio import AIOImageProcessor

from ..checkpoint.paths import OSNET_0267_WEIGHTS, SHARED
from ..evaluation.protocols import composed_query_protocol
from ..osnet import OSNet
from ..training.recipe import SHARED_DATA, build_items, shared_recipe
from ..training.trunk_distillation import distill_trunk, distillation_examples, openvino_reid_embedder

TEACHER = (SHARED / "weights" / "openvino-person-reid" / "person-reidentification-retail-0277-FP16"
           / "person-reidentification-retail-0277.xml")


def split_held_aside(records: list[dict], count: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training records, held records): `count` pooled identities with at least two photos, drawn with `seed`."""
    photos = Counter(record["identity"] for record in records)
    eligible = sorted(identity for identity, n in photos.items() if n >= 2)
    if len(eligible) < count:
        raise ValueError(f"only {len(eligible)} identities have two photos; {count} were asked to be held aside.")
    held = set(random.Random(seed).sample(eligible, count))
    return ([r for r in records if r["identity"] not in held],
            sorted((r for r in records if r["identity"] in held), key=lambda r: r["image"]))


@torch.no_grad()
def leave_one_out_metrics(embed, image_processor, records: list[dict], batch_size: int = 64) -> dict[str, float]:
    """RGB -> RGB Rank-1 / mAP among `records`: each photo queries all the others (itself removed)."""
    features = []
    for start in range(0, len(records), batch_size):
        images = [Image.open(r["image"]).convert("RGB") for r in records[start:start + batch_size]]
        pixels = image_processor(images, modality="rgb", return_tensors="pt")["pixel_values"]
        features.append(F.normalize(embed(pixels).float(), dim=-1))
    features = torch.cat(features).numpy()
    labels = np.array([r["identity"] for r in records])
    # each photo is its own query's "source": the composed-query rule removes exactly it from that query's gallery
    metrics = composed_query_protocol(features, features, labels, labels, np.arange(len(labels)))
    return {"rank-1": round(float(metrics["rank-1"]), 2), "mAP": round(float(metrics["mAP"]), 2)}


def run(args: argparse.Namespace) -> dict:
    """Distils (or, with `args.reference`, scores the references) and writes `args.output_dir/NAME.json`."""
    if not (SHARED_DATA / "CUHK-PEDES").is_dir():
        raise SystemExit(f"error: {SHARED_DATA / 'CUHK-PEDES'} not found (the ../shared data).")
    torch.set_num_threads(args.threads)
    records = [r for r in shared_recipe(args.split_file, None, 42) if r["identity"].startswith("pooled:")]
    train_records, held_records = split_held_aside(records, args.held_identities, args.seed)
    image_processor = AIOImageProcessor()
    teacher = openvino_reid_embedder(args.teacher, image_processor, threads=args.threads)
    trunk = OSNet().eval()
    trunk.load_state_dict(load_file(str(OSNET_0267_WEIGHTS)))
    result = {"held_identities": args.held_identities, "held_photos": len(held_records), "seed": args.seed}
    if args.reference:
        result |= {"teacher": leave_one_out_metrics(teacher, image_processor, held_records),
                   "osnet-0267": leave_one_out_metrics(lambda x: trunk(x)[1], image_processor, held_records)}
    else:
        examples = distillation_examples(build_items(train_records)[0])
        started = time.time()
        log = distill_trunk(trunk, image_processor, teacher, examples, args.output_dir, steps=args.steps,
                            learning_rate=args.learning_rate, identities_per_batch=16, instances_per_identity=4,
                            seed=42, schedule=args.schedule, bf16=args.bf16, mixup=args.mixup,
                            supervised_weight=args.supervised)
        result |= {"steps": args.steps, "schedule": args.schedule, "bf16": args.bf16, "mixup": args.mixup,
                   "supervised": args.supervised, "training_identities": len(examples),
                   "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"], "seconds": round(time.time() - started),
                   "distilled": leave_one_out_metrics(lambda x: trunk(x)[1], image_processor, held_records)}
    print(json.dumps(result, indent=2))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    name = "reference" if args.reference else f"steps{args.steps}-supervised{args.supervised:g}-mixup{args.mixup:g}"
    (args.output_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


__all__ = ["split_held_aside", "leave_one_out_metrics", "run", "TEACHER"]
