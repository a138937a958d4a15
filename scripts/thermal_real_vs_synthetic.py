#!/usr/bin/env python
"""Real against synthetic thermal: for the train-frame pairs of splits/thermal_pairs_boxes.csv, how much each IR
synthesis of the visible crop looks like the real thermal crop (pixel correlation, intensity gaps), and a picture of
visible | real | synthetic crops, written to docs/figures/ where docs/thermal.md shows it. The picture holds
../shared pixels, so .gitignore keeps it out of the repository (the data's terms forbid redistribution): it exists
on machines that have the data, after this script has run."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.evaluation.thermal_pairs import compare_syntheses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "thermal-pairs")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "figures" / "thermal-real-vs-synthetic.png")
    compare_syntheses(**vars(parser.parse_args()))


if __name__ == "__main__":
    main()
