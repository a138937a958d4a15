#!/usr/bin/env python
"""The text skip's learning curve: text -> RGB Rank-1 on the development identities against the number of captioned
training identities (see `modeling_aio.experiments.text_scaling`).

    python scripts/text_scaling.py --model aio-reid --split-file splits/dev_split.json

Reads `../shared/data` (CUHK-PEDES captions and photos); writes JSON (default `outputs/dev/aio-reid/text_scaling.json`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT, SHARED, SPLIT_FILE
from modeling_aio.experiments.text_scaling import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "aio-reid")
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400],
                        help="numbers of captioned training identities; every captioned identity is always added")
    parser.add_argument("--trials", type=int, default=2, help="draws of identities per size below all of them")
    parser.add_argument("--steps", type=int, default=1000, help="fit steps, as the shipped text alignment")
    parser.add_argument("--max-identities", type=int, default=4000, help="training recipe, as scripts/train.py")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--text-gallery-split", type=Path, default=None,
                        help="score on the full-size gallery of this split (splits/text_full_gallery.json)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "outputs" / "dev" / "aio-reid" / "text_scaling.json")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
