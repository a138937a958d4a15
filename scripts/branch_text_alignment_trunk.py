#!/usr/bin/env python
"""Makes the shipped text-aligned part's tuned trunk a branch of the second RGB trunk from a stage up
(`AIOConfig.text_alignment_trunk_from`): a photo then runs the stem and the stages below once for both trunks.
Nothing retrains; the tuned trunk's own lower stages are dropped, so measure the result before shipping it.

    python scripts/branch_text_alignment_trunk.py --from conv3 && make checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import DEFAULT_TRAINED
from modeling_aio.configuration_aio import OSNET_STAGES
from modeling_aio.training.ship_alignment import branch_tuned_trunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="stage", required=True, choices=OSNET_STAGES, help="first stage of the branch")
    parser.add_argument("--trainable", type=Path, default=DEFAULT_TRAINED, help="trained weights to change")
    args = parser.parse_args()
    dropped = branch_tuned_trunk(args.trainable, args.stage)
    print(f"{args.trainable}: tuned trunk branches from {args.stage} ({dropped} tensors dropped)")


if __name__ == "__main__":
    main()
