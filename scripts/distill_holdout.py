#!/usr/bin/env python
"""Stage 0 (distilling 0277 into the shared 0267 trunk) measured on training-side identities held aside.

Why: the development identities must not steer the recipe, and a full `train.py` run takes an hour on a CPU. This
distils 0267 as `train.py --distill-teacher` does, on the pooled training-side identities of `--split-file` minus
`--held-identities` drawn with `--seed`, and scores RGB -> RGB on the held ones (leave-one-out: every photo queries
all the others). `--reference` scores the teacher and 0267 there instead.

    python scripts/distill_holdout.py --reference
    python scripts/distill_holdout.py --steps 600 --schedule cosine --bf16 --supervised 1

Reads `../shared` (the pooled CUHK-PEDES images and the 0277 IR; needs `openvino`); prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_aio import evaluation  # noqa: E402
from modeling_aio.osnet import OSNet  # noqa: E402

TEACHER = (REPO.parent / "shared" / "weights" / "openvino-person-reid" / "person-reidentification-retail-0277-FP16"
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
    metrics = evaluation.composed_query_protocol(features, features, labels, labels, np.arange(len(labels)))
    return {"rank-1": round(float(metrics["rank-1"]), 2), "mAP": round(float(metrics["mAP"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-file", type=Path, default=REPO / "splits" / "dev_split.json")
    parser.add_argument("--teacher", type=Path, default=TEACHER)
    parser.add_argument("--held-identities", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7, help="draws the held identities")
    parser.add_argument("--reference", action="store_true", help="score the teacher and 0267 instead of distilling")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="cosine")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--mixup", type=float, default=0.0)
    parser.add_argument("--supervised", type=float, default=0.0, help="see train.py --distill-supervised")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "distill-holdout")
    args = parser.parse_args()

    from safetensors.torch import load_file

    from modeling_aio.trunk_distillation import distill_trunk, distillation_examples, openvino_reid_embedder
    from processing_aio import AIOImageProcessor
    from train import SHARED, build_items, shared_recipe  # scripts/train.py: the training side of the split

    if not (SHARED / "CUHK-PEDES").is_dir():
        raise SystemExit(f"error: {SHARED / 'CUHK-PEDES'} not found (the ../shared data).")
    torch.set_num_threads(args.threads)
    records = [r for r in shared_recipe(args.split_file, None, 42) if r["identity"].startswith("pooled:")]
    train_records, held_records = split_held_aside(records, args.held_identities, args.seed)
    image_processor = AIOImageProcessor()
    teacher = openvino_reid_embedder(args.teacher, image_processor, threads=args.threads)
    trunk = OSNet().eval()
    trunk.load_state_dict(load_file(str(REPO / "weights" / "osnet-0267.safetensors")))
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


if __name__ == "__main__":
    main()
