#!/usr/bin/env python
"""Search the bundled PKU-Sketch demo gallery (24 photos of 12 people) by a text, a sketch and an IR query.

The IR query is synthesised from one camera's photo (grayscale, the evaluation-time IR stand-in) and, as in the
composed-query protocol, that source photo is removed from its gallery. Prints the top-5 of each query, with a
check mark where the identity is right.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from modeling_aio.search import AIOSearcher  # noqa: E402
from processing_aio.synthesis import grayscale_ir  # noqa: E402

DEMO = REPO / "demo" / "pku_sketch"
TEXT_QUERY = ("A young man with glasses wearing a black and white striped t-shirt, black pants and black shoes, "
              "carrying a black bag across his body.")
TEXT_PERSON = "47"
SKETCH_PERSON = "7"
IR_PERSON = "22"


def person_of(path: str) -> str:
    return Path(path).stem.split("_")[0]


def show(title: str, expected: str, hits) -> None:
    print(f"\n{title}")
    for hit in hits:
        mark = "✓" if person_of(hit.path) == expected else " "
        print(f"  {hit.rank:2d}. {mark} {Path(hit.path).name:22s} score {hit.score:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "aio-reid"))
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"error: no checkpoint at {args.model}; run `python scripts/build_checkpoint.py` first.")

    searcher = AIOSearcher.from_pretrained(args.model)
    gallery = searcher.index(DEMO / "photo")
    print(f"demo gallery: {len(gallery.paths)} photos of {len({person_of(p) for p in gallery.paths})} people "
          f"(PKU-Sketch, Pang et al., ACM MM 2018); model: {args.model}")

    show(f'text query: "{TEXT_QUERY}"  (person {TEXT_PERSON})', TEXT_PERSON,
         searcher.search(gallery, k=args.k, text=TEXT_QUERY))
    show(f"sketch query: sketch/{SKETCH_PERSON}.jpg (hand-drawn)", SKETCH_PERSON,
         searcher.search(gallery, k=args.k, sketch=str(DEMO / "sketch" / f"{SKETCH_PERSON}.jpg")))

    source = sorted((DEMO / "photo").glob(f"{IR_PERSON}_*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = Path(tmp) / f"ir_from_{source.name}"
        grayscale_ir(Image.open(source)).save(ir_path)
        show(f"IR query: synthetic IR of {source.name} (source photo removed from its gallery)", IR_PERSON,
             searcher.search(gallery, k=args.k, exclude=[str(source)], ir=str(ir_path)))


if __name__ == "__main__":
    main()
