#!/usr/bin/env python
"""Gives the shipped weights a fast RGB gallery encoder: a student distilled by `scripts/low_resolution_student.py
--trunk osnet-0277` (float16, its input size recorded in the shape file; `AIOConfig.rgb_gallery_image_size`); then
`make checkpoint` builds it and, with ../shared, its int8 graph. `--take-out` does the reverse: the shipped encoder
as a student folder, for `low_resolution_student.py --init-from`.

    python scripts/ship_rgb_gallery_encoder.py runs/s0277-192-s42 && make checkpoint
    python scripts/ship_rgb_gallery_encoder.py --take-out runs/shipped-gallery-encoder
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.build import ship_rgb_gallery_encoder, take_out_rgb_gallery_encoder
from modeling_aio.checkpoint.paths import DEFAULT_TRAINED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("student", type=Path, help="a folder written by scripts/low_resolution_student.py")
    parser.add_argument("--trainable", type=Path, default=DEFAULT_TRAINED, help="trained weights to give it")
    parser.add_argument("--take-out", action="store_true",
                        help="write the encoder the trained weights hold into the student folder instead")
    args = parser.parse_args()
    if args.take_out:
        take_out_rgb_gallery_encoder(args.trainable, args.student)
        print(f"{args.student}: the RGB gallery encoder of {args.trainable}, as a student folder")
        return
    ship_rgb_gallery_encoder(args.trainable, args.student)
    print(f"{args.trainable}: RGB gallery encoder from {args.student}; run `make checkpoint` to rebuild aio-reid/")


if __name__ == "__main__":
    main()
