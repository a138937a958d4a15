#!/usr/bin/env python
"""Search the bundled PKU-Sketch demo gallery (24 photos of 12 people) by a text, a sketch and an IR query
(see `modeling_aio.search.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.search.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(REPO_ROOT / "aio-reid"), help="checkpoint folder")
    parser.add_argument("-k", type=int, default=5, help="results shown per query")
    args = parser.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"error: no checkpoint at {args.model}; run `python scripts/build_checkpoint.py` first.")
    run_demo(args.model, args.k)


if __name__ == "__main__":
    main()
