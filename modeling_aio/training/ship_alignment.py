"""Shipping a trained text-aligned part (`training.text_alignment`'s output) into the trained weights that
`scripts/build_checkpoint.py` builds `aio-reid/` from: its tensors, its shape in the weights' JSON, its summary in
`training_summary.json`, each file written whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..configuration_aio import OSNET_STAGES, AIOConfig
from ..text_alignment_aio import ALIGNMENT_QUERY_KINDS
from .text_alignment import PART_PREFIXES


def _branches_from_second_trunk(state: dict[str, torch.Tensor], stage: str) -> bool:
    """Whether a tuned trunk (`text_alignment_rgb_trunk.*` of `state`) equals the second RGB trunk in every stage
    below `stage`, stem included, so that it can branch from it (`AIOConfig.text_alignment_trunk_from`)."""
    below = ("in_first.", "conv1.", *(f"{name}." for name in OSNET_STAGES[:OSNET_STAGES.index(stage)]))
    prefix = "text_alignment_rgb_trunk."
    lower = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):].startswith(below)}
    return bool(lower) and all(torch.equal(v, state.get(f"second_rgb_trunk.{k}", torch.empty(0)))
                               for k, v in lower.items())


def ship_text_alignment(aligned: Path, trainable: Path) -> int:
    """Adds the aligned checkpoint's two heads (fp16; a tuned part's own trunk and layers with them) and its shares
    (fp32, one per kind of query, as chosen) to the shipped trainable weights, the part's size and modules to their
    shape file, and its summary to `training_summary.json` (as `text_alignment_heads`, each share with its held-out
    Rank-1 / mAP only), each file written whole; returns how many tensors were added. A tuned trunk trained from a
    stage up (`--tune-trunk-from`) whose stages below are still the second RGB trunk's ships those top stages only,
    as a branch of the second trunk (`AIOConfig.text_alignment_trunk_from`): the same vectors for less compute."""
    from ..search.storage import atomic_write

    found = load_file(str(aligned / "model.safetensors"))
    heads = {k: (v.float() if k == "alignment_shares" else v.half()).contiguous() for k, v in found.items()
             if k.startswith(PART_PREFIXES) and not k.endswith("num_batches_tracked")}
    if "alignment_shares" not in heads:
        raise ValueError(f"{aligned}/model.safetensors has no text-aligned part ({PART_PREFIXES[0]}*).")
    config = json.loads((aligned / "config.json").read_text())
    shape_file = trainable.with_suffix(".json")
    shapes = json.loads(shape_file.read_text())
    trunk = config.get("text_alignment_trunk", "shared")
    summary_path = aligned / "text_alignment_summary.json"
    branch = json.loads(summary_path.read_text()).get("trunk_from") if summary_path.exists() else None
    if branch is not None and not _branches_from_second_trunk(found, branch):
        branch = None  # its lower stages are not the second trunk's: it ships whole
    if branch is not None:  # only the stages that trained; the second trunk computes those below
        top = tuple(f"text_alignment_rgb_trunk.{name}." for name in OSNET_STAGES[OSNET_STAGES.index(branch):])
        heads = {k: v for k, v in heads.items() if not k.startswith("text_alignment_rgb_trunk.") or k.startswith(top)}
    part = {"text_alignment_size": config["text_alignment_size"], "text_alignment_trunk": trunk,
            "text_alignment_tuned_layers": config.get("text_alignment_tuned_layers", 0),
            "text_alignment_trunk_from": branch}
    try:  # the config's own rules, checked before anything is written
        AIOConfig(image_tokenizer="osnet", encoder_config=config["encoder_config"],
                  second_rgb_trunk_share=shapes.get("second_rgb_trunk_share", 0.0), **part)
    except ValueError as error:
        raise ValueError(f"{aligned}'s text-aligned part cannot join {trainable} ({error}); a part that reads the "
                         "second RGB trunk needs scripts/ship_second_rgb_trunk.py --share S first.") from error
    with safe_open(str(trainable), "pt") as handle:
        metadata = handle.metadata()
    weights = {k: v for k, v in load_file(str(trainable)).items() if not k.startswith(PART_PREFIXES)}
    atomic_write(trainable, save({**weights, **heads},
                                 metadata={**(metadata or {}), "text_alignment": "scripts/train_text_alignment.py"}))
    shapes["text_alignment_size"] = config["text_alignment_size"]
    shapes["text_alignment_hidden"] = config["text_alignment_hidden"]
    shapes["text_alignment_layers"] = config.get("text_alignment_layers", 0)
    shapes["text_alignment_trunk"] = trunk
    shapes["text_alignment_tuned_layers"] = part["text_alignment_tuned_layers"]
    shapes.pop("text_alignment_trunk_from", None)
    if branch is not None:
        shapes["text_alignment_trunk_from"] = branch
    modules = {"text_alignment_image", "text_alignment_text", "alignment_shares"}
    shapes["trained_modules"] = sorted(set(shapes.get("trained_modules", [])) - {"text_alignment_rgb_trunk"}
                                       | modules | ({"text_alignment_rgb_trunk"} if trunk == "tuned" else set()))
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())
    summary_file = trainable.parent / "training_summary.json"
    if (aligned / "text_alignment_summary.json").exists() and summary_file.exists():
        summary = json.loads(summary_file.read_text())
        record = json.loads((aligned / "text_alignment_summary.json").read_text())
        # the chosen shares and their held-out figures; the whole grid stays in the run's own summary
        chosen = {k: v for k, v in record.get("shares", {}).items() if not k.endswith("_rank1_map")}
        for kind in ALIGNMENT_QUERY_KINDS:
            grid = record.get("shares", {}).get(f"{kind}_rank1_map", {})
            if kind in chosen and str(chosen[kind]) in grid:
                chosen[f"{kind}_rank1_map_at_share"] = grid[str(chosen[kind])]
        summary["text_alignment_heads"] = {**record, "shares": chosen}
        atomic_write(summary_file, (json.dumps(summary, indent=1) + "\n").encode())
    return len(heads)


def branch_tuned_trunk(trainable: Path, stage: str) -> int:
    """Makes the shipped tuned trunk of the text-aligned part (`text_alignment_rgb_trunk.*` in the trained weights
    `trainable`) a branch of the second RGB trunk from `stage` up (`AIOConfig.text_alignment_trunk_from`): its own
    stem and stages below `stage` are dropped, so its top stages read the plain 0267's map, computed once for both
    trunks. Nothing retrains; unlike a trunk trained from `stage` up (`ship_text_alignment`), the vectors change, so
    the result is measured before it ships. Records the branch in the shape file and `training_summary.json`; every
    file is written whole. Returns how many tensors were dropped."""
    from ..search.storage import atomic_write

    shape_file = trainable.with_suffix(".json")
    if not shape_file.exists():
        raise ValueError(f"{shape_file} (the shapes the weights were trained with) is missing.")
    shapes = json.loads(shape_file.read_text())
    if stage not in OSNET_STAGES:
        raise ValueError(f"stage {stage!r} must be one of {OSNET_STAGES}.")
    if shapes.get("text_alignment_trunk") != "tuned":
        raise ValueError(f"{trainable} has no tuned trunk in its text-aligned part (text_alignment_trunk "
                         f"{shapes.get('text_alignment_trunk')!r}); there is nothing to branch.")
    current = shapes.get("text_alignment_trunk_from")
    if current is not None and OSNET_STAGES.index(stage) < OSNET_STAGES.index(current):
        raise ValueError(f"{trainable}'s tuned trunk already branches from {current}: its stages below are gone, so "
                         f"it cannot branch from the lower {stage}.")
    AIOConfig(image_tokenizer="osnet", text_alignment_size=shapes.get("text_alignment_size", 0),
              second_rgb_trunk_share=shapes.get("second_rgb_trunk_share", 0.0), text_alignment_trunk="tuned",
              text_alignment_trunk_from=stage)  # the config's own rules (a second trunk to branch from), checked first
    prefix = "text_alignment_rgb_trunk."
    top = tuple(f"{prefix}{name}." for name in OSNET_STAGES[OSNET_STAGES.index(stage):])
    with safe_open(str(trainable), "pt") as handle:
        metadata = handle.metadata()
    weights = load_file(str(trainable))
    kept = {k: v for k, v in weights.items() if not k.startswith(prefix) or k.startswith(top)}
    atomic_write(trainable, save(kept, metadata=metadata))
    shapes["text_alignment_trunk_from"] = stage
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())
    summary_file = trainable.parent / "training_summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if "text_alignment_heads" in summary:
            summary["text_alignment_heads"]["branched_from"] = stage
            atomic_write(summary_file, (json.dumps(summary, indent=1) + "\n").encode())
    return len(weights) - len(kept)


__all__ = ["branch_tuned_trunk", "ship_text_alignment"]
