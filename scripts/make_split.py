#!/usr/bin/env python
"""Write the fixed development split (`splits/dev_split.json`), with `--cross-domain` the held-out source of the
cross-domain RGB protocol (`splits/cross_domain_cuhk01.json`), or with `--text-gallery` the full-size text protocol
built from those two (`splits/text_full_gallery.json`): identities of `../shared/data` kept out of training (see
`modeling_aio.evaluation.split`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modeling_aio.checkpoint.paths import CROSS_DOMAIN_SPLIT_FILE, SHARED, SPLIT_FILE, TEXT_GALLERY_SPLIT_FILE
from modeling_aio.evaluation.split import make_cross_domain_split, make_split, make_text_gallery_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=SHARED / "data", help="the ../shared/data folder")
    parser.add_argument("--out", type=Path, default=None, help="split file to write (default: the split's own)")
    parser.add_argument("--cross-domain", action="store_true",
                        help="write the cross-domain split (every CUHK01 identity) instead of the development one")
    parser.add_argument("--text-gallery", action="store_true",
                        help="write the full-size text protocol from the development and cross-domain splits")
    args = parser.parse_args()
    if args.text_gallery:
        split = make_text_gallery_split(args.data_root, json.loads(SPLIT_FILE.read_text()),
                                        json.loads(CROSS_DOMAIN_SPLIT_FILE.read_text()))
        args.out = args.out or TEXT_GALLERY_SPLIT_FILE
    else:
        split = make_cross_domain_split(args.data_root) if args.cross_domain else make_split(args.data_root)
        args.out = args.out or (CROSS_DOMAIN_SPLIT_FILE if args.cross_domain else SPLIT_FILE)
    args.out.write_text(json.dumps(split, indent=1) + "\n")
    print(f"wrote {args.out}: " + ", ".join(f"{k}={len(v)}" for k, v in split.items() if isinstance(v, list)))


if __name__ == "__main__":
    main()
