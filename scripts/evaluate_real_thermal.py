#!/usr/bin/env python
"""The real-thermal development protocol: each thermal crop of the held-out thermal/visible pairs
(splits/thermal_pairs_boxes.csv, split `test`) searched among all their visible crops, boxes jittered on both sides.

    python scripts/evaluate_real_thermal.py --model aio-reid omz-0277 osnet-0267
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.evaluation.thermal_pairs import BOXES_FILE, evaluate_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[str(REPO_ROOT / "aio-reid")],
                        help="checkpoint folders or peers (omz-0277, osnet-0267, openvino:PATH.xml), measured in one run")
    parser.add_argument("--root", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "thermal-pairs")
    parser.add_argument("--boxes", type=Path, default=BOXES_FILE)
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--jitter", type=float, default=0.1, help="box shift and scale, as a share of its size")
    parser.add_argument("--seeds", type=int, default=3, help="jitter draws averaged")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "cache" / "embeddings")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "outputs" / "eval-real-thermal.json")
    evaluate_models(parser.parse_args())


if __name__ == "__main__":
    main()
