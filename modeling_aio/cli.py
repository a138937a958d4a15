"""`aio-reid` command line: index a folder of person crops, then search it by text, sketch, IR or RGB.

    aio-reid index GALLERY_DIR --out INDEX_DIR [--model aio-reid] [--modality rgb]
    aio-reid search INDEX_DIR [--text "..."] [--sketch FILE] [--ir FILE] [--rgb FILE] [-k 10]

It only wraps `modeling_aio.search.AIOSearcher`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing_aio import ImageInputError


def _index(args: argparse.Namespace) -> int:
    from .search import AIOSearcher

    searcher = AIOSearcher.from_pretrained(args.model, batch_size=args.batch_size)
    gallery = searcher.index(args.gallery, modality=args.modality, progress=True)
    gallery.save(args.out)
    print(f"indexed {len(gallery.paths)} images of {args.gallery} into {args.out}")
    if gallery.failures:
        print(f"{len(gallery.failures)} files could not be used:")
        for path, reason in gallery.failures:
            print(f"  {reason}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from .search import AIOSearcher, GalleryIndex

    query = {name: getattr(args, name) for name in ("text", "sketch", "ir", "rgb") if getattr(args, name) is not None}
    if not query:
        print("error: give at least one of --text, --sketch, --ir, --rgb", file=sys.stderr)
        return 2
    gallery = GalleryIndex.load(args.index)
    searcher = AIOSearcher.from_pretrained(args.model)
    hits = searcher.search(gallery, k=args.k, **query)
    print("query: " + ", ".join(f"{k}={v!r}" for k, v in query.items()))
    for hit in hits:
        print(f"{hit.rank:4d}  {hit.score:+.4f}  {hit.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aio-reid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="embed every image of a folder")
    index.add_argument("gallery", type=Path)
    index.add_argument("--out", type=Path, required=True)
    index.add_argument("--model", default="aio-reid")
    index.add_argument("--modality", choices=("rgb", "ir", "sketch"), default="rgb")
    index.add_argument("--batch-size", type=int, default=32)
    index.set_defaults(run=_index)
    search = commands.add_parser("search", help="rank an indexed gallery for one composed query")
    search.add_argument("index", type=Path)
    search.add_argument("--text")
    search.add_argument("--sketch")
    search.add_argument("--ir")
    search.add_argument("--rgb")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--model", default="aio-reid")
    search.set_defaults(run=_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ImageInputError, FileNotFoundError, NotADirectoryError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
