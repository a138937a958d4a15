"""Pictures of a search: the query (images and/or text) beside its ranked gallery, as PNG or HTML.

Borders are green where the hit's person id equals the query's, red where it differs, grey where ids are unknown.
"""

from __future__ import annotations

import html
import textwrap
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageOps

TILE = (96, 192)
COLOURS = {True: (40, 170, 60), False: (210, 40, 40), None: (150, 150, 150)}


def _verdict(hit, query_id: str | None) -> bool | None:
    if query_id is None or hit.person_id is None:
        return None
    return hit.person_id == query_id


def _tile(image: Image.Image, border: tuple[int, int, int], label: str) -> Image.Image:
    tile = Image.new("RGB", (TILE[0], TILE[1] + 18), "white")
    inner = ImageOps.pad(image.convert("RGB"), (TILE[0] - 8, TILE[1] - 8), color=(255, 255, 255))
    framed = ImageOps.expand(inner, border=4, fill=border)
    tile.paste(framed, (0, 0))
    ImageDraw.Draw(tile).text((3, TILE[1] + 3), label, fill=(0, 0, 0))
    return tile


def render_png(query: dict[str, str], hits: Sequence, out: str | Path, query_id: str | None = None) -> Path:
    """Writes a PNG: query tiles (images; text wrapped in a box) then the ranked hits with scores."""
    tiles = []
    for modality, value in query.items():
        if modality == "text":
            box = Image.new("RGB", TILE, (245, 245, 235))
            ImageDraw.Draw(box).multiline_text((4, 4), "\n".join(textwrap.wrap(value, 15)[:14]), fill=(0, 0, 0))
            tiles.append(_tile(box, (60, 60, 160), "text"))
        else:
            tiles.append(_tile(Image.open(value), (60, 60, 160), modality))
    gap = 24
    width = TILE[0] * (len(tiles) + len(hits)) + gap
    sheet = Image.new("RGB", (width, TILE[1] + 18), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += TILE[0]
    x += gap
    for hit in hits:
        tile = _tile(Image.open(hit.path), COLOURS[_verdict(hit, query_id)], f"#{hit.rank} {hit.score:.3f}")
        sheet.paste(tile, (x, 0))
        x += TILE[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def render_html(query: dict[str, str], hits: Sequence, out: str | Path, query_id: str | None = None) -> Path:
    """Writes a self-describing HTML page that links the query and hit images by absolute path."""
    def css(verdict):
        return "rgb({},{},{})".format(*COLOURS[verdict])

    parts = ["<!doctype html><meta charset='utf-8'><title>aio-reid search</title>",
             "<style>figure{display:inline-block;margin:4px;text-align:center;font:12px sans-serif}"
             "img{height:192px;border:4px solid}</style><h2>Query</h2>"]
    for modality, value in query.items():
        if modality == "text":
            parts.append(f"<p><b>text:</b> {html.escape(value)}</p>")
        else:
            parts.append(f"<figure><img src='{Path(value).resolve().as_uri()}' style='border-color:#3c3ca0'>"
                         f"<figcaption>{html.escape(modality)}</figcaption></figure>")
    kind = hits[0].score_kind if hits else "cosine similarity"
    parts.append(f"<h2>Ranked gallery</h2><p>score: {html.escape(kind)} (higher is better)</p>")
    for hit in hits:
        parts.append(f"<figure><img src='{Path(hit.path).resolve().as_uri()}' "
                     f"style='border-color:{css(_verdict(hit, query_id))}'><figcaption>#{hit.rank} "
                     f"{hit.score:.3f}<br>{html.escape(Path(hit.path).name)}</figcaption></figure>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


__all__ = ["render_png", "render_html"]
