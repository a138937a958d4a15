#!/usr/bin/env python
"""Distil the shipped model's RGB search embedding into 0277's architecture at a smaller input size, or 0267's at full
size (a fast RGB gallery encoder, tried for issue 19; see `modeling_aio.experiments.low_resolution_student`).

    python scripts/low_resolution_student.py --image-size 176x88 --steps 1500 --output-dir runs/low-res-176x88
    python scripts/low_resolution_student.py --image-size 192x96 --steps 1500 --learning-rate 5e-5 \\
        --init-from runs/low-res-176x88 --output-dir runs/low-res-192x96
    python scripts/low_resolution_student.py --image-size 192x96 --init-from runs/low-res-192x96 \\
        --train-from conv3 --bank-size 4096 --steps 5000 --save-steps 500 --output-dir runs/low-res-conv3
    python scripts/low_resolution_student.py --trunk osnet-0267 --image-size 256x128 --train-from conv2 \\
        --bank-size 4096 --steps 3000 --save-steps 500 --output-dir runs/student-0267

Reads `../shared` (the training photos; the teacher runs through `--backend`, OpenVINO by default). With
`--train-from`, the frozen layers' maps of every photo are cached in the output folder (9.5 GB in float16 for conv3
at 192x96; 8.5 GB for 0267's conv2 or conv3 at 256x128).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from modeling_aio.checkpoint.paths import REPO_ROOT, SPLIT_FILE
from modeling_aio.experiments.low_resolution_student import STAGES, TRUNKS, run


def image_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size takes HEIGHTxWIDTH, e.g. 176x88, got {text!r}") from None
    return height, width


def part_weights(text: str) -> list[float]:
    try:
        return [float(weight) for weight in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--part-weights takes comma-separated numbers, e.g. 1,2,1, got {text!r}"
                                         ) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "aio-reid"), help="the teacher: an AIO checkpoint")
    parser.add_argument("--backend", default="openvino", help="what runs the teacher (modeling_aio.export.BACKENDS)")
    parser.add_argument("--split-file", type=Path, default=SPLIT_FILE)
    parser.add_argument("--trunk", choices=TRUNKS, default="omz-0277",
                        help="the student's network: 0277 as its port or as an OSNet x1.0 (the same function; "
                        "it quantises to int8), or 0267's OSNet x0.5 (run at 256x128)")
    parser.add_argument("--image-size", type=image_size, default=(176, 88), help="the student's HEIGHTxWIDTH")
    parser.add_argument("--init-from", type=Path, default=None, help="a student folder to go on from")
    parser.add_argument("--steps", type=int, default=1500,
                        help="distillation steps (0: none, e.g. to --int8 an --init-from student)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--bank-size", type=int, default=0,
                        help="teacher rows drawn per batch for the bank relation loss (0: no bank loss)")
    parser.add_argument("--bank-weight", type=float, default=1.0, help="weight of the bank relation loss")
    parser.add_argument("--train-from", choices=STAGES, default=None,
                        help="train only this stage and those above, on its input maps computed once (faster steps)")
    parser.add_argument("--int8", action="store_true",
                        help="also write the student's int8 OpenVINO graph (NNCF, 640 training photos; needs nncf)")
    parser.add_argument("--balance-parts", action="store_true",
                        help="distil toward targets whose parts (ReID, text-aligned, second trunk) weigh alike, so "
                             "the text-aligned part that text queries read is learnt as well as the rest")
    parser.add_argument("--part-weights", type=part_weights, default=None,
                        help="with --balance-parts: the parts' energies in this ratio instead of alike, e.g. 1,2,1")
    parser.add_argument("--skip-blocks", type=lambda text: [name for name in text.split(",") if name], default=[],
                        help="OSNet blocks to leave out, comma-separated (of conv2.1, conv3.1, conv4.1): a shallower, "
                             "faster trunk")
    parser.add_argument("--save-steps", type=int, default=0, help="a resumable checkpoint this often (0: none)")
    parser.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --output-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "low-res-student")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
