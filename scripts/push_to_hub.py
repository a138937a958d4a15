#!/usr/bin/env python
"""Upload the `aio-reid` checkpoint folder to the Hugging Face Hub (see `modeling_aio.checkpoint.hub`).

`--dry-run` prints the upload plan (files, sizes) and checks that the weights are safetensors only. Without a network
the script fails within seconds with a clear message instead of hanging in retries.

Usage: python scripts/push_to_hub.py REPO_ID [--folder aio-reid] [--private] [--dry-run]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.hub import push_to_hub
from modeling_aio.checkpoint.paths import REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_id", help="Hub repository, e.g. your-name/aio-reid")
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / "aio-reid", help="checkpoint folder to upload")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--dry-run", action="store_true", help="print the upload plan and exit")
    args = parser.parse_args()
    push_to_hub(args.folder, args.repo_id, args.private, args.dry_run)


if __name__ == "__main__":
    main()
