"""Which photos train: the `../shared` recipe (the pooled CUHK-PEDES set with its captions, PKU-Sketch photos with
their real sketches, the two-camera set) minus every development identity, or any loader of
`processing_aio.datasets`; as records, then as labelled `TrainingItem`s.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from processing_aio.datasets import image_paths, load_reid_dataset

from ..checkpoint.paths import CROSS_DOMAIN_SPLIT_FILE, SHARED
from .data import TrainingItem

SHARED_DATA = SHARED / "data"


def items_from(dataset, prefix: str, exclude_ids: set[str], splits: set[str] | None = None) -> list[dict]:
    """RGB rows of a loaded dataset as training records, with the identity's real sketch when it has one."""
    columns = dataset.remove_columns("image").to_dict()
    paths = image_paths(dataset)
    sketches = {pid: path for pid, path, m in zip(columns["person_id"], paths, columns["modality"]) if m == "sketch"}
    records = []
    for path, pid, modality, split, captions in zip(paths, columns["person_id"], columns["modality"],
                                                    columns["split"], columns["captions"]):
        if modality != "rgb" or pid in exclude_ids or (splits is not None and split not in splits):
            continue
        records.append({"image": path, "identity": f"{prefix}:{pid}", "captions": captions,
                        "real_sketch": sketches.get(pid)})
    return records


def shared_recipe(split_file: Path, max_identities: int | None, seed: int,
                  cross_domain_file: Path | None = CROSS_DOMAIN_SPLIT_FILE) -> list[dict]:
    """The `../shared` training records, every identity of `split_file` and of `cross_domain_file` (a whole source
    held out for the cross-domain protocol; None keeps it) left out."""
    split = json.loads(split_file.read_text())
    held_pedes = {str(i) for i in split["cuhk_pedes_test_pedes_ids"]}
    pooled = load_reid_dataset("pooled", SHARED_DATA / "CUHK-PEDES")
    cross_domain = set(json.loads(cross_domain_file.read_text())["person_ids"]) if cross_domain_file else set()
    with open(SHARED_DATA / "CUHK-PEDES" / "index.csv", newline="") as handle:
        held_people = set(split["pooled_test_person_ids"]) | cross_domain | {
            row["person_id"] for row in csv.DictReader(handle) if row["pedes_id"] in held_pedes}
    records = items_from(pooled, "pooled", held_people)
    records += items_from(load_reid_dataset("pku-sketch", SHARED_DATA / "PKUSketchRE-ID_V1"), "pku",
                          {str(i) for i in split["pku_sketch_test_ids"]})
    records += items_from(load_reid_dataset("two-camera", SHARED_DATA / "pku_reid"), "twocam", set())
    return limit_identities(records, max_identities, seed)


def calibration_photos(count: int = 640) -> list[str]:
    """`count` training photos of the `../shared` recipe (every development and cross-domain identity left out),
    drawn apart from any training seed: what the int8 graphs are calibrated on."""
    import numpy as np

    from ..checkpoint.paths import SPLIT_FILE

    paths = [record["image"] for record in shared_recipe(SPLIT_FILE, None, 42)]
    return [paths[i] for i in np.sort(np.random.default_rng(0).choice(len(paths), min(count, len(paths)),
                                                                       replace=False))]


def limit_identities(records: list[dict], max_identities: int | None, seed: int) -> list[dict]:
    """At most `max_identities` identities: every captioned or sketched one, then a seeded draw of the rest."""
    if not max_identities:
        return records
    identities = sorted({r["identity"] for r in records})
    captioned = sorted({r["identity"] for r in records if r["captions"] or r["real_sketch"]})
    rest = sorted(set(identities) - set(captioned))
    random.Random(seed).shuffle(rest)
    keep = set(captioned) | set(rest[: max(0, max_identities - len(captioned))])
    return [r for r in records if r["identity"] in keep]


def build_items(records: list[dict]) -> tuple[list[TrainingItem], list[str]]:
    """Records as `TrainingItem`s labelled 0..N-1 in sorted identity order, and those identities."""
    identities = sorted({r["identity"] for r in records})
    label_of = {identity: i for i, identity in enumerate(identities)}
    items = [TrainingItem(r["image"], label_of[r["identity"]], list(r["captions"]), r["real_sketch"]) for r in records]
    return items, identities


__all__ = ["items_from", "shared_recipe", "limit_identities", "build_items", "SHARED_DATA"]
