"""AIOProcessor: one call turns a batch of multimodal queries into model inputs.

`processor(text=..., rgb=..., ir=..., sketch=...)`: every modality given is a list of the same length B and index
i of each forms query i. This file only imports its sibling so it can travel inside a checkpoint.
"""

from __future__ import annotations

import unicodedata
import warnings
from typing import Any

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_aio import PROCESSED_MODALITIES

QUERY_KEYWORDS = ("text", "rgb", "ir", "sketch", "images")
TEXT_OPTIONS = ("padding", "truncation", "max_length")  # passed on to the tokenizer, as transformers processors do


class AIOProcessor(ProcessorMixin):
    """Joins `AIOImageProcessor` (rgb / ir / sketch) with the word-piece tokenizer (text)."""

    def __init__(self, image_processor=None, tokenizer=None, max_text_length: int = 64, **kwargs: Any):
        self.max_text_length = max_text_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        rgb: Any = None,
        ir: Any = None,
        sketch: Any = None,
        images: Any = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        text_options = {name: kwargs.pop(name) for name in TEXT_OPTIONS if name in kwargs}
        if kwargs:
            raise TypeError(
                f"AIOProcessor got unknown modality or argument {sorted(kwargs)}; the query keywords are "
                f"{QUERY_KEYWORDS} (`images` is an alias of `rgb`) and the text options {TEXT_OPTIONS}."
            )
        if images is not None:
            if rgb is not None:
                raise ValueError("Pass RGB images as `rgb` or as `images`, not both.")
            rgb = images
        given = {name: value for name, value in (("text", text), ("rgb", rgb), ("ir", ir), ("sketch", sketch))
                 if value is not None}
        if not given:
            raise ValueError(f"AIOProcessor needs at least one of {QUERY_KEYWORDS}.")
        given = {name: value if isinstance(value, (list, tuple)) else [value] for name, value in given.items()}
        lengths = {name: len(value) for name, value in given.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"Every modality must be a list of the same length (one item per query), got {lengths}.")
        if 0 in lengths.values():
            raise ValueError(f"Empty query lists: {lengths}.")

        data: dict[str, Any] = {}
        for modality in PROCESSED_MODALITIES:
            if modality in given:
                pixels = self.image_processor(given[modality], modality=modality, return_tensors=None,
                                              input_name=modality)
                data[f"pixel_values_{modality}"] = np.asarray(pixels["pixel_values"])
        if "text" in given:
            data.update(self.tokenize(given["text"], **text_options))
        return BatchFeature(data, tensor_type=return_tensors)

    def tokenize(self, texts: list[str], padding: bool | str = "longest", truncation: bool | str = True,
                 max_length: int | None = None) -> dict[str, np.ndarray]:
        """Word pieces padded to the longest caption in the batch and cut at `max_text_length`; `padding`,
        `truncation` and `max_length` (at most `max_text_length`, the model's text positions) go to the tokenizer,
        e.g. `padding="max_length"` for the fixed shapes of an exported graph."""
        max_length = self.max_text_length if max_length is None else max_length
        if not 0 < max_length <= self.max_text_length:
            raise ValueError(f"max_length={max_length} must be between 1 and the processor's max_text_length "
                             f"({self.max_text_length}), the text positions the model has.")
        texts = [visible_text(caption, index) for index, caption in enumerate(texts)]
        encoded = self.tokenizer(
            list(texts), padding=padding, truncation=truncation, max_length=max_length, return_tensors="np"
        )
        self.warn_unknown_only(texts, encoded["input_ids"])
        if encoded["input_ids"].shape[1] > self.max_text_length:
            raise ValueError(f"text has {encoded['input_ids'].shape[1]} word pieces with truncation={truncation!r}; "
                             f"the model reads at most max_text_length={self.max_text_length}.")
        return {"input_ids": encoded["input_ids"].astype(np.int64),
                "attention_mask": encoded["attention_mask"].astype(np.int64)}

    def warn_unknown_only(self, texts: list[str], input_ids: np.ndarray) -> None:
        """Warns for a caption whose word pieces are all [UNK] (e.g. emoji only): it embeds as no description."""
        special = set(self.tokenizer.all_special_ids)
        unknown = self.tokenizer.unk_token_id
        for index, row in enumerate(input_ids):
            pieces = [int(t) for t in row if int(t) not in special or int(t) == unknown]
            if pieces and all(t == unknown for t in pieces):
                warnings.warn(f"text[{index}] {texts[index][:40]!r} is only unknown word pieces ([UNK]) to this "
                              "tokenizer; it embeds as an empty description.", stacklevel=4)

    @property
    def model_input_names(self) -> list[str]:
        return [f"pixel_values_{m}" for m in PROCESSED_MODALITIES] + ["input_ids", "attention_mask"]


def visible_text(caption, index: int) -> str:
    """`caption` without invisible characters (controls, zero-width and other format characters); refused, like
    empty text, when nothing visible is left."""
    if not isinstance(caption, str):
        raise TypeError(f"text[{index}] must be a string, got {type(caption).__name__}.")
    kept = []
    for character in caption:
        category = unicodedata.category(character)
        if category in ("Cc", "Zl", "Zp"):  # controls and line breaks: a space
            kept.append(" ")
        elif category not in ("Cf", "Co", "Cn"):  # zero-width / format, private-use and unassigned: dropped
            kept.append(character)
    cleaned = "".join(kept)
    if not cleaned.strip():
        raise ValueError(f"text[{index}] is empty (no visible characters); a text query needs a description.")
    return cleaned


__all__ = ["AIOProcessor", "visible_text"]
