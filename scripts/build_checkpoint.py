#!/usr/bin/env python
"""Assemble the `aio-reid` checkpoint folder offline (see `modeling_aio.checkpoint.build`).

Usage: python scripts/build_checkpoint.py [--out aio-reid] [--encoder dinov2|minilm] [--trained PATH|none]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.build import OSNET_SOURCES, build
from modeling_aio.checkpoint.locate import link_default
from modeling_aio.checkpoint.paths import DEFAULT_TRAINED, REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "aio-reid",
                        help="checkpoint folder to write; the repository's aio-reid/ is also linked at "
                             "$AIO_REID_HOME/aio-reid (default ~/.cache/aio-reid/aio-reid), so the model name "
                             "`aio-reid` finds it from any directory")
    parser.add_argument("--encoder", choices=("dinov2", "minilm"), default=None,
                        help="frozen shared encoder (default: what the trained weights used, else dinov2)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None)
    parser.add_argument("--image-tokenizer", choices=("ibn_stem", "osnet"), default=None,
                        help="image tokenizer (default: what the trained weights used, else ibn_stem)")
    parser.add_argument("--osnet-embedding-skip", action="store_true",
                        help="osnet tokenizer: add the OSNet-embedding skip path (see AIOConfig)")
    parser.add_argument("--text-embedding-skip", action="store_true",
                        help="add the learned skip from the mean-pooled text outputs (see AIOConfig)")
    parser.add_argument("--osnet-modality-trunks", nargs="+", choices=("ir", "sketch"), default=(),
                        help="osnet tokenizer: these modalities get their own trunk copy (see AIOConfig)")
    parser.add_argument("--osnet-width", type=int, default=None, metavar="N",
                        help="osnet tokenizer: trunks N times as wide as 0267 (2: x1.0), started from 0267 widened "
                             "without changing its function (default: the trained weights', else 1)")
    parser.add_argument("--osnet-weights", choices=OSNET_SOURCES, default=None,
                        help="pretrained OSNet the trunks start from: 0267 (x0.5) or 0277 (x1.0, needs "
                             "--osnet-width 2, from its port in weights/); trained weights are merged over them "
                             "(default: what the trained weights record, else 0267)")
    parser.add_argument("--second-rgb-trunk-share", type=float, default=None, metavar="S",
                        help="share of the second RGB trunk (0267) in RGB-to-RGB similarity, over the trained "
                             "weights' (see AIOConfig; 0: none)")
    parser.add_argument("--trained", default=str(DEFAULT_TRAINED),
                        help="trained tokenizer/head safetensors to merge, or 'none' for the untrained model")
    args = parser.parse_args()
    build(args.out, args.encoder, None if args.trained == "none" else Path(args.trained), args.image_size,
          args.image_tokenizer, args.osnet_embedding_skip, args.text_embedding_skip, tuple(args.osnet_modality_trunks),
          args.osnet_width, args.osnet_weights, args.second_rgb_trunk_share)
    if args.out.resolve() == (REPO_ROOT / "aio-reid").resolve():
        print(f"linked {link_default(args.out)} -> {args.out.resolve()}")


if __name__ == "__main__":
    main()
