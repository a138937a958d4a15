#!/usr/bin/env python
"""Train AIO's tokenizers and heads with `transformers.Trainer` (runs under `accelerate launch` as well).

    python scripts/train.py --init runs/init --output-dir runs/aio --max-steps 2000
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --init runs/init ...   (CPU-only: torchrun + gloo)
    python scripts/train.py --init aio-reid --train heads --dataset market1501 --root /data/Market-1501 ...

Data: by default the `../shared/data` recipe (the pooled CUHK-PEDES set with the val captions, PKU-Sketch photos
with their real sketches, the two-camera set) minus every identity of `splits/dev_split.json`; or any loader of
`processing_aio.reid_datasets` with `--dataset/--root`. Missing modalities are synthesised per photo (CAJ IR, XDoG
sketch); after `--real-after` of the run, identities with a real sketch use it (progressive schedule).
Stages: (0) with `--distill-teacher`, a stronger RGB ReID model (an OpenVINO IR) is distilled into the shared OSNet
trunk on the training photos (`modeling_aio.trunk_distillation`, `--distill-steps`); (1) with per-modality OSNet
trunks (`--osnet-modality-trunks` at build time), each starts as the shared trunk and is bound to its photo
embeddings (`modeling_aio.trunk_binding`, `--trunk-steps`); (2) the Trainer run of tokenizers and heads; (3) the
RGB skip's scale, chosen on RGB->RGB and grayscale IR->RGB among identities no head trained on
(`--rgb-scale-identities`), then the sketch skip's scale, chosen on the real sketches of identities kept out of (1)
and (2) (`--sketch-holdout`); (4) the text skip and the composed-query weights (`align_text_skip`).
Checkpoints every `--save-steps`; `--resume` continues from the last one. At the end the trainable weights (no
encoder, no identity classifier) are written as fp16 safetensors for `build_checkpoint.py` to merge.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoProcessor, TrainingArguments, set_seed  # noqa: E402

import modeling_aio  # noqa: E402,F401
from modeling_aio import MODALITIES, AIOForReIdentification  # noqa: E402
from modeling_aio.training import (  # noqa: E402
    AIOTrainer, AIOTrainingCollator, EpochAndScheduleCallback, MultimodalReIdDataset, StopAfterStepCallback,
    TrainingItem, align_text_skip, choose_skip_scale, hold_out_captions, hold_out_identities, hold_out_sketches,
    set_trainable, trainable_state_dict,
)
from modeling_aio.trunk_binding import bind_modality_trunk, binding_examples  # noqa: E402
from modeling_aio.trunk_distillation import distill_trunk, distillation_examples, openvino_reid_embedder  # noqa: E402
from processing_aio.reid_datasets import image_paths, load_reid_dataset  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def items_from(dataset, prefix: str, exclude_ids: set[str], splits: set[str] | None = None) -> list[dict]:
    """RGB rows of a loaded dataset as training records, with the identity's real sketch when it has one."""
    columns = dataset.remove_columns("image").to_dict()
    paths = image_paths(dataset)
    sketches = {pid: path for pid, path, m in zip(columns["person_id"], paths, columns["modality"]) if m == "sketch"}
    records = []
    for path, pid, modality, split, captions in zip(paths, columns["person_id"], columns["modality"],
                                                    columns["split"], columns["captions"]):
        if modality != "rgb" or pid in exclude_ids or (splits is not None and split not in splits):
            continue
        records.append({"image": path, "identity": f"{prefix}:{pid}", "captions": captions,
                        "real_sketch": sketches.get(pid)})
    return records


def shared_recipe(split_file: Path, max_identities: int | None, seed: int) -> list[dict]:
    split = json.loads(split_file.read_text())
    held_pedes = {str(i) for i in split["cuhk_pedes_test_pedes_ids"]}
    pooled = load_reid_dataset("pooled", SHARED / "CUHK-PEDES")
    with open(SHARED / "CUHK-PEDES" / "index.csv", newline="") as handle:
        held_people = set(split["pooled_test_person_ids"]) | {
            row["person_id"] for row in csv.DictReader(handle) if row["pedes_id"] in held_pedes}
    records = items_from(pooled, "pooled", held_people)
    records += items_from(load_reid_dataset("pku-sketch", SHARED / "PKUSketchRE-ID_V1"), "pku",
                          {str(i) for i in split["pku_sketch_test_ids"]})
    records += items_from(load_reid_dataset("two-camera", SHARED / "pku_reid"), "twocam", set())
    return limit_identities(records, max_identities, seed)


