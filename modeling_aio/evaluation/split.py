"""The fixed development split (`splits/dev_split.json`): identities of `../shared/data` kept out of training.

Seeded and deterministic, so that everyone evaluates on the same identities; training code reads this file and
refuses to see the held-out ids. Kept out: 50 PKU-Sketch ids (sketch -> photo), 200 CUHK-PEDES val ids (with their
captions, text -> image), 300 pooled RGB ids (person_id of `CUHK-PEDES/index.csv`, RGB -> RGB).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

DESCRIPTION = ("Write the fixed development split (`splits/dev_split.json`): identities of `../shared/data` kept out "
               "of training.")


def make_split(data_root: Path, seed: int = 2024) -> dict:
    """The split's identities, drawn with `seed` from the datasets under `data_root`."""
    rng = random.Random(seed)
    sketch_ids = sorted(int(p.stem) for p in (data_root / "PKUSketchRE-ID_V1" / "sketch").glob("*.jpg"))
    photo_ids = {int(p.name.split("_")[0]) for p in (data_root / "PKUSketchRE-ID_V1" / "photo").glob("*.jpg")}
    complete = [i for i in sketch_ids if i in photo_ids]
    pku_held = sorted(rng.sample(complete, 50))

    with open(data_root / "CUHK-PEDES" / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    val_ids = sorted({r["pedes_id"] for r in rows if r["pedes_split"] == "val"}, key=int)
    pedes_held = sorted(rng.sample(val_ids, 200), key=int)
    held_people = {r["person_id"] for r in rows if r["pedes_id"] in set(pedes_held)}
    # Pooled RGB ids: people with >= 2 images from >= 2 cameras (or 2 images where cameras are unknown), not already
    # held out through CUHK-PEDES val.
    by_person: dict[str, list[dict]] = {}
    for r in rows:
        if r["pedes_split"] == "train":
            by_person.setdefault(r["person_id"], []).append(r)
    eligible = sorted(p for p, rs in by_person.items() if len(rs) >= 2 and p not in held_people
                      and (len({r["camera"] for r in rs}) >= 2 or not rs[0]["camera"]))
    pooled_held = sorted(rng.sample(eligible, 300))
    return {
        "seed": seed,
        "description": DESCRIPTION,
        "pku_sketch_test_ids": pku_held,
        "cuhk_pedes_test_pedes_ids": pedes_held,
        "pooled_test_person_ids": pooled_held,
    }


CROSS_DOMAIN_DESCRIPTION = ("A whole source held out of training for cross-domain RGB -> RGB: every CUHK01 identity of "
                            "`../shared/data/CUHK-PEDES/index.csv`, camera c1 photos searched among camera c2 photos.")


def make_cross_domain_split(data_root: Path, source: str = "cuhk01") -> dict:
    """Every identity of `source` in the pooled index, which training leaves out (`training.recipe`), with the
    cameras of its cam-to-cam protocol."""
    with open(data_root / "CUHK-PEDES" / "index.csv", newline="") as handle:
        people = sorted({r["person_id"] for r in csv.DictReader(handle) if r["source"] == source})
    return {"description": CROSS_DOMAIN_DESCRIPTION, "source": source, "query_camera": "c1", "gallery_camera": "c2",
            "person_ids": people}


TEXT_GALLERY_DESCRIPTION = (
    "Full-size text -> RGB development protocol: every caption of the CUHK-PEDES development identities "
    "(`text_query_person_ids`, the `cuhk_pedes_test_pedes_ids` of splits/dev_split.json) searched among every photo "
    "of `person_ids`: those identities plus every other identity that training leaves out (the pooled development "
    "ids and the cross-domain source), as distractors.")


def make_text_gallery_split(data_root: Path, development: dict, cross_domain: dict) -> dict:
    """The full-size text protocol's identities (pooled `person_id`s of `CUHK-PEDES/index.csv`): the queries' people
    and a gallery of every identity held out of training by `development` and `cross_domain`, with its photo count."""
    with open(data_root / "CUHK-PEDES" / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pedes = {str(i) for i in development["cuhk_pedes_test_pedes_ids"]}
    queries = sorted({r["person_id"] for r in rows if r["pedes_id"] in pedes})
    gallery = sorted(set(queries) | set(development["pooled_test_person_ids"]) | set(cross_domain["person_ids"]))
    held = set(gallery)
    return {"description": TEXT_GALLERY_DESCRIPTION, "gallery_photos": sum(r["person_id"] in held for r in rows),
            "text_query_person_ids": queries, "person_ids": gallery}


__all__ = ["make_split", "make_cross_domain_split", "make_text_gallery_split", "DESCRIPTION", "CROSS_DOMAIN_DESCRIPTION",
           "TEXT_GALLERY_DESCRIPTION"]
