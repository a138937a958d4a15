#!/usr/bin/env python
"""Convert OMZ person-reidentification-retail-0267 from ONNX into `weights/osnet-0267.safetensors` and verify the
port (see `modeling_aio.checkpoint.osnet_conversion`).

Usage: python scripts/convert_osnet.py [--onnx ../shared/weights/openvino-person-reid/person-reidentification-retail-0267.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.osnet_conversion import DEFAULT_ONNX, convert
from modeling_aio.checkpoint.paths import OSNET_0267_WEIGHTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="the 0267 ONNX file")
    parser.add_argument("--out", type=Path, default=OSNET_0267_WEIGHTS, help="safetensors file to write")
    args = parser.parse_args()
    convert(args.onnx, args.out)


if __name__ == "__main__":
    main()
