#!/usr/bin/env python
"""Detect people on the visible frames of ../shared's thermal/visible pairs (OpenCV HOG) and write their boxes to
splits/thermal_pairs_boxes.csv (boxes only, no pixels), with contact sheets of the visible / thermal crops to check
by eye; a box judged wrong is marked keep=0 in the CSV by hand (`--reject` marks a list of them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.evaluation.thermal_pairs import BOXES_FILE, detect_and_review


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "thermal-pairs")
    parser.add_argument("--out", type=Path, default=BOXES_FILE)
    parser.add_argument("--sheets", type=Path, default=REPO_ROOT / "outputs" / "thermal-sheets",
                        help="where the numbered contact sheets go")
    parser.add_argument("--reject", default="", help="comma-separated row numbers (as on the sheets) to mark keep=0")
    args = parser.parse_args()
    detect_and_review(args.root, args.out, args.sheets, [int(n) for n in args.reject.split(",") if n.strip()])


if __name__ == "__main__":
    main()
