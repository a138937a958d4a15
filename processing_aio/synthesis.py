"""Synthesis of missing modalities from RGB photos, offline and without any learned model.

* Infrared: channel augmentation as in CAJ (Ye et al., ICCV 2021): one random colour channel replicated to three,
  plain grayscale, and random channel erasing. Thermal/NIR cameras see luminance-like intensity without colour;
  these views teach the tokenizers to stop relying on hue.
* Thermal (LWIR): a warm body over a cooler scene (`thermal_ir`, in the `THERMAL_STYLES`): the person (a
  person-centred prior, or a mask from the photo itself, `person_mask`) rendered as a smooth bright silhouette with little of the photo's texture, the background darker, blurred
  and low in contrast, white-hot or black-hot, at low resolution with sensor noise: what the real thermal crops of
  `thermal-pairs` look like, and what channel augmentation (near-infrared) does not teach.
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


def person_prior(height: int, width: int) -> np.ndarray:
    """A soft person-shaped mask for a person-centred crop (ReID crops are cut around one person): a vertical band,
    widest at the torso, fading at the sides, head and feet; values in [0, 1]."""
    rows = np.linspace(0.0, 1.0, height)[:, None]
    columns = np.linspace(-1.0, 1.0, width)[None, :]
    half_width = 0.22 + 0.18 * np.exp(-((rows - 0.45) / 0.25) ** 2)  # head narrow, torso wide, legs narrower
    across = np.exp(-(columns / half_width) ** 4)
    along = np.clip((rows - 0.03) / 0.05, 0, 1) * np.clip((0.99 - rows) / 0.04, 0, 1)
    return (across * along).astype(np.float32)


def person_mask(image: Image.Image, threshold: float = 0.12, softness: float = 0.04) -> np.ndarray:
    """A soft mask (H, W, values 0-1) of the person in a person-centred crop, from the photo itself: each pixel's
    colour distance from its row's background (the median of the outer 12% columns on both sides, smoothed down the
    rows) through a sigmoid at `threshold`, times the square root of `person_prior` (the person is central), lightly
    blurred. Keeps the silhouette's legs, arms and bags that the prior alone blurs into one blob."""
    rgb = np.asarray(image.convert("RGB").resize((64, 128), Image.BILINEAR), dtype=np.float32) / 255.0
    height, width, _ = rgb.shape
    side = max(2, int(0.12 * width))
    rows = np.median(np.concatenate([rgb[:, :side], rgb[:, -side:]], axis=1), axis=1)  # (height, 3)
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / 4.0) ** 2)
    padded = np.pad(rows, ((8, 8), (0, 0)), mode="edge")
    background = np.stack([np.convolve(padded[:, c], kernel / kernel.sum(), mode="valid") for c in range(3)], axis=1)
    distance = np.linalg.norm(rgb - background[:, None, :], axis=-1)
    foreground = np.sqrt(person_prior(height, width)) / (1.0 + np.exp(-(distance - threshold) / softness))
    soft = Image.fromarray((foreground * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    return np.asarray(soft.resize(image.size, Image.BILINEAR), dtype=np.float32) / 255.0


def thermal_ir(image: Image.Image, seed: int | random.Random | None = None,
               mask: np.ndarray | str | None = None,
               body: tuple[float, float] = (0.80, 1.0), background: tuple[float, float] = (0.40, 0.70),
               texture: float = 0.12, scene_contrast: float = 0.25, blur: tuple[float, float] = (0.6, 1.6),
               resolution: tuple[float, float] = (0.35, 0.8), noise: tuple[float, float] = (0.005, 0.03),
               black_hot: float = 0.15, detail: float = 0.03, scene_blur: float = 0.125) -> Image.Image:
    """A synthetic thermal (LWIR) view of an RGB person crop, the same size: `mask` (H, W, values 0-1; None or
    "prior": `person_prior`; "photo": `person_mask` of the image) blends a bright body (level drawn from `body`, keeping `texture` of the photo's luminance)
    into a darker scene (level from `background`, `scene_contrast` of a heavily blurred luminance), then blur, a
    lower resolution, sensor noise and, with probability `black_hot`, inverted polarity. `detail` is how much of the
    photo's fine structure (edges of the person and the scene) is kept; `scene_blur` the scene's blur radius as a
    share of the width. Deterministic under `seed`.
    The levels were chosen on the train frames of the real pairs (`evaluation.thermal_pairs.synthesis_fidelity`,
    docs/experiments.md 2026-12-03): pixel correlation with the real crop 0.36 (grayscale: -0.14, CAJ: -0.12)."""
    rng = _rng(seed)
    rgb = image.convert("RGB")
    width, height = rgb.size
    luminance = ImageOps.grayscale(rgb)
    gray = np.asarray(luminance, dtype=np.float32) / 255.0
    soft = np.asarray(luminance.filter(ImageFilter.GaussianBlur(max(1.0, width / 24))),
                      dtype=np.float32) / 255.0
    scene = np.asarray(luminance.filter(ImageFilter.GaussianBlur(max(1.0, width * scene_blur))),
                       dtype=np.float32) / 255.0
    if mask is None or (isinstance(mask, str) and mask == "prior"):
        weight = person_prior(height, width)
    elif isinstance(mask, str) and mask == "photo":
        weight = person_mask(rgb)
    elif isinstance(mask, str):
        raise ValueError(f"thermal_ir mask must be an array, 'prior' or 'photo', got {mask!r}.")
    else:
        weight = np.clip(np.asarray(mask, dtype=np.float32), 0, 1)
    if weight.shape != gray.shape:
        raise ValueError(f"thermal_ir mask of shape {weight.shape} does not match the image ({height}, {width}).")
    body_level = rng.uniform(*body) + texture * (soft - soft.mean()) * rng.choice((-1.0, 1.0))
    scene_level = rng.uniform(*background) + scene_contrast * (scene - scene.mean())
    thermal = weight * body_level + (1.0 - weight) * scene_level + detail * (gray - soft)
    out = Image.fromarray((np.clip(thermal, 0, 1) * 255).astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(*blur) * width / 128))
    factor = rng.uniform(*resolution)
    small = (max(4, int(width * factor)), max(4, int(height * factor)))
    out = out.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    noisy = np.asarray(out, dtype=np.float32) / 255.0
    noisy = noisy + np.random.default_rng(rng.randrange(2**32)).normal(0.0, rng.uniform(*noise), noisy.shape)
    if rng.random() < black_hot:
        noisy = 1.0 - noisy
    return Image.fromarray((np.clip(noisy, 0, 1) * 255).astype(np.uint8)).convert("RGB")


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


THERMAL_STYLES: dict[str, dict] = {
    # the person-shaped prior as the body: the best pixel correlation with real crops, little of the person's shape
    "prior": {},
    # the photo's own person mask (`person_mask`) as the body
    "photo": {"mask": "photo"},
    # the photo mask, the photo's edges and a sharper scene and sensor: real LWIR crops keep the silhouette's and the
    # scene's structure (docs/thermal.md)
    "structure": {"mask": "photo", "detail": 0.35, "scene_blur": 0.03, "scene_contrast": 0.5, "texture": 0.2,
                  "blur": (0.2, 0.6), "resolution": (0.6, 1.0)},
}


def ir_view(photo: Image.Image, rng: random.Random, thermal_share: float = 0.0,
            thermal_style: str = "prior") -> tuple[Image.Image, bool]:
    """A synthetic IR view of a photo and whether it is thermal: with probability `thermal_share` a thermal view in
    `THERMAL_STYLES[thermal_style]`, else CAJ channel augmentation (near-infrared)."""
    thermal = thermal_share > 0 and rng.random() < thermal_share
    if thermal:
        return thermal_ir(photo, rng, **THERMAL_STYLES[thermal_style]), True
    return channel_augment_ir(photo, rng), False


def synthetic_view(photo: Image.Image, modality: str, seed: int | random.Random | None = None,
                   thermal_share: float = 0.0) -> Image.Image:
    """A photo's synthetic `modality` view for the stages fitted after (or beside) the main training: for IR, a
    thermal view (`thermal_ir`) with probability `thermal_share`, else CAJ channel augmentation (near-infrared); the
    default XDoG drawing for sketches."""
    if modality == "ir":
        return ir_view(photo, _rng(seed), thermal_share)[0]
    if modality == "sketch":
        return xdog_sketch(photo)
    raise ValueError(f"No synthetic view for modality {modality!r}; expected 'ir' or 'sketch'.")


__all__ = ["grayscale_ir", "channel_augment_ir", "thermal_ir", "ir_view", "THERMAL_STYLES", "person_prior", "person_mask", "xdog_sketch", "random_sketch", "synthetic_view"]
