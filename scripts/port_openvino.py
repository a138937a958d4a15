#!/usr/bin/env python
"""Port an Open Model Zoo ReID IR to PyTorch (see `modeling_aio.checkpoint.openvino_port`): by default
person-reidentification-retail-0277 into `weights/omz-0277.safetensors` + `weights/omz-0277.graph.json`, checked
against OpenVINO on real person crops (prints the lowest cosine; refuses below 0.999).

Usage: python scripts/port_openvino.py [--xml PATH.xml] [--name omz-0277]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.openvino_port import DEFAULT_0277_XML, convert_and_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xml", type=Path, default=DEFAULT_0277_XML, help="the OpenVINO IR (.xml beside its .bin)")
    parser.add_argument("--name", default="omz-0277", help="file stem of the port in weights/")
    args = parser.parse_args()
    convert_and_check(args.xml, args.name)


if __name__ == "__main__":
    main()
