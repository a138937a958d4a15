"""Modality synthesis (processing_aio.synthesis): deterministic under a seed, size-keeping, colour dropped."""

from __future__ import annotations

import random

import numpy as np
import pytest

from processing_aio.synthesis import channel_augment_ir, grayscale_ir, person_prior, random_sketch, thermal_ir, xdog_sketch

from conftest import random_image


@pytest.mark.parametrize("transform", [channel_augment_ir, random_sketch, thermal_ir])
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


def test_thermal_synthesis_is_a_bright_body_on_a_darker_scene():
    """White-hot: the person (here the prior's centre) brighter than the crop's sides, grey, the size kept; a mask of
    another size is refused."""
    image = random_image(5, (64, 128))
    out = np.asarray(thermal_ir(image, seed=1, black_hot=0.0), dtype=np.float32)[..., 0]
    assert out.shape == (128, 64)
    assert out[30:100, 24:40].mean() > out[30:100, :6].mean() + 60
    prior = person_prior(128, 64)
    assert prior.max() <= 1.0 and prior[64, 32] > 0.9 and prior[64, 0] < 0.1
    with pytest.raises(ValueError, match="mask of shape"):
        thermal_ir(image, seed=1, mask=np.ones((10, 10)))
