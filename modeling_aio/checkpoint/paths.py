"""Where the repository keeps what a checkpoint is built from: the shipped weights and the model card.

These live in a source checkout (`weights/`, `model_cards/`), beside the package folder; an installed wheel has the
package only and builds nothing.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root of a source checkout (the folder that holds `modeling_aio/`).
REPO_ROOT: Path = Path(__file__).resolve().parents[2]
WEIGHTS_DIR: Path = REPO_ROOT / "weights"
#: OSNet 0267 (Intel Open Model Zoo, Apache-2.0), converted by `scripts/convert_osnet.py`.
OSNET_0267_WEIGHTS: Path = WEIGHTS_DIR / "osnet-0267.safetensors"
#: The trained tokenizer / head weights that `build_checkpoint` merges (written by `scripts/train.py`).
DEFAULT_TRAINED: Path = WEIGHTS_DIR / "aio-reid-trainable.safetensors"
MODEL_CARD: Path = REPO_ROOT / "model_cards" / "aio-reid" / "README.md"
SPLIT_FILE: Path = REPO_ROOT / "splits" / "dev_split.json"
#: A whole source (CUHK01) that training leaves out, for the cross-domain RGB protocol.
CROSS_DOMAIN_SPLIT_FILE: Path = REPO_ROOT / "splits" / "cross_domain_cuhk01.json"
#: The full-size text -> RGB development protocol: the development captions among every held-out identity's photos.
TEXT_GALLERY_SPLIT_FILE: Path = REPO_ROOT / "splits" / "text_full_gallery.json"
#: The `../shared` folder beside the checkout: data and peer weights that never enter the repository.
SHARED: Path = REPO_ROOT.parent / "shared"
