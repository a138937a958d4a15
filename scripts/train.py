#!/usr/bin/env python
"""Train AIO's tokenizers and heads with `transformers.Trainer` (runs under `accelerate launch` as well).

    python scripts/train.py --init runs/init --output-dir runs/aio --max-steps 2000
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --init runs/init ...   (CPU-only: torchrun + gloo)
    python scripts/train.py --init aio-reid --train heads --dataset market1501 --root /data/Market-1501 ...

Data: by default the `../shared/data` recipe minus every identity of `splits/dev_split.json`, or any loader of
`processing_aio.datasets` with `--dataset/--root`. The stages are described in `modeling_aio.training.pipeline`.
Checkpoints every `--save-steps`; `--resume` continues from the last one. At the end the trainable weights (no
encoder, no identity classifier) are written as fp16 safetensors for `scripts/build_checkpoint.py` to merge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import SPLIT_FILE
from modeling_aio.training.pipeline import close_process_group, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="checkpoint folder to start from (built by build_checkpoint.py)")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--dataset", default="shared", help="'shared' (the ../shared recipe) or a loader name")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
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
    parser.add_argument("--text-alignment-epochs", type=int, default=20,
                        help="epochs of the text-aligned part's heads (models built with a text_alignment_size)")
    parser.add_argument("--fusion-holdout", type=float, default=0.15,
                        help="fraction of captioned identities whose captions are kept out of training, to choose the "
                             "skip weights of composed queries on (0: choose them on ids held back from the last stage)")
    parser.add_argument("--trunk-steps", type=int, default=150,
                        help="first stage, for models with per-modality OSNet trunks: bind each to the photo "
                             "embeddings for this many steps (skipped on --resume: the checkpoint holds them)")
    parser.add_argument("--trunk-learning-rate", type=float, default=1e-4)
    parser.add_argument("--distill-teacher", type=Path, default=None, metavar="XML",
                        help="stage 0, osnet tokenizer: distil this OpenVINO ReID model (e.g. 0277's .xml) into the "
                             "shared trunk on every training identity's photos, --identities-per-batch x 4 per step")
    parser.add_argument("--distill-steps", type=int, default=600)
    parser.add_argument("--distill-learning-rate", type=float, default=1e-4)
    parser.add_argument("--distill-batchnorm", choices=("frozen", "train"), default="frozen",
                        help="stage 0: keep the trunk's BatchNorm statistics, or let them follow the P x K batches")
    parser.add_argument("--distill-schedule", choices=("constant", "cosine"), default="constant",
                        help="stage 0: after 50 warm-up steps keep the learning rate, or decay it to zero by the last step")
    parser.add_argument("--distill-bf16", action="store_true",
                        help="stage 0: bf16 autocast, trunk in channels_last (faster on CPUs with native bf16)")
    parser.add_argument("--distill-mixup", type=float, default=0.0, metavar="P",
                        help="stage 0: probability that a crop is blended with another crop of the batch before the "
                             "teacher and the trunk see it (function matching)")
    parser.add_argument("--distill-supervised", type=float, default=0.0, metavar="W",
                        help="stage 0: weight of a supervised contrastive loss on the P x K batch's identity labels "
                             "beside the teacher's two (not with --distill-mixup)")
    parser.add_argument("--sketch-holdout", type=float, default=0.2,
                        help="fraction of identities with a real sketch whose sketches are kept out of training, to "
                             "choose the sketch skip's scale on (models with an OSNet skip; 0: leave the scale at 1)")
    parser.add_argument("--rgb-scale-identities", type=int, default=300,
                        help="identities no head trains on (past --max-identities, else taken out of training: at "
                             "most a tenth), to choose the RGB skip's scale on (models with an OSNet skip; 0: leave "
                             "the scale at 1)")
    parser.add_argument("--align-text-steps", type=int, default=1000,
                        help="last stage: fit the text skip on cached features for this many steps (0: skip)")
    return parser


if __name__ == "__main__":
    run(build_parser().parse_args())
    close_process_group()
