"""Synthesis of missing modalities from RGB photos, offline and without any learned model.

* Infrared: channel augmentation as in CAJ (Ye et al., ICCV 2021): one random colour channel replicated to three,
  plain grayscale, and random channel erasing. Thermal/NIR cameras see luminance-like intensity without colour;
  these views teach the tokenizers to stop relying on hue.
* Sketch: an XDoG edge drawing (Winnemoeller et al. 2012) thresholded into soft dark strokes on white paper, the
  look of the hand-drawn PKU-Sketch sketches (outline plus texture hatching, no colour).

Every function takes a `random.Random` (or a seed) so training views are reproducible, and keeps the image size.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def _rng(seed: int | random.Random | None) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def grayscale_ir(image: Image.Image) -> Image.Image:
    """The deterministic IR stand-in used at evaluation time: luminance replicated to three channels."""
    return ImageOps.grayscale(image.convert("RGB")).convert("RGB")


def channel_augment_ir(image: Image.Image, seed: int | random.Random | None = None,
                       erase_probability: float = 0.5) -> Image.Image:
    """CAJ channel augmentation: a random single channel (R, G or B) or grayscale, replicated to three channels,
    then, with `erase_probability`, a random rectangle replaced by a random single channel (channel erasing)."""
    rng = _rng(seed)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    choice = rng.randrange(4)
    if choice < 3:
        single = rgb[..., choice]
    else:
        single = np.asarray(ImageOps.grayscale(Image.fromarray(rgb)), dtype=np.uint8)
    out = np.repeat(single[..., None], 3, axis=2).copy()
    if rng.random() < erase_probability:
        height, width = single.shape
        area = rng.uniform(0.02, 0.3) * height * width
        aspect = rng.uniform(0.3, 3.3)
        h = min(height, max(1, int(round((area * aspect) ** 0.5))))
        w = min(width, max(1, int(round((area / aspect) ** 0.5))))
        top, left = rng.randrange(height - h + 1), rng.randrange(width - w + 1)
        out[top:top + h, left:left + w] = rgb[top:top + h, left:left + w, rng.randrange(3)][..., None]
    return Image.fromarray(out)


def xdog_sketch(image: Image.Image, sigma: float = 1.0, k: float = 1.6, gamma: float = 0.98,
                epsilon: float = -0.005, phi: float = 200.0, shading: float = 0.45) -> Image.Image:
    """Extended difference-of-Gaussians line drawing: dark strokes where luminance changes, white elsewhere, plus
    `shading` of the original darkness, as artists fill dark hair, bags and trousers."""
    gray = np.asarray(ImageOps.grayscale(image.convert("RGB")), dtype=np.float32) / 255.0
    as_image = Image.fromarray((gray * 255).astype(np.uint8))
    blur_small = np.asarray(as_image.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255.0
    blur_large = np.asarray(as_image.filter(ImageFilter.GaussianBlur(sigma * k)), dtype=np.float32) / 255.0
    difference = blur_small - gamma * blur_large
    drawing = np.where(difference >= epsilon, 1.0, 1.0 + np.tanh(phi * (difference - epsilon)))
    drawing = np.clip(drawing, 0.0, 1.0) * (1.0 - shading * (1.0 - blur_large) ** 2)
    return Image.fromarray((drawing * 255).astype(np.uint8)).convert("RGB")


def random_sketch(image: Image.Image, seed: int | random.Random | None = None) -> Image.Image:
    """A training sketch: XDoG with randomised stroke width and darkness, the variation between PKU-Sketch's five
    artists."""
    rng = _rng(seed)
    return xdog_sketch(image, sigma=rng.uniform(0.7, 1.4), k=1.6, gamma=rng.uniform(0.97, 0.99),
                       epsilon=rng.uniform(-0.01, 0.0), phi=rng.uniform(100.0, 300.0),
                       shading=rng.uniform(0.2, 0.7))


def synthetic_view(photo: Image.Image, modality: str, seed: int | random.Random | None = None) -> Image.Image:
    """A photo's synthetic `modality` view for the stages fitted after (or beside) the main training: CAJ channel
    augmentation for IR, the default XDoG drawing for sketches."""
    if modality == "ir":
        return channel_augment_ir(photo, seed)
    if modality == "sketch":
        return xdog_sketch(photo)
    raise ValueError(f"No synthetic view for modality {modality!r}; expected 'ir' or 'sketch'.")


__all__ = ["grayscale_ir", "channel_augment_ir", "xdog_sketch", "random_sketch", "synthetic_view"]
