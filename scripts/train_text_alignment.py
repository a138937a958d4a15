#!/usr/bin/env python
"""Adds a text-aligned part to a checkpoint and trains it on every training caption of `../shared`
(`modeling_aio.training.text_alignment`); `--ship` then copies it into the shipped trainable weights.

    python scripts/train_text_alignment.py --checkpoint aio-reid --out outputs/runs/text-alignment
    python scripts/train_text_alignment.py --ship outputs/runs/text-alignment && make checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT, SPLIT_FILE
from modeling_aio.configuration_aio import TEXT_ALIGNMENT_TRUNKS
from modeling_aio.osnet import OSNet
from modeling_aio.training.ship_alignment import ship_text_alignment
from modeling_aio.training.text_alignment import rechoose_shares, run_text_alignment
from modeling_aio.training.tuned_alignment import run_tuned_alignment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "aio-reid")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "runs" / "text-alignment")
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="width of the text-aligned part")
    parser.add_argument("--hidden", type=int, default=1024, help="width of the heads' per-position layer")
    parser.add_argument("--layers", type=int, default=0,
                        help="self-attention layers the text head runs over the caption's encoder outputs first")
    parser.add_argument("--tuned-layers", type=int, default=0,
                        help="the text head reads a caption's own encoder pass whose top K layers it fine-tunes")
    parser.add_argument("--trunk", choices=TEXT_ALIGNMENT_TRUNKS, default="shared",
                        help="whose feature map the image head reads: the shared RGB trunk's or the second RGB trunk's")
    parser.add_argument("--tune-trunk-from", choices=OSNet.stages, default=None,
                        metavar="STAGE", help="with --trunk tuned: its stages from STAGE up train with the heads, on "
                                              "cached outputs of the stages below")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="ship the heads trained without the people held out to choose the shares (by default they "
                             "train again on every captioned person once the shares are chosen)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-identities", type=int, default=4000, help="training recipe, as scripts/train.py")
    parser.add_argument("--ship", type=Path, default=None, metavar="ALIGNED",
                        help="copy ALIGNED's text-aligned part into weights/aio-reid-trainable.safetensors instead")
    parser.add_argument("--tuned-towers", type=Path, default=None, metavar="TOWERS",
                        help="install towers fine-tuned by scripts/experiment_text_finetune.py (its --save-towers file) "
                             "into --checkpoint and choose their shares, instead of training heads")
    parser.add_argument("--towers-run", type=Path, default=None, metavar="RUN_JSON",
                        help="with --tuned-towers: the run's JSON (experiment_text_finetune.py run --out), whose record "
                             "of the towers' training goes into the summary and the model card")
    parser.add_argument("--rechoose-shares", type=Path, default=None, metavar="ALIGNED",
                        help="choose ALIGNED's shares again (same held-out people, current grid), heads unchanged")
    args = parser.parse_args()
    if args.towers_run is not None and args.tuned_towers is None:
        parser.error("--towers-run describes the towers of --tuned-towers; give both.")
    if args.rechoose_shares is not None:
        shares = rechoose_shares(args.rechoose_shares, args.split_file, args.seed, args.max_identities)
        print(f"shares of {args.rechoose_shares}: rgb {shares['rgb']}, text {shares['text']}, "
              f"text + IR {shares['text+ir']}, text + sketch {shares['text+sketch']}")
        return
    if args.tuned_towers is not None:
        record = run_tuned_alignment(args.checkpoint, args.tuned_towers, args.out, args.split_file, args.seed,
                                     args.max_identities, towers_run=args.towers_run)
        print(f"wrote {args.out}: shares {record['shares']}")
        return
    if args.ship is not None:
        added = ship_text_alignment(args.ship, REPO_ROOT / "weights" / "aio-reid-trainable.safetensors")
        print(f"shipped {added} tensors from {args.ship}; run `make checkpoint` to rebuild aio-reid/")
        return
    record = run_text_alignment(args.checkpoint, args.out, args.split_file, args.epochs, args.size, args.hidden,
                                args.seed, args.max_identities, layers=args.layers, trunk=args.trunk,
                                refit=args.refit, tuned_layers=args.tuned_layers, trunk_from=args.tune_trunk_from)
    print(f"wrote {args.out}: {record}")


if __name__ == "__main__":
    main()
