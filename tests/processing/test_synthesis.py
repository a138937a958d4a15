"""Modality synthesis (processing_aio.synthesis): deterministic under a seed, size-keeping, colour dropped."""

from __future__ import annotations

import random

import numpy as np
import pytest

from PIL import Image

from processing_aio.synthesis import (
    THERMAL_STYLES, channel_augment_ir, grayscale_ir, person_mask, person_prior, random_sketch, thermal_ir, xdog_sketch,
)

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


def figure_on_plain_ground() -> Image.Image:
    """A 60x120 grey scene with a red standing figure (torso and two legs apart) in the middle."""
    pixels = np.full((120, 60, 3), 110, np.uint8)
    pixels[20:70, 20:40] = (200, 30, 30)
    pixels[70:115, 20:27] = pixels[70:115, 33:40] = (30, 30, 200)
    return Image.fromarray(pixels)


def test_person_mask_follows_the_figure_not_the_prior():
    """The photo's mask is high on the torso and legs, low on the ground between the legs and at the sides, and the
    size of the image; thermal_ir with mask='photo' is deterministic under a seed and an unknown mask is named."""
    image = figure_on_plain_ground()
    mask = person_mask(image)
    assert mask.shape == (120, 60) and mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[45, 30] > 0.6 and mask[95, 23] > 0.4 and mask[60, 2] < 0.05
    assert mask[105, 30] < mask[105, 23] - 0.2  # the gap between the legs stays cooler than a leg
    a, b = thermal_ir(image, 3, mask="photo"), thermal_ir(image, random.Random(3), mask="photo")
    assert a.size == image.size and np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="'prior' or 'photo'"):
        thermal_ir(image, 3, mask="saliency")


@pytest.mark.parametrize("style", sorted(THERMAL_STYLES))
def test_every_thermal_style_is_deterministic_keeps_size_and_is_grey(style):
    image = figure_on_plain_ground()
    a = thermal_ir(image, 4, **THERMAL_STYLES[style])
    b = thermal_ir(image, random.Random(4), **THERMAL_STYLES[style])
    pixels = np.asarray(a)
    assert a.size == image.size and np.array_equal(pixels, np.asarray(b))
    assert np.array_equal(pixels[..., 0], pixels[..., 2])
    assert not np.array_equal(pixels, np.asarray(thermal_ir(image, 5, **THERMAL_STYLES[style])))
