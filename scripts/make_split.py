#!/usr/bin/env python
"""Write the fixed development split (`splits/dev_split.json`): identities of `../shared/data` kept out of training
(see `modeling_aio.evaluation.split`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modeling_aio.checkpoint.paths import SHARED, SPLIT_FILE
from modeling_aio.evaluation.split import make_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=SHARED / "data", help="the ../shared/data folder")
    parser.add_argument("--out", type=Path, default=SPLIT_FILE, help="split file to write")
    args = parser.parse_args()
    split = make_split(args.data_root)
    args.out.write_text(json.dumps(split, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k}={len(v)}" for k, v in split.items() if isinstance(v, list)))


if __name__ == "__main__":
    main()
