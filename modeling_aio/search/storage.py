"""Files that are whole or absent: atomic writes (temporary name, fsync, rename) and SHA-256 checksums, so that an
index interrupted at any write never loads as if it were complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np


def atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, flushes it to disk, then renames it over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Makes renames and removals in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove(path: Path) -> None:
    """Removes `path` if it exists, durably."""
    if Path(path).exists():
        Path(path).unlink()
        sync_directory(Path(path).parent)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def json_bytes(value) -> bytes:
    return json.dumps(value, indent=1).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Config keys that saving or loading a checkpoint sets: not part of what a model computes.
LOADING_CONFIG_KEYS = ("_name_or_path", "transformers_version", "_commit_hash", "auto_map", "architectures", "dtype",
                       "torch_dtype")


def update_with_weights(digest, module) -> None:
    """Feeds every tensor of `module` (name, dtype, shape, bytes; by name) to the hash `digest`: what a model's
    fingerprint and an exported graph's record are made of."""
    import torch

    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def read_checked(path: Path, expected: dict) -> bytes:
    """The bytes of `path`, refused (naming the file) unless their size and SHA-256 are `expected`'s."""
    if not Path(path).is_file():
        raise ValueError(f"{path} is missing; the index is incomplete: run `aio-reid index` again.")
    data = Path(path).read_bytes()
    if len(data) != expected["bytes"] or sha256(data) != expected["sha256"]:
        raise ValueError(f"{path} does not match its checksum in manifest.json ({len(data)} bytes, expected "
                         f"{expected['bytes']}): the file was changed or cut short; run `aio-reid index` again.")
    return data


def load_npy(data: bytes, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{name} is not a readable .npy array ({error}).") from None


def load_json(data: bytes, name: str):
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{name} is not valid JSON ({error}).") from None


__all__ = ["atomic_write", "remove", "sync_directory", "npy_bytes", "json_bytes", "sha256", "read_checked",
           "load_npy", "load_json", "LOADING_CONFIG_KEYS", "update_with_weights"]
