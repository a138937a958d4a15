"""The training run behind `scripts/train.py`, stage by stage.

(0) with a teacher, distil it into the shared OSNet trunk (`trunk_distillation`); (1) bind each per-modality
trunk to the photo embeddings (`trunk_binding`); (2) the Trainer run of tokenizers and heads (`trainer`); (3) the
RGB, then the sketch skip scale, each chosen on identities no head trained on, and (4) the text skip with the
composed-query weights (`calibration`). The run ends by exporting the trained weights (fp16 safetensors, with the
shapes they need beside them) and a training summary, where the checkpoint's provenance lives.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoProcessor, TrainingArguments, set_seed

from processing_aio.datasets import load_reid_dataset

from ..checkpoint.build import pretrained_trunk_source
from ..configuration_aio import MODALITIES
from ..modeling_aio import AIOForReIdentification
from .calibration import align_text_skip, choose_skip_scale
from .text_alignment import align_text_heads
from .data import (
    AIOTrainingCollator, MultimodalReIdDataset, TrainingItem, hold_out_captions, hold_out_identities, hold_out_sketches,
)
from .recipe import build_items, items_from, limit_identities, shared_recipe
from .trainer import (
    AIOTrainer, EpochAndScheduleCallback, StopAfterStepCallback, set_trainable, trainable_state_dict, trained_parameters,
)
from .trunk_binding import bind_modality_trunk, binding_examples
from .trunk_distillation import distill_trunk, distillation_examples, openvino_reid_embedder


@dataclass
class TrainingSplit:
    """The photos each stage sees: `items` train; the others are held out to choose settings on."""

    items: list[TrainingItem]
    identities: list[str]
    fusion_items: list[TrainingItem] = field(default_factory=list)
    sketch_items: list[TrainingItem] = field(default_factory=list)
    rgb_scale_items: list[TrainingItem] = field(default_factory=list)


def load_records(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(every record, the records that train): distillation sees every identity, `--max-identities` limits the rest."""
    if args.dataset == "shared":
        all_records = shared_recipe(args.split_file, None, args.seed)
        return all_records, limit_identities(all_records, args.max_identities, args.seed)
    if args.root is None:
        raise SystemExit("error: --root is required with --dataset.")
    records = items_from(load_reid_dataset(args.dataset, args.root), args.dataset, set())
    return records, records


def split_items(args: argparse.Namespace, records: list[dict], all_records: list[dict],
                has_skip_scales: bool) -> TrainingSplit:
    """Holds out the captions the fusion weights are chosen on, the people the RGB scale is chosen on and the
    sketches the sketch scale is chosen on."""
    items, identities = build_items(records)
    items, fusion_items = hold_out_captions(items, args.fusion_holdout, args.seed)
    split = TrainingSplit(items, identities, fusion_items)
    if args.rgb_scale_identities and has_skip_scales:
        trained_identities = {r["identity"] for r in records}
        spare, _ = build_items([r for r in all_records if r["identity"] not in trained_identities])
        split.items, split.rgb_scale_items = hold_out_identities(split.items, args.rgb_scale_identities, args.seed,
                                                                  spare)
    if args.sketch_holdout and has_skip_scales:
        split.items, split.sketch_items = hold_out_sketches(split.items, args.sketch_holdout, args.seed)
    print(f"training on {len(split.items)} photos of {len(identities)} identities "
          f"({sum(bool(i.captions) for i in split.items)} with captions, "
          f"{sum(i.real_sketch is not None for i in split.items)} with a real sketch; captions of "
          f"{len({i.label for i in fusion_items})} identities kept for fitting the skip weights; sketches of "
          f"{len({i.label for i in split.sketch_items})} identities kept for choosing the sketch skip's scale; "
          f"{len({i.label for i in split.rgb_scale_items})} identities no head trains on kept for choosing the RGB "
          "skip's scale)")
    return split