def limit_identities(records: list[dict], max_identities: int | None, seed: int) -> list[dict]:
    """At most `max_identities` identities: every captioned or sketched one, then a seeded draw of the rest."""
    if not max_identities:
        return records
    identities = sorted({r["identity"] for r in records})
    captioned = sorted({r["identity"] for r in records if r["captions"] or r["real_sketch"]})
    rest = sorted(set(identities) - set(captioned))
    random.Random(seed).shuffle(rest)
    keep = set(captioned) | set(rest[: max(0, max_identities - len(captioned))])
    return [r for r in records if r["identity"] in keep]


def build_items(records: list[dict]) -> tuple[list[TrainingItem], list[str]]:
    identities = sorted({r["identity"] for r in records})
    label_of = {identity: i for i, identity in enumerate(identities)}
    items = [TrainingItem(r["image"], label_of[r["identity"]], list(r["captions"]), r["real_sketch"]) for r in records]
    return items, identities


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="checkpoint folder to start from (built by build_checkpoint.py)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="shared", help="'shared' (the ../shared recipe) or a loader name")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, default=REPO / "splits" / "dev_split.json")
    parser.add_argument("--max-identities", type=int, default=None)
    parser.add_argument("--train", choices=("all", "heads"), default="all")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--identities-per-batch", type=int, default=8)
    parser.add_argument("--instances-per-identity", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--real-after", type=float, default=0.5)
    parser.add_argument("--save-steps", type=int, default=100)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export", type=Path, default=None, help="fp16 safetensors of the trainable weights")
    parser.add_argument("--heads", default="identity,binding,attribute", help="heads switched on")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="end at this step, keeping the learning-rate schedule of --max-steps (equal-step comparisons)")
    parser.add_argument("--align-only", type=Path, default=None, metavar="CHECKPOINT",
                        help="skip training: run only the text-alignment stage on this Trainer checkpoint and export")
    parser.add_argument("--fusion-holdout", type=float, default=0.15,
                        help="fraction of captioned identities whose captions are kept out of training, to choose the "
                             "skip weights of composed queries on (0: choose them on ids held back from the last stage)")
    parser.add_argument("--trunk-steps", type=int, default=150,
                        help="first stage, for models with per-modality OSNet trunks: bind each to the photo "
                             "embeddings for this many steps (skipped on --resume: the checkpoint holds them)")
    parser.add_argument("--trunk-learning-rate", type=float, default=1e-4)
    parser.add_argument("--distill-teacher", type=Path, default=None, metavar="XML",
                        help="stage 0, osnet tokenizer: distil this OpenVINO ReID model (e.g. ../shared/weights/"
                             "openvino-person-reid/person-reidentification-retail-0277-FP16/*.xml) into the shared "
                             "trunk, on the photos of every training identity (--max-identities does not limit it), "
                             "--identities-per-batch x 4 photos per step")
    parser.add_argument("--distill-steps", type=int, default=600)
    parser.add_argument("--distill-learning-rate", type=float, default=1e-4)
    parser.add_argument("--distill-batchnorm", choices=("frozen", "train"), default="frozen",
                        help="stage 0: keep the trunk's BatchNorm statistics, or let them follow the P x K batches "
                             "(see modeling_aio.trunk_distillation for what each measured)")
    parser.add_argument("--distill-schedule", choices=("constant", "cosine"), default="constant",
                        help="stage 0: after 50 warm-up steps keep the learning rate, or decay it to zero by the last step")
    parser.add_argument("--distill-bf16", action="store_true",
                        help="stage 0: bf16 autocast, trunk in channels_last (a training step 2.4x faster on a CPU with "
                             "AVX512-BF16 or AMX; it may be slower where bf16 is emulated)")
    parser.add_argument("--distill-mixup", type=float, default=0.0, metavar="P",
                        help="stage 0: probability that a crop is blended with another crop of the batch before the "
                             "teacher and the trunk see it (function matching; see modeling_aio.trunk_distillation)")
    parser.add_argument("--distill-supervised", type=float, default=0.0, metavar="W",
                        help="stage 0: weight of a supervised contrastive loss on the P x K batch's identity labels "
                             "beside the teacher's two (not with --distill-mixup; see modeling_aio.trunk_distillation)")
    parser.add_argument("--sketch-holdout", type=float, default=0.2,
                        help="fraction of identities with a real sketch whose sketches are kept out of training, to "
                             "choose the sketch skip's scale on (models with an OSNet skip; 0: leave the scale at 1)")
    parser.add_argument("--rgb-scale-identities", type=int, default=300,
                        help="identities no head trains on (past --max-identities, else taken out of training: at "
                             "most a tenth), to choose the RGB skip's scale on (models with an OSNet skip; 0: leave "
                             "the scale at 1)")
    parser.add_argument("--align-text-steps", type=int, default=1000,
                        help="last stage: fit the text skip on cached features for this many steps (0: skip)")
    args = parser.parse_args()
    set_seed(args.seed)

    if args.dataset == "shared":
        all_records = shared_recipe(args.split_file, None, args.seed)  # stage 0 distils on every identity
        records = limit_identities(all_records, args.max_identities, args.seed)
    else:
        if args.root is None:
            raise SystemExit("error: --root is required with --dataset.")
        records = all_records = items_from(load_reid_dataset(args.dataset, args.root), args.dataset, set())
    items, identities = build_items(records)
    items, fusion_items = hold_out_captions(items, args.fusion_holdout, args.seed)
    has_skip_scales = AutoConfig.from_pretrained(args.align_only or args.init).osnet_embedding_skip
    sketch_items, rgb_scale_items = [], []
    if args.rgb_scale_identities and has_skip_scales:
        trained_identities = {r["identity"] for r in records}
        spare, _ = build_items([r for r in all_records if r["identity"] not in trained_identities])
        items, rgb_scale_items = hold_out_identities(items, args.rgb_scale_identities, args.seed, spare)
    if args.sketch_holdout and has_skip_scales:
        items, sketch_items = hold_out_sketches(items, args.sketch_holdout, args.seed)
    print(f"training on {len(items)} photos of {len(identities)} identities "
          f"({sum(bool(i.captions) for i in items)} with captions, {sum(i.real_sketch is not None for i in items)} "
          f"with a real sketch; captions of {len({i.label for i in fusion_items})} identities kept for fitting the "
          f"skip weights; sketches of {len({i.label for i in sketch_items})} identities kept for choosing the "
          f"sketch skip's scale; {len({i.label for i in rgb_scale_items})} identities no head trains on kept for "
          "choosing the RGB skip's scale)")

    heads = set(args.heads.split(","))
    processor = AutoProcessor.from_pretrained(args.init)
    batch_size = args.identities_per_batch * args.instances_per_identity
    summary_file = args.output_dir / "training_summary.json"
    previous = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    trunk_binding: dict[str, dict] = {}
    distillation: dict | None = None
    if args.align_only:
        model = AIOForReIdentification.from_pretrained(args.align_only)
        set_trainable(model, args.train)  # what trained is what gets exported
        trainer, is_main = None, True
        steps = json.loads((args.align_only / "trainer_state.json").read_text())["global_step"]
        training_seconds = previous.get("training_seconds")
    else:
        model = AIOForReIdentification.from_pretrained(
            args.init, num_identities=len(identities), use_identity_head="identity" in heads,
            use_binding_head="binding" in heads, use_masked_attribute_head="attribute" in heads)
        set_trainable(model, args.train)
        if args.distill_teacher and args.train == "all":
            if model.aio.embeddings.image_backbone is None:
                raise SystemExit("error: --distill-teacher needs a model built with the osnet image tokenizer.")
            model.config.osnet_trunk_teacher = args.distill_teacher.stem  # on --resume the checkpoint holds it
            if not args.resume:  # resumed: the checkpoint holds the distilled trunk
                distillation = distill_shared_trunk(model.aio, processor.image_processor, args, all_records)
                print(f"shared trunk distilled: {distillation}")
        if args.train == "all" and not args.resume:
            for modality in model.config.osnet_modality_trunks if args.trunk_steps else ():
                examples, photos = binding_examples(items, modality)
                bound_at = time.time()
                log = bind_modality_trunk(model.aio, processor.image_processor, modality, examples, photos,
                                          args.output_dir / f"trunk-{modality}", steps=args.trunk_steps,
                                          learning_rate=args.trunk_learning_rate, seed=args.seed)
                trunk_binding[modality] = {"steps": args.trunk_steps, "seconds": round(time.time() - bound_at),
                                           "images": len(examples), "identities": len(photos),
                                           "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}
                print(f"{modality} trunk bound: {trunk_binding[modality]}")
        dataset = MultimodalReIdDataset(items, seed=args.seed)
        collator = AIOTrainingCollator(processor, model.config.attribute_words)
        training_args = TrainingArguments(
            output_dir=str(args.output_dir), max_steps=args.max_steps, per_device_train_batch_size=batch_size,
            learning_rate=args.learning_rate, weight_decay=1e-4, warmup_steps=min(100, args.max_steps // 10),
            lr_scheduler_type="cosine", logging_steps=args.logging_steps, save_strategy="steps",
            save_steps=args.save_steps, save_total_limit=2, seed=args.seed, data_seed=args.seed,
            dataloader_num_workers=0, remove_unused_columns=False, report_to=[],
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        )
        trainer = AIOTrainer(
            model=model, args=training_args, train_dataset=dataset, data_collator=collator,
            callbacks=[EpochAndScheduleCallback(dataset, args.real_after)]
            + ([StopAfterStepCallback(args.stop_after)] if args.stop_after else []),
            sampler_kwargs={"identities_per_batch": args.identities_per_batch,
                            "instances_per_identity": args.instances_per_identity},
        )
        started = time.time()
        trainer.train(resume_from_checkpoint=args.resume or None)
        training_seconds, steps = round(time.time() - started), trainer.state.global_step
        is_main = trainer.is_world_process_zero()
    alignment, alignment_seconds, skip_scale, rgb_skip_scale = [], None, None, None
    if rgb_scale_items and is_main:  # first: it changes the gallery that the later choices match against
        rgb_skip_scale = choose_skip_scale(model.aio, processor, rgb_scale_items, modality="rgb")
        print(f"RGB skip scale chosen: {rgb_skip_scale}")
    if sketch_items and is_main:
        skip_scale = choose_skip_scale(model.aio, processor, sketch_items, distractors=rgb_scale_items)
        print(f"sketch skip scale chosen: {skip_scale}")
    if args.align_text_steps and model.config.text_embedding_skip and is_main:
        # Single process: the stage is cheap, and the fitted weights are what process 0 saves below.
        aligned_at = time.time()
        alignment = align_text_skip(model.aio, processor, items, steps=args.align_text_steps, seed=args.seed,
                                    fusion_items=fusion_items or None)
        alignment_seconds = round(time.time() - aligned_at)
        print(f"text skip aligned in {alignment_seconds} s: {alignment[0]} ... {alignment[-1]}")
        print(f"skip weights (rgb, ir, sketch, text): {model.aio.skip_log_weights.exp().tolist()}")
    if trainer is not None:
        trainer.save_model(str(args.output_dir / "final"))
    else:
        model.save_pretrained(args.output_dir / "final")
    if is_main:
        export = args.export or args.output_dir / "aio-reid-trainable.safetensors"
        state = {k: v.to(torch.float16).contiguous() for k, v in trainable_state_dict(model).items()}
        save_file(state, str(export), metadata={"format": "pt", "source": "scripts/train.py"})
        config = model.config
        encoder = "minilm" if config.encoder_config.model_type == "bert" else "dinov2"
        overrides = {"encoder": encoder, "image_tokenizer": config.image_tokenizer,
                     "osnet_embedding_skip": config.osnet_embedding_skip,
                     "osnet_modality_trunks": list(config.osnet_modality_trunks),
                     "osnet_trunk_teacher": config.osnet_trunk_teacher,
                     "text_embedding_skip": config.text_embedding_skip,
                     "osnet_width": config.osnet_width,
                     "osnet_token_grid": list(config.osnet_token_grid), "image_size": list(config.image_size),
                     "patch_size": config.patch_size,
                     "stem_width": config.stem_width, "embedding_size": config.embedding_size,
                     "max_text_length": config.max_text_length}
        export.with_suffix(".json").write_text(json.dumps(overrides, indent=1) + "\n")
        summary = {"steps": steps, "training_seconds": training_seconds,
                   "trunk_distillation": distillation or previous.get("trunk_distillation"),
                   "trunk_binding": trunk_binding or previous.get("trunk_binding"),  # resumed / re-aligned: as before
                   "alignment_seconds": alignment_seconds,
                   "alignment_only_on": str(args.align_only) if args.align_only else None,  # a re-run last stage
                   "processes": trainer.args.world_size if trainer else 1, "identities": len(identities),
                   "photos": len(items), "seed": args.seed, "batch_size": batch_size, "train": args.train,
                   "text_alignment": {"text": [h for h in alignment if h["stage"] == "text"][-1],
                                      "fusion": [h for h in alignment if h["stage"] == "fusion"]} if alignment else None,
                   "skip_scale": skip_scale, "rgb_skip_scale": rgb_skip_scale,
                   "skip_weights": dict(zip(MODALITIES, model.aio.skip_log_weights.exp().tolist()))
                   if hasattr(model.aio, "skip_log_weights") else None,
                   "hardware": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else "cuda"}
        summary_file.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {export} ({export.stat().st_size / 2**20:.1f} MiB) and {export.with_suffix('.json').name}; "
              f"{summary}")


def close_process_group() -> None:
    """Under `accelerate launch`, let every process reach the end before any leaves: a process that exits while
    another still uses the gloo group can abort at interpreter exit ("terminate called without an active exception",
    pytorch/pytorch#190489), which a clean-clone `make test` hit once in the accelerate test."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    close_process_group()
