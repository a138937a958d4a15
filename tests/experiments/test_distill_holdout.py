"""scripts/distill_holdout.py: the held-aside identities never reach distillation, and the leave-one-out score
ranks a photo's other shots first when the embedding tells people apart."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from modeling_aio import AIOImageProcessor

from modeling_aio.experiments import distill_holdout




def records_of(photos_per_identity: dict[str, int]) -> list[dict]:
    return [{"image": f"{identity}_{n}.jpg", "identity": identity}
            for identity, count in photos_per_identity.items() for n in range(count)]


def test_split_holds_whole_identities_with_two_photos_and_repeats_from_its_seed():
    records = records_of({f"pooled:{i}": 1 + i % 3 for i in range(30)})
    train, held = distill_holdout.split_held_aside(records, 5, seed=7)
    held_ids = {r["identity"] for r in held}
    assert len(held_ids) == 5 and not held_ids & {r["identity"] for r in train}
    assert len(train) + len(held) == len(records)
    assert all(sum(r["identity"] == i for r in records) >= 2 for i in held_ids)
    assert held == sorted(held, key=lambda r: r["image"])
    assert distill_holdout.split_held_aside(records, 5, seed=7) == (train, held)
    assert distill_holdout.split_held_aside(records, 5, seed=8)[1] != held
    with pytest.raises(ValueError, match="two photos"):
        distill_holdout.split_held_aside(records, 25, seed=7)


def test_leave_one_out_removes_the_query_itself(tmp_path):
    colours = {"a": (250, 0, 0), "b": (0, 250, 0), "c": (0, 0, 250)}
    records = []
    for identity, colour in colours.items():
        for shot in range(2):
            path = tmp_path / f"{identity}{shot}.png"
            Image.new("RGB", (32, 64), tuple(max(0, c - 40 * shot) for c in colour)).save(path)
            records.append({"image": str(path), "identity": identity})

    def mean_colour(pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(2, 3))

    assert distill_holdout.leave_one_out_metrics(mean_colour, AIOImageProcessor(), records, batch_size=4) == {
        "rank-1": 100.0, "mAP": 100.0}
    # each person in one red and one blue shot: every photo's nearest other photo is the other person's
    crossed = []
    for identity, shades in {"a": ((250, 0, 0), (0, 0, 250)), "b": ((230, 0, 0), (0, 0, 230))}.items():
        for shot, colour in enumerate(shades):
            path = tmp_path / f"x{identity}{shot}.png"
            Image.new("RGB", (32, 64), colour).save(path)
            crossed.append({"image": str(path), "identity": identity})
    assert distill_holdout.leave_one_out_metrics(mean_colour, AIOImageProcessor(), crossed)["rank-1"] == 0.0
