"""A text-aligned part whose towers were fine-tuned elsewhere: `experiments.text_finetune` trains 0267 and MiniLM's
top layers end to end where an accelerator is and writes them as a towers file; here they go into an `AIOModel`
(`install_tuned_towers`), get their shares on held-out people and are saved for `ship_alignment.ship_text_alignment`
(`run_tuned_alignment`, `scripts/train_text_alignment.py --tuned-towers`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .text_alignment import PART_PREFIXES, add_text_alignment, choose_shares_on, held_out_people


def install_tuned_towers(model, towers: Path) -> dict:
    """Loads what `experiments.text_finetune` trained (`save_towers`' file) into `model`'s text-aligned part (an
    `AIOModel` made by `add_text_alignment(..., trunk="tuned", tuned_layers=k)` with the same k and widths): the
    image tower's trunk and head, the text head and MiniLM's tuned top layers. Every tensor of the file must land
    and every tensor of the part must come from it; returns the variant and scores recorded in the file."""
    import json

    from safetensors import safe_open

    config = model.config
    layers = config.encoder_config.num_hidden_layers
    tuned = config.text_alignment_tuned_layers
    if config.text_alignment_trunk != "tuned":
        raise ValueError("install_tuned_towers needs a model whose text-aligned part has its own trunk "
                         "(`text_alignment_trunk='tuned'`).")

    def model_key(key: str) -> str:
        if key.startswith("image.trunk."):
            return "text_alignment_rgb_trunk." + key[len("image.trunk."):]
        if key.startswith("image."):
            return "text_alignment_image." + key[len("image."):]
        if key.startswith("text.encoder.encoder.layer."):
            index, rest = key[len("text.encoder.encoder.layer."):].split(".", 1)
            return f"text_alignment_text.tuned_layers.{int(index) - (layers - tuned)}.{rest}"
        return "text_alignment_text." + key[len("text."):]

    with safe_open(str(towers), "pt") as handle:
        metadata = handle.metadata() or {}
        loaded = {model_key(key): handle.get_tensor(key) for key in handle.keys()}
    own = {k: v for k, v in model.state_dict().items()
           if k.startswith(PART_PREFIXES) and k != "alignment_shares"  # a towers file holds no shares
           and not k.endswith("num_batches_tracked")}
    loaded = {k: v for k, v in loaded.items() if not k.endswith("num_batches_tracked")}
    stray, absent = sorted(set(loaded) - set(own)), sorted(set(own) - set(loaded))
    wrong = [k for k in set(loaded) & set(own) if loaded[k].shape != own[k].shape]
    if stray or absent or wrong:
        raise ValueError(f"{towers} does not fit this model's text-aligned part (tuned layers {tuned}, hidden "
                         f"{config.text_alignment_hidden}, size {config.text_alignment_size}): not in the model "
                         f"{stray[:3]}, missing {absent[:3]}, other shapes {wrong[:3]}.")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in loaded.items()}, strict=False)
    return {"variant": json.loads(metadata.get("variant", "null")), "scores": json.loads(metadata.get("scores", "null"))}


def towers_run_record(run_file: Path, variant_name: str) -> dict:
    """What the model card says of how towers were trained, from the JSON `experiments.text_finetune.run_variants`
    wrote beside them (`scripts/experiment_text_finetune.py run --out`): the variant's epochs, captions, identities
    and training seconds, the run's seed and hardware, the photos' WebP quality. Runs written before the seed was
    recorded used `run_variants`' default, 0."""
    import json

    run = json.loads(run_file.read_text())
    records = [r for r in run.get("variants", []) if r.get("name") == variant_name and "seconds" in r]
    if not records:
        raise ValueError(f"{run_file} holds no finished variant {variant_name!r} (it has "
                         f"{[r.get('name') for r in run.get('variants', [])]}).")
    record = records[-1]
    return {"variant_name": variant_name, "epochs": record["epochs"], "captions": record["train_captions"],
            "identities": record["train_identities"], "seconds": record["seconds"], "hardware": run["device"],
            "seed": run.get("seed", 0), "webp_quality": run["bundle"].get("webp_quality"),
            "scores": record["scores"]}


def run_tuned_alignment(checkpoint: Path, towers: Path, out: Path, split_file: Path, seed: int = 42,
                        max_identities: int | None = 4000, fusion_holdout: float = 0.15,
                        rgb_identities: int = 300, towers_run: Path | None = None) -> dict:
    """A text-aligned part whose trunk and top encoder layers were fine-tuned (`experiments.text_finetune`, towers
    file `towers`): installs them into a copy of `checkpoint`, chooses the shares on the held-out people as
    `run_text_alignment` does, and saves the result (weights, config, processor, `text_alignment_summary.json`) to
    `out`. The towers should not have trained on those people (a `share_holdout=False` variant, or `pack
    --without-share-holdout`); the summary says whether they did. `towers_run`: the run's JSON, whose record of the
    towers' training (`towers_run_record`) the summary carries for the model card."""
    import json

    from safetensors import safe_open
    from transformers import AutoProcessor

    from ..modeling_aio import AIOModel

    with safe_open(str(towers), "pt") as handle:
        metadata = handle.metadata() or {}
        if "variant" not in metadata or "image.output.weight" not in handle.keys():
            raise ValueError(f"{towers} is not a towers file of experiments.text_finetune (no variant, no image head).")
        size, doubled = handle.get_slice("image.output.weight").get_shape()
    variant = json.loads(metadata["variant"])
    trained = towers_run_record(towers_run, variant["name"]) if towers_run is not None else None
    torch.manual_seed(seed)
    _, held_items, rgb_held = held_out_people(split_file, seed, max_identities, fusion_holdout, rgb_identities)
    held = [item for item in held_items if item.captions]
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = add_text_alignment(AIOModel.from_pretrained(checkpoint), size, doubled // 2, trunk="tuned",
                               tuned_layers=variant["text_layers_trained"])
    installed = install_tuned_towers(model, towers)
    started = time.time()
    shares = choose_shares_on(model, processor, held, rgb_held, seed)
    data = json.loads(metadata.get("data", "{}"))
    record = {"script": "scripts/train_text_alignment.py --tuned-towers", "towers": towers.name, "size": size,
              "hidden": doubled // 2, "layers": 0, "trunk": "tuned", "tuned_layers": variant["text_layers_trained"],
              "variant": installed["variant"], "towers_scores": installed["scores"], "towers_data": data,
              "held_identities": len({i.label for i in held}), "held_people_trained_on": data.get("share_holdout"),
              "rgb_held_identities": len({i.label for i in rgb_held}), "seed": seed, "shares": shares,
              "share_seconds": round(time.time() - started), "towers_run": trained}
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "text_alignment_summary.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


__all__ = ["install_tuned_towers", "run_tuned_alignment", "towers_run_record"]
