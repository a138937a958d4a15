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

import csv
import json
import random
from pathlib import Path

import torch
from PIL import Image

from ..checkpoint.paths import REPO_ROOT
from ..evaluation.thermal_pairs import BOXES_FILE, protocol_crops, read_boxes

SHARED = REPO_ROOT.parent / "shared" / "data"


def with_ir_trunk(model, thermal_gate: bool = False):
    """A copy of `model` (AIOModel) whose config adds an IR trunk, initialised from the shared trunk, and with
    `thermal_gate` an unfitted `AIOThermalGate` (IR then reads the shared trunk until the gate is fitted)."""
    from .. import AIOModel

    config = model.config.__class__.from_dict(model.config.to_dict())
    config.osnet_modality_trunks = tuple(sorted({*config.osnet_modality_trunks, "ir"}))
    config.ir_thermal_gate = thermal_gate
    grown = AIOModel(config).eval()
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    new = ("embeddings.modality_backbones.ir.", "embeddings.thermal_gate.")
    if unexpected or any(not key.startswith(new) for key in missing):
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
                  real_pairs: bool = True, learning_rate: float = 1e-4, seed: int = 0,
                  anchor_weight: float = 0.0, thermal_style: str = "prior",
                  thermal_gate: bool = False) -> list[dict[str, float]]:
    """Loads `checkpoint`, adds and binds an IR trunk, saves the result (weights, config, processor) to `out`.
    With `thermal_gate`, then fits the gate that sends only thermal IR queries to that trunk (`fit_gate`).
    `anchor_weight` > 0 keeps the trunk reading near-infrared (CAJ) views as the shared trunk does
    (`training.trunk_binding.trunk_anchor_loss`). Writes `binding_summary.json` beside the weights (the recipe,
    the loss, the gate's check, wall time and hardware), which `ship_ir_trunk` copies into the training summary."""
    import time

    from transformers import AutoProcessor

    from .. import AIOModel
    from ..training.trunk_binding import bind_modality_trunk

    started = time.time()
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = with_ir_trunk(AIOModel.from_pretrained(checkpoint), thermal_gate)
    examples, photos = training_examples(identities, seed, real_pairs, REPO_ROOT / "cache")
    log = bind_modality_trunk(model, processor.image_processor, "ir", examples, photos, out / "binding", steps,
                              learning_rate=learning_rate, seed=seed, thermal_share=thermal_share,
                              anchor_weight=anchor_weight, thermal_style=thermal_style)
    gate = fit_gate(model, processor.image_processor, seed) if thermal_gate else None
    model.save_pretrained(out)
    processor.save_pretrained(out)
    real = len(read_boxes(BOXES_FILE, split="train")) if real_pairs else 0
    summary = {"script": "scripts/experiment_thermal_binding.py", "steps": steps, "identities": identities,
               "real_train_pairs": real, "thermal_share": thermal_share, "thermal_style": thermal_style,
               "anchor_weight": anchor_weight, "learning_rate": learning_rate, "seed": seed,
               "loss": [log[0]["loss"], log[-1]["loss"]], "thermal_gate": gate,
               "seconds": round(time.time() - started),
               "hardware": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else "cuda"}
    (out / "binding_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return log


def fit_gate(model, image_processor, seed: int = 0, identities: int = 600) -> dict[str, float]:
    """Fits `model`'s thermal gate on synthetic views of `identities` training identities' photos and the real
    thermal crops of the train frames (three jitter draws), then prints and returns how often it fires on data it
    did not see: the real thermal crops of the test frames (should be 1) and grayscale views of every photo of the
    pooled development identities (should be 0)."""
    from processing_aio.synthesis import grayscale_ir

    from ..training.thermal_gate import fit_thermal_gate, gate_features, gate_images

    gate, shared = model.embeddings.thermal_gate, model.embeddings.image_backbone

    def features(images):
        return gate_features(gate, shared, image_processor(images, modality="ir", return_tensors="pt")["pixel_values"])

    cache = REPO_ROOT / "cache"
    _, photos = training_examples(identities, seed + 1, real_pairs=False, cache_dir=cache)
    real = [crop for draw in range(3) for crop in protocol_crops(
        SHARED / "thermal-pairs", read_boxes(BOXES_FILE, split="train"), cache / f"gate-train-j0.1-s{draw}", 0.1,
        draw)[1]]
    thermal, other = gate_images([path for paths in photos for path in paths[:2]], real, seed)
    accuracy = fit_thermal_gate(gate, features(thermal), features(other))
    test_thermal = protocol_crops(SHARED / "thermal-pairs", read_boxes(BOXES_FILE, split="test"),
                                  cache / "gate-test-j0.1-s0", 0.1, 0)[1]
    held = set(json.loads((REPO_ROOT / "splits" / "dev_split.json").read_text())["pooled_test_person_ids"])
    with open(SHARED / "CUHK-PEDES" / "index.csv", newline="") as handle:
        dev_photos = [SHARED / "CUHK-PEDES" / row["image"] for row in csv.DictReader(handle) if row["person_id"] in held]

    def fired(images) -> float:
        return float((gate.logits(features(images)) > 0).float().mean())

    fired_thermal = fired([Image.open(p) for p in test_thermal])
    fired_grey = fired([grayscale_ir(Image.open(p).convert("RGB")) for p in dev_photos])
    report = {"fit_accuracy": accuracy, "test_thermal_fired": fired_thermal, "grey_photos_fired": fired_grey}
    print(f"thermal gate: fit accuracy {accuracy:.3f}; fires on {fired_thermal:.3f} of the test-frame thermal crops "
          f"and {fired_grey:.3f} of {len(dev_photos)} grayscale photos")
    return report


def ship_ir_trunk(bound: Path, trainable: Path = REPO_ROOT / "weights" / "aio-reid-trainable.safetensors") -> int:
    """Adds the bound checkpoint's IR trunk (fp16) and, if it has one, its thermal gate (fp32, as fitted and
    measured: four tensors of a few hundred numbers) to the shipped trainable weights, and `ir` to the shape file's `osnet_modality_trunks` (with
    `ir_thermal_gate` and the modules it lists), each file written whole (temporary name, then rename); how many
    tensors were added; the binding's summary goes into `training_summary.json` beside them as `ir_trunk`.
    `make checkpoint` then builds aio-reid/ with it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..search.storage import atomic_write

    trunk_prefix, gate_prefix = "embeddings.modality_backbones.ir.", "embeddings.thermal_gate."
    bound_weights = load_file(str(bound / "model.safetensors"))
    trunk = {k: v.half().contiguous() for k, v in bound_weights.items() if k.startswith(trunk_prefix)}
    gate = {k: v.float().contiguous() for k, v in bound_weights.items() if k.startswith(gate_prefix)}
    if not trunk:
        raise ValueError(f"{bound}/model.safetensors has no IR trunk ({trunk_prefix}*).")
    with safe_open(str(trainable), "pt") as handle:
        metadata = handle.metadata()
    weights = {k: v for k, v in load_file(str(trainable)).items() if not k.startswith((trunk_prefix, gate_prefix))}
    temporary = trainable.with_name(trainable.name + ".tmp")
    save_file({**weights, **trunk, **gate}, str(temporary),
              metadata={**(metadata or {}), "ir_trunk": "scripts/experiment_thermal_binding.py"})
    temporary.replace(trainable)
    shape_file = trainable.with_suffix(".json")
    shapes = json.loads(shape_file.read_text())
    shapes["osnet_modality_trunks"] = sorted({*shapes["osnet_modality_trunks"], "ir"})
    shapes["ir_thermal_gate"] = bool(gate)
    modules = set(shapes.get("trained_modules", [])) - {"embeddings.thermal_gate"}
    shapes["trained_modules"] = sorted(modules | ({"embeddings.thermal_gate"} if gate else set()))
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())
    summary_file = trainable.parent / "training_summary.json"
    if (bound / "binding_summary.json").exists() and summary_file.exists():
        summary = json.loads(summary_file.read_text())
        summary["ir_trunk"] = json.loads((bound / "binding_summary.json").read_text())
        atomic_write(summary_file, (json.dumps(summary, indent=1) + "\n").encode())
    return len(trunk) + len(gate)


__all__ = ["with_ir_trunk", "training_examples", "bind_ir_trunk", "fit_gate", "ship_ir_trunk"]
