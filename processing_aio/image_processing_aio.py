"""Image processor of AIO: loads, validates, converts each image modality and resizes it to the ReID crop shape.

Infrared is reduced to one luminance channel replicated to three (so an RGB photo turned into "IR" and a real
thermal frame look alike to the tokenizer); sketches are made grayscale and replicated the same way.
This file imports nothing from the package so that it can travel inside a checkpoint for remote-code loading.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROCESSED_MODALITIES = ("rgb", "ir", "sketch")

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageInputError(ValueError):
    """An input image that cannot be used, with the name of the input and the reason."""


def load_image(image: ImageLike, name: str = "image", min_side: int = 8, max_side: int = 10000) -> Image.Image:
    """Opens a path, bytes, array or PIL image and checks it is a decodable image of a sensible size.

    Every failure names the input, because a gallery of thousands of crops is useless if one bad file stops the run
    with a bare PIL traceback."""
    label = f"{name} ({image})" if isinstance(image, (str, os.PathLike)) else name
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            if array.size and float(np.nanmax(array)) <= 1.0:
                array = array * 255.0
            array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = array.transpose(1, 2, 0)  # CHW -> HWC
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ImageInputError(f"{label}: array of shape {image.shape} is not an HxW or HxWxC image.")
        pil = Image.fromarray(array)
    elif isinstance(image, (str, os.PathLike, bytes)):
        if isinstance(image, bytes):
            data = image
        elif str(image).startswith(("http://", "https://", "ftp://", "s3://", "gs://")):
            raise ImageInputError(f"{label}: is a URL; aio-reid reads local files only (download it first).")
        else:
            path = Path(image)
            if not path.exists():
                raise ImageInputError(f"{label}: file does not exist.")
            if not path.is_file():
                raise ImageInputError(f"{label}: is not a file.")
            data = path.read_bytes()
        if not data:
            raise ImageInputError(f"{label}: file is empty (0 bytes).")
        try:
            pil = Image.open(io.BytesIO(data))
            check_size(pil, label, min_side, max_side)  # from the header, before a giant image is decoded
            pil.load()
        except Image.DecompressionBombError as error:
            raise ImageInputError(f"{label}: image is too large ({error}).") from error
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            if isinstance(error, ImageInputError):
                raise
            raise ImageInputError(f"{label}: not a readable image file ({error}).") from error
    else:
        raise ImageInputError(
            f"{label}: unsupported type {type(image).__name__}; pass a path, bytes, PIL.Image or numpy array."
        )
    check_size(pil, label, min_side, max_side)
    return to_8bit(pil)


def check_size(pil: Image.Image, label: str, min_side: int, max_side: int) -> None:
    width, height = pil.size
    if min(width, height) < min_side:
        raise ImageInputError(f"{label}: {width}x{height} px is too small (each side must be >= {min_side} px).")
    if max(width, height) > max_side:
        raise ImageInputError(f"{label}: {width}x{height} px is too large (each side must be <= {max_side} px).")


def to_8bit(pil: Image.Image) -> Image.Image:
    """16-bit and float images (e.g. raw thermal frames) stretched to 8-bit grey by their own range; PIL's own
    conversion clips them at 255, which turns a 16-bit thermal crop white."""
    if pil.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return pil
    array = np.asarray(pil, dtype=np.float64)
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.nan_to_num(scaled).round().astype(np.uint8), mode="L")


def convert_modality(image: Image.Image, modality: str) -> Image.Image:
    """RGB stays colour; IR and sketch become luminance replicated to three channels."""
    if modality == "rgb":
        return image.convert("RGB")
    if modality in ("ir", "sketch"):
        return image.convert("L").convert("RGB")
    raise ValueError(f"Unknown image modality {modality!r}; expected one of {PROCESSED_MODALITIES}.")


class AIOImageProcessor(BaseImageProcessor):
    """Resizes person crops to (height, width), converts them per modality and normalises them."""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | None = None,
        image_mean: tuple[float, ...] | list[float] = IMAGENET_MEAN,
        image_std: tuple[float, ...] | list[float] = IMAGENET_STD,
        min_side: int = 8,
        max_side: int = 10000,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.size = dict(size) if size is not None else {"height": 256, "width": 128}
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.min_side = min_side
        self.max_side = max_side

    def to_pixel_array(self, image: Image.Image, modality: str) -> np.ndarray:
        """One converted, resized, normalised (3, H, W) float32 array."""
        image = convert_modality(image, modality).resize(
            (self.size["width"], self.size["height"]), Image.Resampling.BILINEAR
        )
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return array.transpose(2, 0, 1)

    def preprocess(
        self, images: ImageLike | list[ImageLike], modality: str = "rgb", return_tensors: str | None = "pt",
        input_name: str = "images", **kwargs: Any,
    ) -> BatchFeature:
        if kwargs:
            raise TypeError(f"AIOImageProcessor got unexpected arguments {sorted(kwargs)}.")
        if modality not in PROCESSED_MODALITIES:
            raise ValueError(f"Unknown image modality {modality!r}; expected one of {PROCESSED_MODALITIES}.")
        batch = images if isinstance(images, (list, tuple)) else [images]
        if not batch:
            raise ValueError(f"`{input_name}` is an empty list.")
        arrays = [
            self.to_pixel_array(load_image(img, f"{input_name}[{i}]", self.min_side, self.max_side), modality)
            for i, img in enumerate(batch)
        ]
        return BatchFeature({"pixel_values": np.stack(arrays)}, tensor_type=return_tensors)


__all__ = ["AIOImageProcessor", "ImageInputError", "load_image", "convert_modality"]
