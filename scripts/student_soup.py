#!/usr/bin/env python
"""Average low-resolution students distilled from one start with different seeds into one student (a model soup;
see `modeling_aio.experiments.student_soup`), e.g. the shipped RGB gallery encoder:

    python scripts/student_soup.py runs/soup-c2skip runs/s7-c2skip runs/s42i7-c2skip --int8
    python scripts/ship_rgb_gallery_encoder.py runs/soup-c2skip && make checkpoint

With `--int8` it reads `../shared` for the calibration photos (and needs nncf).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.experiments.student_soup import average_students


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="the soup's student folder")
    parser.add_argument("students", type=Path, nargs="+", help="folders written by scripts/low_resolution_student.py")
    parser.add_argument("--int8", action="store_true", help="also write the soup's int8 OpenVINO graph")
    args = parser.parse_args()
    average_students(args.students, args.output_dir, int8=args.int8)
    print(f"{args.output_dir}: the mean of {len(args.students)} students")


if __name__ == "__main__":
    main()
