"""Publishing a checkpoint folder to the Hugging Face Hub with `huggingface_hub.upload_folder`: safetensors only,
complete checkpoints only, and a fast, clear failure without a network instead of retries.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

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


def push_to_hub(folder: Path, repo_id: str, private: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
    """Prints the upload plan and, unless `dry_run`, uploads it; returns the plan."""
    plan = upload_plan(folder)
    print(f"upload plan for {repo_id} from {folder} (safetensors only; exported onnx/ and openvino/ "
          "folders are left out, `aio-reid export` rebuilds them):")
    for name, size in plan:
        print(f"  {name:36s} {size:>14,d} bytes")
    print(f"  {len(plan)} files, {sum(s for _, s in plan) / 2**20:,.1f} MiB in all")
    if dry_run:
        return plan

    from huggingface_hub import HfApi, constants

    if not hub_reachable(constants.ENDPOINT):
        raise SystemExit(f"error: cannot reach {constants.ENDPOINT} (no network?); nothing was uploaded. "
                 "Use --dry-run to check the plan offline.")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               commit_message="Upload aio-reid checkpoint",
                               ignore_patterns=["*.bin", "*.pt", "*.pth", "onnx/*", "openvino/*"])
    print(f"uploaded: {commit}")
    return plan


__all__ = ["upload_plan", "hub_reachable", "push_to_hub"]
