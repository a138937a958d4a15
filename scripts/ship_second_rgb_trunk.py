#!/usr/bin/env python
"""Gives the shipped weights a second RGB trunk (0267) with share S of RGB-to-RGB similarity (`AIOConfig.
second_rgb_trunk_share`; 0 removes it), by recording S in their shape file; then `make checkpoint` builds it.

    python scripts/ship_second_rgb_trunk.py --share 0.33 && make checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.build import ship_second_rgb_trunk
from modeling_aio.checkpoint.paths import DEFAULT_TRAINED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", type=float, required=True, help="share in [0, 1) of the second trunk")
    parser.add_argument("--trainable", type=Path, default=DEFAULT_TRAINED, help="trained weights to give it")
    args = parser.parse_args()
    ship_second_rgb_trunk(args.trainable, args.share)
    print(f"{args.trainable.with_suffix('.json')}: second_rgb_trunk_share {args.share}")


if __name__ == "__main__":
    main()