def distill_shared_trunk(aio_model, image_processor, args: argparse.Namespace, records: list[dict]) -> dict:
    """Stage 0: distils `--distill-teacher` into the shared OSNet trunk on the photos of every identity of `records`,
    then starts each per-modality trunk from it (they are bound from there); returns the summary's record."""
    examples = distillation_examples(build_items(records)[0])
    teacher = openvino_reid_embedder(args.distill_teacher, image_processor, threads=torch.get_num_threads())
    started = time.time()
    shared_trunk = aio_model.embeddings.image_backbone
    log = distill_trunk(shared_trunk, image_processor, teacher, examples, args.output_dir / "trunk-distillation",
                        steps=args.distill_steps, learning_rate=args.distill_learning_rate,
                        identities_per_batch=args.identities_per_batch, instances_per_identity=4, seed=args.seed,
                        train_batchnorm=args.distill_batchnorm == "train", schedule=args.distill_schedule,
                        bf16=args.distill_bf16, mixup=args.distill_mixup, supervised_weight=args.distill_supervised)
    for trunk in aio_model.embeddings.modality_backbones.values():
        trunk.load_state_dict(shared_trunk.state_dict())
    return {"teacher": args.distill_teacher.stem, "teacher_xml": str(args.distill_teacher),
            "steps": args.distill_steps, "batchnorm": args.distill_batchnorm, "schedule": args.distill_schedule,
            "bf16": args.distill_bf16, "mixup": args.distill_mixup, "supervised": args.distill_supervised,
            "seconds": round(time.time() - started),
            "identities": len(examples), "photos": sum(len(e["images"]) for e in examples),
            "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}


def bind_modality_trunks(model: AIOForReIdentification, processor, items: list[TrainingItem],
                         args: argparse.Namespace) -> dict[str, dict]:
    """Stage 1: binds each per-modality trunk to the shared trunk's photo embeddings; returns their records."""
    records = {}
    for modality in model.config.osnet_modality_trunks if args.trunk_steps else ():
        examples, photos = binding_examples(items, modality)
        bound_at = time.time()
        log = bind_modality_trunk(model.aio, processor.image_processor, modality, examples, photos,
                                  args.output_dir / f"trunk-{modality}", steps=args.trunk_steps,
                                  learning_rate=args.trunk_learning_rate, seed=args.seed)
        records[modality] = {"steps": args.trunk_steps, "seconds": round(time.time() - bound_at),
                             "images": len(examples), "identities": len(photos),
                             "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}
        print(f"{modality} trunk bound: {records[modality]}")
    return records


def build_trainer(model: AIOForReIdentification, processor, items: list[TrainingItem],
                  args: argparse.Namespace) -> AIOTrainer:
    """Stage 2: the Trainer over tokenizers and heads, P x K batches, checkpoints every `--save-steps`."""
    dataset = MultimodalReIdDataset(items, seed=args.seed)
    training_args = TrainingArguments(
        output_dir=str(args.output_dir), max_steps=args.max_steps,
        per_device_train_batch_size=args.identities_per_batch * args.instances_per_identity,
        learning_rate=args.learning_rate, weight_decay=1e-4, warmup_steps=min(100, args.max_steps // 10),
        lr_scheduler_type="cosine", logging_steps=args.logging_steps, save_strategy="steps",
        save_steps=args.save_steps, save_total_limit=2, seed=args.seed, data_seed=args.seed,
        dataloader_num_workers=0, remove_unused_columns=False, report_to=[],
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
    )
    return AIOTrainer(
        model=model, args=training_args, train_dataset=dataset,
        data_collator=AIOTrainingCollator(processor, model.config.attribute_words),
        callbacks=[EpochAndScheduleCallback(dataset, args.real_after)]
        + ([StopAfterStepCallback(args.stop_after)] if args.stop_after else []),
        sampler_kwargs={"identities_per_batch": args.identities_per_batch,
                        "instances_per_identity": args.instances_per_identity},
    )


def calibrate(model: AIOForReIdentification, processor, split: TrainingSplit, args: argparse.Namespace) -> dict:
    """Stages 3 and 4 on the held-out identities: RGB scale first (it changes the gallery the later choices match
    against), then the sketch scale, then the text skip and the composed-query weights, then (with
    `text_alignment_size`) the text-aligned part's heads and shares."""
    record: dict = {"text_alignment": None, "alignment_seconds": None, "skip_scale": None, "rgb_skip_scale": None,
                    "text_alignment_heads": None}
    if split.rgb_scale_items:
        record["rgb_skip_scale"] = choose_skip_scale(model.aio, processor, split.rgb_scale_items, modality="rgb")
        print(f"RGB skip scale chosen: {record['rgb_skip_scale']}")
    if split.sketch_items:
        record["skip_scale"] = choose_skip_scale(model.aio, processor, split.sketch_items,
                                                 distractors=split.rgb_scale_items)
        print(f"sketch skip scale chosen: {record['skip_scale']}")
    if args.align_text_steps and model.config.text_embedding_skip:
        # Single process: the stage is cheap, and the fitted weights are what process 0 saves.
        aligned_at = time.time()
        alignment = align_text_skip(model.aio, processor, split.items, steps=args.align_text_steps, seed=args.seed,
                                    fusion_items=split.fusion_items or None)
        record["alignment_seconds"] = round(time.time() - aligned_at)
        print(f"text skip aligned in {record['alignment_seconds']} s: {alignment[0]} ... {alignment[-1]}")
        print(f"skip weights (rgb, ir, sketch, text): {model.aio.skip_log_weights.exp().tolist()}")
        record["text_alignment"] = {"text": [h for h in alignment if h["stage"] == "text"][-1],
                                    "fusion": [h for h in alignment if h["stage"] == "fusion"]}
    if getattr(model.config, "text_alignment_size", 0) and args.text_alignment_epochs and split.fusion_items:
        record["text_alignment_heads"] = align_text_heads(model.aio.cpu(), processor, split.items, split.fusion_items,
                                                          split.rgb_scale_items, epochs=args.text_alignment_epochs,
                                                          seed=args.seed)
        print(f"text-aligned part trained: {record['text_alignment_heads']['shares']}")
    return record


def trained_modules(keys) -> list[str]:
    """The modules a weights file holds tensors of (`embeddings.X` or the top-level name), for its shape file."""
    return sorted({".".join(k.split(".")[:2]) if k.startswith("embeddings.") else k.split(".")[0] for k in keys})


def export_trained_weights(model: AIOForReIdentification, export: Path) -> Path:
    """Writes the trained parameters as fp16 safetensors and, beside them (`.json`), the shapes and encoder they were
    trained with and the modules they hold, which `checkpoint.build` checks when it merges them."""
    trained = trained_parameters(model, shared_trunk=True)  # whichever pretrained trunk the run started from
    state = {k: v.to(torch.float16).contiguous() for k, v in trainable_state_dict(model, trained).items()}
    save_file(state, str(export), metadata={"format": "pt", "source": "scripts/train.py"})
    config = model.config
    shapes = {"encoder": "minilm" if config.encoder_config.model_type == "bert" else "dinov2",
              "image_tokenizer": config.image_tokenizer, "osnet_embedding_skip": config.osnet_embedding_skip,
              "osnet_modality_trunks": list(config.osnet_modality_trunks),
              "text_embedding_skip": config.text_embedding_skip, "osnet_width": config.osnet_width,
              "osnet_token_grid": list(config.osnet_token_grid), "image_size": list(config.image_size),
              "patch_size": config.patch_size, "stem_width": config.stem_width,
              "embedding_size": config.embedding_size, "max_text_length": config.max_text_length,
              "text_alignment_size": config.text_alignment_size, "text_alignment_hidden": config.text_alignment_hidden,
              "text_alignment_layers": config.text_alignment_layers,
              "trained_modules": trained_modules(state)}
    export.with_suffix(".json").write_text(json.dumps(shapes, indent=1) + "\n")
    return export


def run(args: argparse.Namespace) -> dict:
    """Runs every stage that `args` asks for and writes the exported weights and `training_summary.json`."""
    set_seed(args.seed)
    all_records, records = load_records(args)
    has_skip_scales = AutoConfig.from_pretrained(args.align_only or args.init).osnet_embedding_skip
    split = split_items(args, records, all_records, has_skip_scales)
    heads = set(args.heads.split(","))
    processor = AutoProcessor.from_pretrained(args.init)
    summary_file = args.output_dir / "training_summary.json"
    previous = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    distilling = bool(args.distill_teacher) and args.train == "all"
    trunk_binding: dict[str, dict] = {}
    distillation: dict | None = None
    pretrained_trunk = previous.get("pretrained_trunk")  # resumed after distillation or re-aligned: as before
    if args.align_only:
        model = AIOForReIdentification.from_pretrained(args.align_only)
        set_trainable(model, args.train)  # what trained is what gets exported
        trainer = None
        steps = json.loads((args.align_only / "trainer_state.json").read_text())["global_step"]
        training_seconds = previous.get("training_seconds")
    else:
        model = AIOForReIdentification.from_pretrained(
            args.init, num_identities=len(split.identities), use_identity_head="identity" in heads,
            use_binding_head="binding" in heads, use_masked_attribute_head="attribute" in heads)
        set_trainable(model, args.train)
        if model.aio.embeddings.image_backbone is not None:
            pretrained_trunk = pretrained_trunk_source(model.aio.embeddings.image_backbone.state_dict(),
                                                       model.config.osnet_width) or pretrained_trunk
        if distilling and model.aio.embeddings.image_backbone is None:
            raise SystemExit("error: --distill-teacher needs a model built with the osnet image tokenizer.")
        if distilling and not args.resume:  # resumed: the checkpoint holds the distilled trunk
            distillation = distill_shared_trunk(model.aio, processor.image_processor, args, all_records)
            print(f"shared trunk distilled: {distillation}")
        if args.train == "all" and not args.resume:
            trunk_binding = bind_modality_trunks(model, processor, split.items, args)
        trainer = build_trainer(model, processor, split.items, args)
        started = time.time()
        trainer.train(resume_from_checkpoint=args.resume or None)
        training_seconds, steps = round(time.time() - started), trainer.state.global_step
    if trainer is not None and not trainer.is_world_process_zero():
        trainer.save_model(str(args.output_dir / "final"))
        return {}
    calibration = calibrate(model, processor, split, args)
    if trainer is not None:
        trainer.save_model(str(args.output_dir / "final"))
    else:
        model.save_pretrained(args.output_dir / "final")
    distillation = distillation or previous.get("trunk_distillation")
    export = export_trained_weights(model, args.export or args.output_dir / "aio-reid-trainable.safetensors")
    summary = {"steps": steps, "max_steps": args.max_steps, "training_seconds": training_seconds,
               "pretrained_trunk": pretrained_trunk,
               "trunk_distillation": distillation,
               "trunk_binding": trunk_binding or previous.get("trunk_binding"),  # resumed / re-aligned: as before
               "alignment_seconds": calibration["alignment_seconds"],
               "alignment_only_on": str(args.align_only) if args.align_only else None,  # a re-run last stage
               "processes": trainer.args.world_size if trainer else 1, "identities": len(split.identities),
               "photos": len(split.items), "seed": args.seed,
               "batch_size": args.identities_per_batch * args.instances_per_identity, "train": args.train,
               "text_alignment": calibration["text_alignment"],
               "text_alignment_heads": calibration["text_alignment_heads"],
               "skip_scale": calibration["skip_scale"], "rgb_skip_scale": calibration["rgb_skip_scale"],
               "skip_weights": dict(zip(MODALITIES, model.aio.skip_log_weights.exp().tolist()))
               if hasattr(model.aio, "skip_log_weights") else None,
               "hardware": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else "cuda"}
    summary_file.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {export} ({export.stat().st_size / 2**20:.1f} MiB) and {export.with_suffix('.json').name}; "
          f"{summary}")
    return summary


def close_process_group() -> None:
    """Under `accelerate launch`, let every process reach the end before any leaves: a process that exits while
    another still uses the gloo group can abort at interpreter exit ("terminate called without an active exception",
    pytorch/pytorch#190489)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


__all__ = ["TrainingSplit", "load_records", "split_items", "distill_shared_trunk", "bind_modality_trunks",
           "build_trainer", "calibrate", "export_trained_weights", "trained_modules", "run", "close_process_group"]
