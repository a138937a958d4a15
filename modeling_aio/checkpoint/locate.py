"""Where a model name points: a checkpoint folder, the one `make demo` built, or a Hub repository.

`aio-reid` (the default name) is looked up like the Hub cache: a folder of that name in the current directory, then
`$AIO_REID_MODEL`, then `$AIO_REID_HOME/aio-reid` (default `~/.cache/aio-reid/aio-reid`), which
`scripts/build_checkpoint.py` links to the checkpoint it builds at the repository's `aio-reid/`. Other names go to the
Hub, unless `HF_HUB_OFFLINE` is set or the Hub cannot be reached: then the error comes at once and says what to pass.
"""

from __future__ import annotations

import os
from pathlib import Path

from .hub import hub_reachable as endpoint_reachable

DEFAULT_MODEL = "aio-reid"
HUB_ENDPOINT = "https://huggingface.co"


def aio_reid_home() -> Path:
    """`$AIO_REID_HOME`, default `~/.cache/aio-reid`."""
    return Path(os.environ.get("AIO_REID_HOME", Path.home() / ".cache" / "aio-reid")).expanduser()


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub (`$HF_ENDPOINT`, as huggingface_hub reads it): seconds, where from_pretrained's
    retries take half a minute."""
    return endpoint_reachable(os.environ.get("HF_ENDPOINT", HUB_ENDPOINT), timeout)


def resolve_model(name: str | Path) -> str:
    """A checkpoint folder or Hub id for `from_pretrained`, or a `FileNotFoundError` that says what to pass."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise FileNotFoundError(f"{name} is a file; pass a checkpoint folder (with config.json and model.safetensors).")
    looked = [f"no folder {str(name)!r} in {Path.cwd()}"]
    if str(name) == DEFAULT_MODEL:
        configured = os.environ.get("AIO_REID_MODEL")
        if configured and Path(configured).expanduser().is_dir():
            return str(Path(configured).expanduser())
        looked.append(f"AIO_REID_MODEL={configured!r} is not a folder" if configured else "AIO_REID_MODEL is not set")
        linked = aio_reid_home() / DEFAULT_MODEL
        if linked.is_dir():
            return str(linked)
        looked.append(f"nothing at {linked}")
    elif "/" in str(name).strip("/") and str(name).count("/") == 1 and not str(name).startswith((".", "/", "~")):
        if not hub_offline() and hub_reachable():
            return str(name)
        looked.append("HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached")
    raise FileNotFoundError(
        f"no checkpoint {str(name)!r}: {'; '.join(looked)}. `make demo` in the aio-reid repository builds "
        f"aio-reid/ and links it at {aio_reid_home() / DEFAULT_MODEL}; or pass --model PATH (a checkpoint folder), or "
        "set AIO_REID_MODEL=PATH.")


def load_model(name: str | Path, **kwargs):
    """`AutoModel.from_pretrained` of `resolve_model(name)` after `check_checkpoint_folder`: a folder of another
    model type, with pickled or cut-short weights, or a config transformers cannot read is an `OSError` naming the
    file, never a model of another kind or a raw library traceback."""
    from transformers import AutoModel

    from ..checks_aio import check_checkpoint_folder

    path = resolve_model(name)
    if Path(path).is_dir():
        check_checkpoint_folder(Path(path))
    try:
        return AutoModel.from_pretrained(path, **kwargs), path
    except ValueError as error:  # transformers' own errors, e.g. a config.json it cannot parse
        raise OSError(f"{path}: the checkpoint's model files cannot be loaded ({error}).") from None


def link_default(folder: Path) -> Path:
    """Points `$AIO_REID_HOME/aio-reid` at `folder` (a symlink, replaced if it exists), so `aio-reid` resolves to it
    from any directory; returns the link."""
    link = aio_reid_home() / DEFAULT_MODEL
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} is a folder, not a link; remove it or set AIO_REID_HOME elsewhere.")
    link.symlink_to(Path(folder).resolve(), target_is_directory=True)
    return link


__all__ = ["resolve_model", "load_model", "link_default", "aio_reid_home", "hub_offline", "DEFAULT_MODEL"]
