#!/usr/bin/env python
"""Upload the `aio-reid` checkpoint folder to the Hugging Face Hub with `huggingface_hub.upload_folder`.

`--dry-run` prints the upload plan (files, sizes) and checks that the weights are safetensors only. Without a network
the script fails within seconds with a clear message instead of hanging in retries.

Usage: python scripts/push_to_hub.py REPO_ID [--folder aio-reid] [--private] [--dry-run]
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
REQUIRED = ("config.json", "model.safetensors")
DERIVED_FOLDERS = {"onnx", "openvino"}  # exports rebuilt by `aio-reid export`; OpenVINO's .bin is not uploaded


def upload_plan(folder: Path) -> list[tuple[str, int]]:
    """Files that would be uploaded, refusing pickled weights and incomplete checkpoints."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; build it with `python scripts/build_checkpoint.py`.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts
                   and not set(p.relative_to(folder).parts[:1]) & DERIVED_FOLDERS)
    pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise SystemExit(f"error: {folder} holds pickled weights {pickles}; only safetensors are published.")
    names = {p.relative_to(folder).as_posix() for p in files}
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise SystemExit(f"error: {folder} is not a complete checkpoint, missing {missing}.")
    return [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files]


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub's host: fail fast offline instead of waiting for HTTP retries."""
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_id", help="Hub repository, e.g. your-name/aio-reid")
    parser.add_argument("--folder", type=Path, default=REPO / "aio-reid")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the upload plan and exit")
    args = parser.parse_args()

    plan = upload_plan(args.folder)
    print(f"upload plan for {args.repo_id} from {args.folder} (safetensors only; exported onnx/ and openvino/ "
          "folders are left out, `aio-reid export` rebuilds them):")
    for name, size in plan:
        print(f"  {name:36s} {size:>14,d} bytes")
    print(f"  {len(plan)} files, {sum(s for _, s in plan) / 2**20:,.1f} MiB in all")
    if args.dry_run:
        return

    from huggingface_hub import HfApi, constants

    if not hub_reachable(constants.ENDPOINT):
        sys.exit(f"error: cannot reach {constants.ENDPOINT} (no network?); nothing was uploaded. "
                 "Use --dry-run to check the plan offline.")
    api = HfApi()
    api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=args.repo_id, folder_path=str(args.folder), repo_type="model",
                               commit_message="Upload aio-reid checkpoint",
                               ignore_patterns=["*.bin", "*.pt", "*.pth", "onnx/*", "openvino/*"])
    print(f"uploaded: {commit}")


if __name__ == "__main__":
    main()
