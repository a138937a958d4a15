"""The demo search behind `make demo`: the bundled PKU-Sketch gallery (24 photos of 12 people) searched by a text, a
sketch and an IR query, the top-k of each printed with a check mark where the identity is right.

The IR query is synthesised from one camera's photo (grayscale, the evaluation-time IR stand-in) and, as in the
composed-query protocol, that source photo is removed from its gallery.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from processing_aio.synthesis import grayscale_ir

from ..checkpoint.paths import REPO_ROOT
from .searcher import AIOSearcher

DEMO = REPO_ROOT / "demo" / "pku_sketch"
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


def run_demo(model: str | Path, k: int = 5) -> None:
    """Indexes the demo gallery with `model` and prints the three searches."""
    searcher = AIOSearcher.from_pretrained(model)
    gallery = searcher.index(DEMO / "photo")
    print(f"demo gallery: {len(gallery.paths)} photos of {len({person_of(p) for p in gallery.paths})} people "
          f"(PKU-Sketch, Pang et al., ACM MM 2018); model: {model}")

    show(f'text query: "{TEXT_QUERY}"  (person {TEXT_PERSON})', TEXT_PERSON,
         searcher.search(gallery, k=k, text=TEXT_QUERY))
    show(f"sketch query: sketch/{SKETCH_PERSON}.jpg (hand-drawn)", SKETCH_PERSON,
         searcher.search(gallery, k=k, sketch=str(DEMO / "sketch" / f"{SKETCH_PERSON}.jpg")))

    source = sorted((DEMO / "photo").glob(f"{IR_PERSON}_*.jpg"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        ir_path = Path(tmp) / f"ir_from_{source.name}"
        grayscale_ir(Image.open(source)).save(ir_path)
        show(f"IR query: synthetic IR of {source.name} (source photo removed from its gallery)", IR_PERSON,
             searcher.search(gallery, k=k, exclude=[str(source)], ir=str(ir_path)))


__all__ = ["run_demo", "DEMO"]
