"""Fitting `AIOThermalGate`: the logistic regression that routes thermal IR queries to the IR trunk and every other
IR query (near-infrared, grayscale) to the shared trunk.

Why a gate: one IR trunk bound on thermal views gains on real thermal crops but loses on near-infrared (the shared
trunk's strength; docs/experiments.md 2026-12-03), and an IR camera is one or the other. What the gate reads
(`AIOThermalGate.features`: the frozen shared trunk's embedding and five pixel statistics) is fixed, so a regression
over a few thousand examples fits it in seconds; its weights are buffers, saved with the model and never touched by
the training stages.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..embeddings_aio import AIOThermalGate


def gate_features(gate: AIOThermalGate, shared_trunk, pixel_values: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, F) what `gate` reads for preprocessed IR images: their grey statistics and `shared_trunk`'s embedding."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(pixel_values), batch_size):
            pixels = pixel_values[start:start + batch_size]
            chunks.append(gate.features(pixels, shared_trunk(pixels)[1]))
    return torch.cat(chunks)


def fit_thermal_gate(gate: AIOThermalGate, thermal: torch.Tensor, other: torch.Tensor,
                     l2: float = 1e-2, iterations: int = 200) -> float:
    """Fits `gate` in place on the `gate_features` of thermal (N, F) and other (M, F) images (class-balanced
    logistic regression over standardised features, L-BFGS, `l2` on the weights) and returns its accuracy on them."""
    size = gate.weight.shape[0]
    if thermal.ndim != 2 or other.ndim != 2 or not len(thermal) or not len(other) or {
            thermal.shape[1], other.shape[1]} != {size}:
        raise ValueError(f"fit_thermal_gate needs (N, {size}) features of both kinds, got shapes "
                         f"{tuple(thermal.shape)} and {tuple(other.shape)}.")
    features = torch.cat([thermal, other]).float()
    labels = torch.cat([torch.ones(len(thermal)), torch.zeros(len(other))])
    mean, scale = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    standard = (features - mean) / scale
    balance = torch.where(labels > 0, 0.5 / len(thermal), 0.5 / len(other))
    weight = torch.zeros(size, requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(standard @ weight + bias, labels, reduction="none") * balance).sum()
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        gate.feature_mean.copy_(mean)
        gate.feature_scale.copy_(scale)
        gate.weight.copy_(weight)
        gate.bias.copy_(bias)
        return float((((standard @ weight + bias) > 0).float() == labels).float().mean())


def gate_images(photos: list[str | Path], thermal_crops: list[str | Path], seed: int = 0
                ) -> tuple[list[Image.Image], list[Image.Image]]:
    """The gate's examples: thermal = the real thermal crops and one synthetic thermal view (of a random style of
    `synthesis.THERMAL_STYLES`, white- or black-hot) of each photo; other = its grayscale and a CAJ near-infrared
    view."""
    from processing_aio.synthesis import THERMAL_STYLES, channel_augment_ir, grayscale_ir, thermal_ir

    rng = random.Random(seed)
    thermal = [Image.open(path).convert("RGB") for path in thermal_crops]
    other = []
    for path in photos:
        photo = Image.open(path).convert("RGB")
        thermal.append(thermal_ir(photo, rng, **THERMAL_STYLES[rng.choice(sorted(THERMAL_STYLES))]))
        other += [grayscale_ir(photo), channel_augment_ir(photo, rng)]
    return thermal, other


__all__ = ["gate_features", "fit_thermal_gate", "gate_images"]
