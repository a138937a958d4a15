"""Modality synthesis (processing_aio.synthesis): deterministic under a seed, size-keeping, colour dropped."""

from __future__ import annotations

import random

import numpy as np
import pytest

from processing_aio.synthesis import channel_augment_ir, grayscale_ir, random_sketch, xdog_sketch

from conftest import random_image


@pytest.mark.parametrize("transform", [channel_augment_ir, random_sketch])
def test_random_synthesis_is_deterministic_under_a_seed_and_keeps_size(transform):
    image = random_image(3, (40, 90))
    a, b = transform(image, 7), transform(image, random.Random(7))
    assert a.size == image.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(transform(image, s))) for s in range(8, 12))


@pytest.mark.parametrize("transform", [grayscale_ir, xdog_sketch])
def test_fixed_synthesis_keeps_size_and_drops_colour(transform):
    image = random_image(4, (40, 90))
    out = np.asarray(transform(image))
    assert out.shape == (90, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
