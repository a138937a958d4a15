#!/usr/bin/env python
"""Stage 0 (distilling 0277 into the shared 0267 trunk) measured on training-side identities held aside
(see `modeling_aio.experiments.distill_holdout`).

    python scripts/distill_holdout.py --reference
    python scripts/distill_holdout.py --steps 600 --schedule cosine --bf16 --supervised 1

Reads `../shared` (the pooled CUHK-PEDES images and the 0277 IR; needs `openvino`); prints and writes JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from modeling_aio.checkpoint.paths import REPO_ROOT, SPLIT_FILE
from modeling_aio.experiments.distill_holdout import TEACHER, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
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
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "distill-holdout")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
