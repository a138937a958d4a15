"""Which photos train (modeling_aio.training.recipe): the development identities and the whole held-out source of
the cross-domain protocol stay out."""

from __future__ import annotations

import json

import pytest

from modeling_aio.checkpoint.paths import CROSS_DOMAIN_SPLIT_FILE, SPLIT_FILE
from modeling_aio.training.recipe import shared_recipe

from conftest import requires_shared_data


@pytest.mark.slow
@requires_shared_data
def test_the_shared_recipe_leaves_out_the_dev_split_and_the_cross_domain_source():
    records = shared_recipe(SPLIT_FILE, None, 42)
    people = {r["identity"] for r in records}
    held = json.loads(CROSS_DOMAIN_SPLIT_FILE.read_text())["person_ids"]
    assert len(held) == 891 and not people & {f"pooled:{p}" for p in held}
    dev = json.loads(SPLIT_FILE.read_text())["pooled_test_person_ids"]
    assert not people & {f"pooled:{p}" for p in dev}
    with_cuhk01 = {r["identity"] for r in shared_recipe(SPLIT_FILE, None, 42, cross_domain_file=None)}
    added = with_cuhk01 - people  # CUHK01 people not already held out as development ids
    assert len(added) > 800 and all(identity.startswith("pooled:cuhk01:") for identity in added)
