#!/usr/bin/env python
"""Issue 21 experiment: add an IR trunk to a checkpoint and bind it on synthetic thermal views and the real thermal
crops of the train frames; then run scripts/evaluate_real_thermal.py on the result."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.experiments.thermal_binding import bind_ir_trunk, ship_ir_trunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "aio-reid")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--thermal-share", type=float, default=0.5)
    parser.add_argument("--no-real-pairs", dest="real_pairs", action="store_false")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anchor-weight", type=float, default=0.0,
                        help="> 0: keep the trunk reading near-infrared (CAJ) views as the shared trunk does")
    parser.add_argument("--thermal-style", choices=("prior", "photo", "structure"), default="prior",
                        help="the synthetic thermal views' look (processing_aio.synthesis.THERMAL_STYLES)")
    parser.add_argument("--thermal-gate", action="store_true",
                        help="add and fit the gate that sends only thermal IR queries to the IR trunk")
    parser.add_argument("--ship", action="store_true",
                        help="instead of training: add the IR trunk of --out to weights/aio-reid-trainable.*")
    args = parser.parse_args()
    if args.ship:
        print(f"added {ship_ir_trunk(args.out)} IR-trunk tensors of {args.out} to weights/aio-reid-trainable.*")
        return
    log = bind_ir_trunk(args.checkpoint, args.out, args.steps, args.identities, args.thermal_share, args.real_pairs,
                        args.learning_rate, args.seed, args.anchor_weight,
                        args.thermal_style, args.thermal_gate)
    print(f"bound the IR trunk: loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f} over {args.steps} steps; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
