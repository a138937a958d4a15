#!/usr/bin/env python
"""Real against synthetic thermal: for the train-frame pairs of splits/thermal_pairs_boxes.csv, how much each IR
synthesis of the visible crop looks like the real thermal crop (pixel correlation, intensity gaps), and a picture of
visible | real | synthetic crops. The picture holds ../shared pixels, so it goes to outputs/ (not committed: the
data's terms forbid redistribution)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.evaluation.thermal_pairs import compare_syntheses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "thermal-pairs")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "thermal-real-vs-synthetic.png")
    compare_syntheses(**vars(parser.parse_args()))


if __name__ == "__main__":
    main()
