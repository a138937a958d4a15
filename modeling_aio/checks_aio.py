"""Clear errors before AIO touches its inputs: a checkpoint folder that is not a whole safetensors AIO checkpoint,
and queries whose shapes, values or modalities would otherwise fail deep inside the encoder (or, worse, not fail).
Imports only torch, safetensors and `configuration_aio`, so it travels with the remote-code checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .configuration_aio import IMAGE_MODALITIES, AIOConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
PIXEL_KEYS: dict[str, str] = {m: f"pixel_values_{m}" for m in IMAGE_MODALITIES}


def check_checkpoint_folder(location: Path) -> None:
    """Refuses, naming the file, what transformers would report with a raw traceback or load silently: no
    safetensors (pickles are never loaded), a config of another model type, weights cut short, non-float weights."""
    import json

    from safetensors import SafetensorError, safe_open

    weights = sorted(location.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in location.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f" (found pickled weights {pickles})" if pickles else ""
        raise OSError(f"{location} has no model.safetensors{found}; AIO loads safetensors checkpoints only and never "
                      "unpickles weights. Convert the weights with safetensors.torch.save_file.")
    config_file = location / "config.json"
    try:
        model_type = json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else "aio"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OSError(f"{config_file} is not valid JSON ({error}).") from None
    if model_type != "aio":
        raise OSError(f"{config_file} is for model type {model_type!r}, not an AIO checkpoint ('aio').")
    if config_file.is_file():
        try:
            AIOConfig.from_json_file(str(config_file))
        except (ValueError, TypeError) as error:
            raise OSError(f"{config_file} is not a valid AIO configuration ({error}).") from None
    for path in weights:
        try:
            with safe_open(str(path), "pt") as handle:
                dtypes = {key: str(handle.get_slice(key).get_dtype()) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as error:
            raise OSError(f"{path} is not a complete safetensors file ({error}); it may be cut short.") from None
        wrong = [k for k, d in dtypes.items() if d not in ("F16", "BF16", "F32", "F64")
                 and not k.endswith("num_batches_tracked")]
        if wrong:
            raise OSError(f"{path} holds non-float weights, e.g. {wrong[0]} ({dtypes[wrong[0]]}); AIO weights are "
                          "floating point.")



# Pixels normalised by any sane mean/std (std >= 0.1) stay within this; 0-255 pixels do not.
PIXEL_LIMIT = 10.0


@torch.compiler.disable
def check_query(
    modality_inputs: dict[str, torch.Tensor], attention_mask: torch.Tensor | None, config: AIOConfig
) -> None:
    """Clear errors for malformed queries before they turn into shape errors deep inside the encoder. Run eagerly
    under `torch.compile` (their value checks decide what to raise, which a compiled graph cannot hold)."""
    if not modality_inputs:
        raise ValueError(
            "An AIO query needs at least one modality: pass pixel_values_rgb, pixel_values_ir, pixel_values_sketch "
            "and/or input_ids."
        )
    sizes = {name: tensor.shape[0] for name, tensor in modality_inputs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"Every modality of a query batch must have the same batch size, got {sizes}.")
    for modality in IMAGE_MODALITIES:
        if modality in modality_inputs:
            pixels = modality_inputs[modality]
            expected = (3, *config.image_size)
            if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
                raise ValueError(
                    f"`{PIXEL_KEYS[modality]}` must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got "
                    f"{tuple(pixels.shape)}; prepare images with AIOProcessor."
                )
            bad = torch.nonzero(~torch.isfinite(pixels).flatten(1).all(1)).flatten()
            if len(bad):
                raise ValueError(f"`{PIXEL_KEYS[modality]}`[{int(bad[0])}] has NaN or infinite values.")
            peaks = pixels.detach().abs().flatten(1).amax(1)
            if bool((peaks > PIXEL_LIMIT).any()):
                row = int(torch.nonzero(peaks > PIXEL_LIMIT).flatten()[0])
                raise ValueError(
                    f"`{PIXEL_KEYS[modality]}`[{row}] has values up to {float(peaks[row]):.4g}, far outside the "
                    f"normalised range (|x| <= {PIXEL_LIMIT}) that AIOProcessor produces; were the pixels left at "
                    "0-255? Prepare images with AIOProcessor."
                )
    if "text" in modality_inputs:
        input_ids = modality_inputs["text"]
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"`input_ids` must have shape (B, L) with L >= 1, got {tuple(input_ids.shape)}.")
        if input_ids.shape[1] > config.max_text_length:
            raise ValueError(
                f"`input_ids` has {input_ids.shape[1]} tokens; this model takes at most {config.max_text_length}."
            )
        outside = (input_ids < 0) | (input_ids >= config.vocab_size)
        if bool(outside.any()):
            row, column = (int(i) for i in torch.nonzero(outside)[0])
            raise ValueError(
                f"`input_ids`[{row}] has word-piece id {int(input_ids[row, column])} outside this model's vocabulary "
                f"(0..{config.vocab_size - 1}); tokenize with the checkpoint's own AIOProcessor."
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` shape {tuple(attention_mask.shape)} differs from `input_ids` {tuple(input_ids.shape)}."
            )
        if attention_mask is not None and not attention_mask.any(dim=1).all():
            row = int(torch.nonzero(~attention_mask.any(dim=1)).flatten()[0])
            raise ValueError(f"`attention_mask`[{row}] is all zeros: that query has no text to read.")


def query_inputs(
    config: AIOConfig, pixel_values_rgb, pixel_values_ir, pixel_values_sketch, input_ids, attention_mask
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The modalities present in a query, checked, and the text mask (all ones when none is given)."""
    given = {"rgb": pixel_values_rgb, "ir": pixel_values_ir, "sketch": pixel_values_sketch, "text": input_ids}
    modality_inputs = {m: x for m, x in given.items() if x is not None}
    check_query(modality_inputs, attention_mask, config)
    if input_ids is not None and attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return modality_inputs, attention_mask


def finite_embeddings(embeds: torch.Tensor) -> torch.Tensor:
    """`embeds` (B, D), refused naming the first query whose embedding is not finite (broken weights or inputs): a
    NaN vector must never enter a gallery."""
    bad = torch.nonzero(~torch.isfinite(embeds).all(dim=1)).flatten()
    if len(bad):
        raise ValueError(f"query {int(bad[0])} of the batch got a NaN or infinite embedding: the model's weights "
                         "or that query's inputs are broken.")
    return embeds


__all__ = ["check_checkpoint_folder", "check_query", "finite_embeddings", "query_inputs", "PIXEL_KEYS", "PIXEL_LIMIT",
           "PICKLE_SUFFIXES"]
