"""Binding an infrared trunk of its own to the photo embeddings, on synthetic thermal views of training photos and
the real thermal crops of the `train` frames of the thermal/visible pairs (issue 21).

The shipped model reads IR queries with the shared RGB trunk (and an IR tokenizer trained on channel-augmented
views), so a real thermal crop (a bright silhouette) lands far from its person's photos. Here the checkpoint gets an
IR trunk (`AIOConfig.osnet_modality_trunks`), a copy of the shared one, trained as the sketch trunk was
(`training.trunk_binding`): each IR view is classified among photo prototypes. Training identities' photos give
synthetic views (`thermal_share` of them thermal, the rest CAJ); each real training pair is an identity of its own
whose prototype is its visible crop. The gallery (RGB) embedding does not change.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..checkpoint.paths import REPO_ROOT
from ..evaluation.thermal_pairs import BOXES_FILE, protocol_crops, read_boxes

SHARED = REPO_ROOT.parent / "shared" / "data"


def with_ir_trunk(model):
    """A copy of `model` (AIOModel) whose config adds an IR trunk, initialised from the shared trunk."""
    from .. import AIOModel

    config = model.config.__class__.from_dict(model.config.to_dict())
    config.osnet_modality_trunks = tuple(sorted({*config.osnet_modality_trunks, "ir"}))
    grown = AIOModel(config).eval()
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith("embeddings.modality_backbones.ir.") for key in missing):
        raise RuntimeError(f"unexpected state-dict difference: missing {missing[:3]}, unexpected {unexpected[:3]}")
    grown.embeddings.modality_backbones["ir"].load_state_dict(grown.embeddings.image_backbone.state_dict())
    return grown


def training_examples(identities: int, seed: int, real_pairs: bool, cache_dir: Path,
                      real_repeats: int = 4) -> tuple[list[dict], list[list[str]]]:
    """Binding examples: one synthetic IR view per photo of `identities` training identities (two photos or more),
    and, with `real_pairs`, each train-frame thermal crop `real_repeats` times (jittered anew by the collator's crop)
    labelled with its own visible crop as the prototype."""
    from ..training.recipe import build_items, shared_recipe

    records = shared_recipe(REPO_ROOT / "splits" / "dev_split.json", None, seed)
    items, _ = build_items(records)
    by_label: dict[int, list[str]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(str(item.image))
    labels = sorted(label for label, paths in by_label.items() if len(paths) >= 2)
    chosen = random.Random(seed).sample(labels, min(identities, len(labels)))
    photos = [by_label[label][:4] for label in chosen]
    examples = [{"image": path, "labels": index, "synthesize": True}
                for index, paths in enumerate(photos) for path in paths]
    if real_pairs:
        boxes = read_boxes(BOXES_FILE, split="train")
        visible, thermal = protocol_crops(SHARED / "thermal-pairs", boxes, cache_dir / "thermal-train-crops", 0.0, 0)
        for photo, crop in zip(visible, thermal):
            photos.append([photo])
            examples += [{"image": crop, "labels": len(photos) - 1, "synthesize": False}] * real_repeats
    return examples, photos


def bind_ir_trunk(checkpoint: Path, out: Path, steps: int = 200, identities: int = 300, thermal_share: float = 0.5,
                  real_pairs: bool = True, learning_rate: float = 1e-4, seed: int = 0) -> list[dict[str, float]]:
    """Loads `checkpoint`, adds and binds an IR trunk, saves the result (weights, config, processor) to `out`."""
    from transformers import AutoProcessor

    from .. import AIOModel
    from ..training.trunk_binding import bind_modality_trunk

    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = with_ir_trunk(AIOModel.from_pretrained(checkpoint))
    examples, photos = training_examples(identities, seed, real_pairs, REPO_ROOT / "cache")
    log = bind_modality_trunk(model, processor.image_processor, "ir", examples, photos, out / "binding", steps,
                              learning_rate=learning_rate, seed=seed, thermal_share=thermal_share)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return log


def ship_ir_trunk(bound: Path, trainable: Path = REPO_ROOT / "weights" / "aio-reid-trainable.safetensors") -> int:
    """Adds the bound checkpoint's IR trunk (fp16) to the shipped trainable weights and `ir` to the shape file's
    `osnet_modality_trunks`, each file written whole (temporary name, then rename); how many tensors were added.
    `make checkpoint` then builds aio-reid/ with it."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..search.storage import atomic_write

    prefix = "embeddings.modality_backbones.ir."
    trunk = {k: v.half().contiguous() for k, v in load_file(str(bound / "model.safetensors")).items()
             if k.startswith(prefix)}
    if not trunk:
        raise ValueError(f"{bound}/model.safetensors has no IR trunk ({prefix}*).")
    with safe_open(str(trainable), "pt") as handle:
        metadata = handle.metadata()
    weights = {k: v for k, v in load_file(str(trainable)).items() if not k.startswith(prefix)}
    temporary = trainable.with_name(trainable.name + ".tmp")
    save_file({**weights, **trunk}, str(temporary), metadata={**(metadata or {}), "ir_trunk": "scripts/"
                                                              "experiment_thermal_binding.py"})
    temporary.replace(trainable)
    shape_file = trainable.with_suffix(".json")
    shapes = json.loads(shape_file.read_text())
    shapes["osnet_modality_trunks"] = sorted({*shapes["osnet_modality_trunks"], "ir"})
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())
    return len(trunk)


__all__ = ["with_ir_trunk", "training_examples", "bind_ir_trunk", "ship_ir_trunk"]
