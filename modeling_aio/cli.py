"""`aio-reid` command line: index a folder of person crops, then search it by text, sketch, IR or RGB.

    aio-reid index GALLERY_DIR --out INDEX_DIR [--model aio-reid] [--modality rgb] [--faiss auto|flat|hnsw|ivf]
                   [--layout market1501|dukemtmc-reid|msmt17|pku-sketch|REGEX]
    aio-reid search INDEX_DIR [--text "..."] [--sketch FILE] [--ir FILE] [--rgb FILE] [-k 10] [--rerank]
                    [--png OUT.png] [--html OUT.html] [--id-pattern REGEX --query-id ID] [--backend torch|onnx|openvino]
    aio-reid export --model aio-reid [--backend onnx|openvino]

`index` is resumable (finished chunks are kept in INDEX_DIR/parts) and shards the gallery across processes when run
under `accelerate launch --multi_gpu --num_processes N -m modeling_aio.cli index ...`. It only wraps
`modeling_aio.search.AIOSearcher`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing_aio import ImageInputError


def _index(args: argparse.Namespace) -> int:
    from .search import AIOSearcher, merge_parts

    rank, world_size, state = 0, 1, None
    try:
        from accelerate import PartialState

        state = PartialState(cpu=True)
        rank, world_size = state.process_index, state.num_processes
    except Exception:  # accelerate missing or not initialisable: one process
        pass
    searcher = AIOSearcher.from_pretrained(args.model, batch_size=args.batch_size, backend=args.backend)
    gallery = searcher.index(args.gallery, modality=args.modality, progress=True, out_dir=args.out,
                             faiss_kind=args.faiss, rank=rank, world_size=world_size, layout=args.layout)
    if world_size > 1:
        state.wait_for_everyone()
        if rank != 0:
            return 0
        gallery = merge_parts(args.out, args.faiss)
    recall = f", recall@10 {gallery.recall_at_10:.3f}" if gallery.recall_at_10 is not None else ""
    print(f"indexed {len(gallery.paths)} images of {args.gallery} into {args.out} "
          f"({world_size} process{'es' if world_size > 1 else ''}; faiss {gallery.faiss_kind}{recall})")
    if gallery.failures:
        print(f"{len(gallery.failures)} files could not be used:")
        for _, reason in gallery.failures:
            print(f"  {reason}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from .search import AIOSearcher, GalleryIndex

    query = {name: getattr(args, name) for name in ("text", "sketch", "ir", "rgb") if getattr(args, name) is not None}
    if not query:
        print("error: give at least one of --text, --sketch, --ir, --rgb", file=sys.stderr)
        return 2
    gallery = GalleryIndex.load(args.index)
    searcher = AIOSearcher.from_pretrained(args.model, backend=args.backend)
    hits = searcher.search(gallery, k=args.k, rerank=args.rerank, id_pattern=args.id_pattern, **query)
    print("query: " + ", ".join(f"{k}={v!r}" for k, v in query.items()))
    for hit in hits:
        verdict = "" if args.query_id is None or hit.person_id is None else (
            "  match" if hit.person_id == args.query_id else "  other")
        print(f"{hit.rank:4d}  {hit.score:+.4f}  {hit.path}{verdict}")
    if args.png or args.html:
        from .search.visualize import render_html, render_png

        if args.png:
            print(f"wrote {render_png(query, hits, args.png, args.query_id)}")
        if args.html:
            print(f"wrote {render_html(query, hits, args.html, args.query_id)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import modeling_aio  # noqa: F401
    from transformers import AutoModel

    from .export import export_checkpoint

    model = AutoModel.from_pretrained(args.model)
    for path, cosine in export_checkpoint(model, Path(args.model), args.backend).items():
        print(f"wrote {path} (cosine to PyTorch on a check batch: {cosine:.6f})")
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
    index.add_argument("--faiss", choices=("auto", "flat", "hnsw", "ivf"), default="auto")
    index.add_argument("--layout", default=None,
                       help="record person id and camera from file names: market1501, dukemtmc-reid, msmt17, "
                            "pku-sketch, or a regex whose groups 1 and 2 are id and camera")
    index.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch")
    index.set_defaults(run=_index)
    search = commands.add_parser("search", help="rank an indexed gallery for one composed query")
    search.add_argument("index", type=Path)
    search.add_argument("--text")
    search.add_argument("--sketch")
    search.add_argument("--ir")
    search.add_argument("--rgb")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking of the top 100")
    search.add_argument("--png", type=Path)
    search.add_argument("--html", type=Path)
    search.add_argument("--id-pattern", default=None,
                        help=r"regex whose group 1 is the person id in a file name, e.g. '^(\d+)_'")
    search.add_argument("--query-id", default=None, help="person id of the query, for green/red borders")
    search.add_argument("--model", default="aio-reid")
    search.add_argument("--backend", choices=("torch", "onnx", "openvino"), default="torch")
    search.set_defaults(run=_search)
    export = commands.add_parser("export", help="export ONNX (or OpenVINO IR) of the image and text paths")
    export.add_argument("--model", default="aio-reid")
    export.add_argument("--backend", choices=("onnx", "openvino"), default="onnx")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ImageInputError, FileNotFoundError, NotADirectoryError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
