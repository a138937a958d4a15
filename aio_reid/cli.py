"""`aio-reid` command line: index a folder of person crops, then search it by text, sketch, IR or RGB.

    aio-reid index GALLERY_DIR --out INDEX_DIR [--model aio-reid] [--layout market1501|...|REGEX]
    aio-reid index GALLERY_DIR --db DB_URI [--timestamps CSV] [--source NAME]     (a database gallery, incremental)
    aio-reid search INDEX_DIR|DB_URI [--text "..."] [--sketch FILE] [--ir FILE] [--rgb FILE] [-k 10]
                    [--camera 3,4,7] [--after 2026-12-01T14:00] [--before ...] [--source NAME]
    aio-reid delete DB_URI --before DATE | --after DATE | --source NAME | --camera IDS
    aio-reid export [--model aio-reid] [--backend onnx|openvino]
    aio-reid export --backend openvino-int8 --calibration-images FOLDER   (the fast RGB gallery encoder in int8)

The model `aio-reid` is the checkpoint `make demo` built (see `modeling_aio.checkpoint.locate`). `index` is
resumable (finished chunks are kept in INDEX_DIR/parts) and shards the gallery across processes when run under
`accelerate launch --multi_gpu --num_processes N -m aio_reid.cli index ...`. Commands only wrap
`modeling_aio.search.AIOSearcher` and `modeling_aio.export`; torch, transformers and faiss load only for a command
that needs them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

#: What each command needs beyond the base install, and the extra that brings it.
NEEDS: dict[str, list[tuple[str, str, str]]] = {
    "index": [("faiss", "faiss-cpu", "search")],
    "search": [("faiss", "faiss-cpu", "search")],
    "db": [("lancedb", "lancedb", "db")],
    "export-onnx": [("onnx", "onnx", "export"), ("onnxruntime", "onnxruntime", "export"),
                    ("google.protobuf", "protobuf", "export")],
    "export-openvino": [("openvino", "openvino", "export")],
    "export-openvino-int8": [("openvino", "openvino", "export"), ("nncf", "nncf", "int8")],
}


class MissingExtraError(RuntimeError):
    """A command needs a package of an optional extra that is not installed."""


def require(need: str) -> None:
    """Refuses at once, naming the extra to install, when a package `need` uses is missing."""
    for module, package, extra in NEEDS[need]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a missing parent package
            found = False
        if not found:
            raise MissingExtraError(f"`aio-reid {need.split('-')[0]}` needs {package}, which is not installed: "
                                    f"pip install 'aio-reid[{extra}]'")


#: `modeling_aio.export.BACKENDS`, spelled out so that parsing the command line imports no torch.
BACKENDS = ("torch", "torch-bf16", "torch-bf16-compiled", "torch-fast", "onnx", "openvino", "openvino-int8")
#: Most photos an int8 graph is calibrated on (evenly spaced through the folder).
CALIBRATION_PHOTOS = 640


def backend_need(backend: str) -> list[str]:
    """What running `backend` needs (an int8 graph runs on OpenVINO alone; only making it needs nncf)."""
    return [] if backend.startswith("torch") else [f"export-{backend.removesuffix('-int8')}"]


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _index(args: argparse.Namespace) -> int:
    if args.db is not None:
        return _index_into_db(args)
    database_only = [flag for flag, value in (("--timestamps", args.timestamps), ("--source", args.source)) if value]
    if database_only:
        print(f"error: {' and '.join(database_only)} label a database gallery (--db DB_URI); an --out index keeps "
              "paths, person ids and cameras only", file=sys.stderr)
        return 2
    for need in ["index", *backend_need(args.backend)]:
        require(need)
    from modeling_aio.search import AIOSearcher, merge_parts

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
    with_ids = sum(m.get("person_id") is not None for m in gallery.metadata)
    ids = f"; person ids for {with_ids}" if args.layout else ""
    print(f"indexed {len(gallery.paths)} images of {args.gallery} into {args.out} "
          f"({world_size} process{'es' if world_size > 1 else ''}; faiss {gallery.faiss_kind}{recall}{ids})")
    if gallery.failures:
        print(f"{len(gallery.failures)} files could not be used:")
        for _, reason in gallery.failures:
            print(f"  {reason}")
    return 0


def _index_into_db(args: argparse.Namespace) -> int:
    for need in ["db", *backend_need(args.backend)]:
        require(need)
    from modeling_aio.search import AIOSearcher

    searcher = AIOSearcher.from_pretrained(args.model, batch_size=args.batch_size, backend=args.backend)
    store, added, failures = searcher.index_into_store(args.gallery, args.db, modality=args.modality, layout=args.layout,
                                                       timestamps=args.timestamps, source=args.source, progress=True)
    print(f"added {added} images of {args.gallery} to {args.db}; it holds {len(store)}")
    if failures:
        print(f"{len(failures)} files could not be used:")
        for _, reason in failures:
            print(f"  {reason}")
    return 0


def filters_of(args: argparse.Namespace):
    """The `GalleryFilter` of --camera / --after / --before / --source, or None when none is given."""
    from modeling_aio.search.store import GalleryFilter, parse_time

    split = lambda text: [part.strip() for part in text.split(",") if part.strip()] if text else None  # noqa: E731
    selection = GalleryFilter(cameras=split(args.camera), sources=split(args.source),
                              after=parse_time(args.after, "--after") if args.after else None,
                              before=parse_time(args.before, "--before") if args.before else None)
    return selection if selection else None


def _search(args: argparse.Namespace) -> int:
    query = {name: getattr(args, name) for name in ("text", "sketch", "ir", "rgb") if getattr(args, name) is not None}
    if not query:
        print("error: give at least one of --text, --sketch, --ir, --rgb", file=sys.stderr)
        return 2
    if args.k < 1:
        print(f"error: -k must be at least 1, got {args.k}", file=sys.stderr)
        return 2
    if args.rescore is not None and args.rescore < 0:
        print(f"error: --rescore must be 0 or more, got {args.rescore}", file=sys.stderr)
        return 2
    from modeling_aio.search.store import is_store

    database = is_store(args.index)
    for need in ["db" if database else "search", *backend_need(args.backend)]:
        require(need)
    from modeling_aio.search import AIOSearcher, GalleryIndex, GalleryStore
    from modeling_aio.search.searcher import RESCORE_TOP_K

    filters = filters_of(args)
    gallery = GalleryStore.open(args.index) if database else GalleryIndex.load(args.index)
    searcher = AIOSearcher.from_pretrained(args.model, backend=args.backend)
    exclude = [value for name, value in query.items() if name != "text"] if args.exclude_query else []
    hits = searcher.search(gallery, k=args.k, rerank=args.rerank, id_pattern=args.id_pattern, exclude=exclude,
                           filters=filters, rescore=RESCORE_TOP_K if args.rescore is None else args.rescore, **query)
    if args.query_id is not None and all(hit.person_id is None for hit in hits):
        print("error: --query-id needs person ids: index with --layout, or give --id-pattern", file=sys.stderr)
        return 2
    print("query: " + ", ".join(f"{k}={v!r}" for k, v in query.items()))
    kind = hits[0].score_kind if hits else "cosine similarity"
    print(f"rank  score ({kind}, higher is better)  path")
    for hit in hits:
        verdict = "" if args.query_id is None or hit.person_id is None else (
            "  match" if hit.person_id == args.query_id else "  other")
        where = f"  camera {hit.camera} at {hit.timestamp:%Y-%m-%dT%H:%M:%S}" if database and hit.timestamp else ""
        print(f"{hit.rank:4d}  {hit.score:.4f}  {hit.path}{verdict}{where}")
    if args.png or args.html:
        from modeling_aio.search.visualize import render_html, render_png

        if args.png:
            print(f"wrote {render_png(query, hits, args.png, args.query_id)}")
        if args.html:
            print(f"wrote {render_html(query, hits, args.html, args.query_id)}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    require("db")
    from modeling_aio.search import GalleryStore

    selection = filters_of(args)
    if selection is None:
        print("error: give at least one of --before, --after, --source, --camera", file=sys.stderr)
        return 2
    store = GalleryStore.open(args.db)
    print(f"deleted {store.delete(selection)} entries of {args.db} ({selection.where()}); it holds {len(store)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    require(f"export-{args.backend}")
    from modeling_aio.checkpoint.locate import load_model
    from modeling_aio.export import export_checkpoint

    model, folder = load_model(args.model)
    if args.backend == "openvino-int8":
        return _export_int8(model, Path(folder), args.calibration_images)
    for path, cosine in export_checkpoint(model, Path(folder), args.backend).items():
        print(f"wrote {path} (cosine to PyTorch on a check batch: {cosine:.6f})")
    return 0


def _export_int8(model, folder: Path, calibration_images: Path | None) -> int:
    """The RGB gallery encoder in int8, calibrated on up to `CALIBRATION_PHOTOS` of the folder's images, beside the
    float OpenVINO graphs that the other modalities use."""
    from PIL import Image

    from modeling_aio.export import export_checkpoint, export_rgb_gallery_int8, graphs_are_current, rgb_pixel_batches
    from modeling_aio.search.searcher import list_images

    if calibration_images is None:
        print("error: --backend openvino-int8 needs --calibration-images FOLDER (a few hundred RGB person crops "
              "like those you will index)", file=sys.stderr)
        return 2
    photos = [p for p in list_images(calibration_images) if p.suffix.lower() in Image.registered_extensions()]
    if not photos:
        raise ValueError(f"--calibration-images {calibration_images} holds no images.")
    photos = photos[::-(-len(photos) // CALIBRATION_PHOTOS)]
    size = model.config.rgb_gallery_image_size
    if size is None:
        raise ValueError(f"{folder} has no RGB gallery encoder (`config.rgb_gallery_image_size` is None).")
    if not graphs_are_current(model, folder, "openvino"):  # the other modalities' graphs, beside it
        export_checkpoint(model, folder, "openvino")
    xml, cosine = export_rgb_gallery_int8(model, folder, rgb_pixel_batches(photos, size))
    print(f"wrote {xml} (calibrated on {len(photos)} photos of {calibration_images}; worst cosine to PyTorch "
          f"{cosine:.4f} on the first {min(32, len(photos))})")
    return 0


MODEL_HELP = ("checkpoint folder, or `aio-reid` for the one `make demo` built (found from any directory: "
              "$AIO_REID_MODEL, then ~/.cache/aio-reid/aio-reid), or a Hub id")
BACKEND_HELP = ("run the model with PyTorch (float32, or bfloat16 autocast on CPUs that have it, optionally "
                "compiled), or with its ONNX / OpenVINO export (single-modality queries); torch-fast and "
                "openvino-int8 embed RGB photos with the fast RGB gallery encoder, in float32 or in int8 (`aio-reid "
                "export --backend openvino-int8` first), and searches re-score the top hits by the full model")


def add_filter_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--camera", help=f"{what} of these cameras (comma-separated ids), database galleries only")
    parser.add_argument("--after", help=f"{what} from this time on (ISO 8601, e.g. 2026-12-01T14:00; naive = UTC)")
    parser.add_argument("--before", help=f"{what} before this time (ISO 8601)")
    parser.add_argument("--source", help=f"{what} of these sources (comma-separated)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aio-reid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="embed every image of a folder into a searchable index")
    index.add_argument("gallery", type=Path, help="folder of person crops (searched recursively)")
    target = index.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="index folder to write (faiss; resumed if interrupted)")
    target.add_argument("--db", help="database gallery to add to (LanceDB: a folder, s3://..., db://...): new files "
                                     "only, with camera, time and source for filtered search")
    index.add_argument("--timestamps", type=Path, default=None,
                       help="with --db: CSV with columns path,timestamp[,camera] (default: the layout's time group, "
                            "else each file's modification time)")
    index.add_argument("--source", default=None, help="with --db: the source of these images (default: folder name)")
    index.add_argument("--model", default="aio-reid", help=MODEL_HELP)
    index.add_argument("--modality", choices=("rgb", "ir", "sketch"), default="rgb", help="what the gallery images are")
    index.add_argument("--batch-size", type=positive_int, default=32, help="images embedded per forward pass")
    index.add_argument("--faiss", choices=("auto", "flat", "hnsw", "ivf"), default="auto",
                       help="faiss index kind (auto: exact up to 50k images, HNSW up to 2M, IVF beyond)")
    index.add_argument("--layout", default=None,
                       help="record person id and camera from each path relative to the gallery folder: market1501, "
                            "dukemtmc-reid, msmt17, pku-sketch, or a regex with groups id and camera (named "
                            r"(?P<id>...) (?P<camera>...), or groups 1 and 2), e.g. '(\d+)/(\d+)_\d+\.jpg'")
    index.add_argument("--backend", choices=BACKENDS, default="torch", help=BACKEND_HELP)
    index.set_defaults(run=_index)
    search = commands.add_parser("search", help="rank an indexed gallery for one composed query")
    search.add_argument("index", help="index folder written by `aio-reid index --out`, or a database gallery URI "
                                      "(`--db`)")
    search.add_argument("--text", help="a description of the person")
    search.add_argument("--sketch", help="a hand-drawn sketch image")
    search.add_argument("--ir", help="an infrared image")
    search.add_argument("--rgb", help="an RGB photo")
    search.add_argument("-k", type=int, default=10, help="number of results (at least 1)")
    search.add_argument("--exclude-query", action="store_true",
                        help="leave the query images themselves out of the results (when they are in the gallery)")
    search.add_argument("--rerank", action="store_true",
                        help="k-reciprocal re-ranking of the top 100; the score becomes 1 - the re-ranked distance")
    search.add_argument("--rescore", type=int, default=None, metavar="N",
                        help="with --backend torch-fast or openvino-int8: the index's top N hits (default 50) are "
                             "ranked by the full model's vectors of those photos (0: the fast index's ranking alone)")
    search.add_argument("--png", type=Path, help="write a picture of the query and its results here")
    search.add_argument("--html", type=Path, help="write an HTML page of the query and its results here")
    search.add_argument("--id-pattern", default=None,
                        help="regex whose group 1 (or group `id`) is the person id in each result's path relative to "
                             r"the gallery folder, e.g. '(\d+)/\d+_\d+\.jpg' (default: the ids --layout recorded)")
    search.add_argument("--query-id", default=None, help="person id of the query: results are marked match / other")
    search.add_argument("--model", default="aio-reid", help=MODEL_HELP)
    search.add_argument("--backend", choices=BACKENDS, default="torch", help=BACKEND_HELP)
    add_filter_options(search, "only results")
    search.set_defaults(run=_search)
    delete = commands.add_parser("delete", help="delete entries of a database gallery by time, source or camera")
    delete.add_argument("db", help="database gallery URI written by `aio-reid index --db`")
    add_filter_options(delete, "delete entries")
    delete.set_defaults(run=_delete)
    export = commands.add_parser("export", help="export ONNX (or OpenVINO IR) of the image and text paths")
    export.add_argument("--model", default="aio-reid", help=MODEL_HELP)
    export.add_argument("--backend", choices=("onnx", "openvino", "openvino-int8"), default="onnx",
                        help="export format; openvino-int8: the fast RGB gallery encoder in int8 (needs "
                             "--calibration-images), for `--backend openvino-int8` of index and search")
    export.add_argument("--calibration-images", type=Path, metavar="FOLDER",
                        help="RGB person crops to calibrate the int8 graph on (up to 640, evenly spaced)")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MissingExtraError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written loads; run the same command again to resume.", file=sys.stderr)
        return 130
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
