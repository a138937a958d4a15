"""Binding a modality's own OSNet trunk to the shared trunk's photo embeddings (`AIOConfig.osnet_modality_trunks`).

Why: the RGB gallery is embedded by the frozen shared OSNet trunk (and its parameter-free skip), so a sketch or IR
query is only as findable as its trunk embedding is close to where that trunk puts the person's photos. The shared
trunk never saw a sketch, and fine-tuning it for other modalities moves the gallery too (in our runs RGB -> RGB
Rank-1 fell while IR rose). A copy per query modality, trained here so that each image of that modality is
classified among the training identities' photo prototypes (cosine similarity over a temperature), moves only the
query side: AIO's "bind every modality to RGB", done in the trunk.

Real images teach it best: on PKU-Sketch identities held aside from training, real sketches moved sketch -> photo
Rank-1 from 56 to 76-80 within 50-300 steps, where synthetic XDoG sketches had not helped. A modality with no real
images (IR in the bundled recipe) binds on synthetic views of the photos (CAJ channel augmentation).

Runs through `transformers.Trainer`: `TrunkBindingCollator` loads, augments and preprocesses the images and
`TrunkBindingModel` returns the loss; the trunk is trained in place, so the AIO model holding it sees the result.
The trunk's BatchNorm statistics stay frozen (they start as the shared trunk's; small batches would let them drift).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from PIL import Image, ImageOps
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils import ModelOutput

from ..losses import prototype_cross_entropy
from ..osnet import OSNet


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep a pretrained trunk's BatchNorm statistics: small training batches would let them drift."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d | nn.BatchNorm1d):
            child.eval()


@dataclass
class TrunkBindingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    embeds: torch.Tensor | None = None


class TrunkBindingModel(nn.Module):
    """A trainable OSNet trunk and the fixed (L, 256) unit-length photo prototypes of L training identities: the
    loss is cross-entropy of each image's cosine similarities to the prototypes over `temperature`.

    With a frozen `reference` trunk, the rows marked `anchored` also pay `anchor_weight` times
    `trunk_anchor_loss`: there the trunk must read the image as the reference does (learning without forgetting),
    so a trunk taught a new kind of image (thermal) keeps what the shared trunk does on the old kind (near-infrared)."""

    def __init__(self, trunk: OSNet, prototypes: torch.Tensor, temperature: float = 0.05,
                 reference: OSNet | None = None, anchor_weight: float = 1.0):
        super().__init__()
        if prototypes.ndim != 2:
            raise ValueError(f"`prototypes` must be (identities, dim), got shape {tuple(prototypes.shape)}.")
        self.trunk = trunk
        self.register_buffer("prototypes", F.normalize(prototypes.float(), dim=-1), persistent=False)
        self.temperature = temperature
        self.reference, self.anchor_weight = reference, anchor_weight
        if reference is not None:
            reference.requires_grad_(False)

    def train(self, mode: bool = True) -> TrunkBindingModel:
        super().train(mode)
        freeze_batchnorm(self.trunk)
        if self.reference is not None:
            self.reference.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                anchored: torch.Tensor | None = None) -> TrunkBindingOutput:
        feature_map, embedding = self.trunk(pixel_values)
        embeds = F.normalize(embedding, dim=-1)
        logits = embeds @ self.prototypes.T / self.temperature
        loss = None
        if labels is not None:
            if labels.shape[0] != pixel_values.shape[0]:
                raise ValueError(f"`labels` has {labels.shape[0]} rows for {pixel_values.shape[0]} images.")
            loss = prototype_cross_entropy(logits, labels)
            if self.reference is not None and anchored is not None and anchored.any():
                rows = anchored.bool()
                with torch.no_grad():
                    reference_map, reference_embedding = self.reference(pixel_values[rows])
                loss = loss + self.anchor_weight * trunk_anchor_loss(
                    feature_map[rows], embedding[rows], reference_map, reference_embedding)
        return TrunkBindingOutput(loss=loss, logits=logits, embeds=embeds)


def augment_view(image: Image.Image, rng: random.Random, fill: tuple[int, int, int]) -> Image.Image:
    """Mirror, a random crop keeping 85-100% of each side, and a small rotation (hand-drawn sketches vary in pose)."""
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    width, height = image.size
    crop_w, crop_h = int(width * rng.uniform(0.85, 1.0)), int(height * rng.uniform(0.85, 1.0))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h)).rotate(rng.uniform(-8, 8), fillcolor=fill)


def trunk_anchor_loss(feature_map: torch.Tensor, embedding: torch.Tensor, reference_map: torch.Tensor,
                      reference_embedding: torch.Tensor) -> torch.Tensor:
    """How far a trunk reads images differently from a reference trunk: the feature maps' squared error relative to
    the reference's mean square, plus one minus the embeddings' mean cosine. Zero when the two trunks agree."""
    relative_error = F.mse_loss(feature_map, reference_map) / reference_map.pow(2).mean().clamp_min(1e-8)
    return relative_error + 1 - F.cosine_similarity(embedding, reference_embedding, dim=-1).mean()


class TrunkBindingCollator:
    """Examples `{"image": path, "labels": int, "synthesize": bool}` -> `pixel_values` of `modality` and `labels`.
    `synthesize` marks photos whose view of the modality is made here: for IR, thermal (`synthesis.thermal_ir`)
    with probability `thermal_share` (in `synthesis.THERMAL_STYLES[thermal_style]`), else CAJ near-infrared.
    With `anchor_near_infrared` the batch also carries
    `anchored`, true for the CAJ views (`TrunkBindingModel` keeps the trunk's reading of those). Each call draws
    its own seeded augmentations, so a run is repeatable from its seed."""

    def __init__(self, image_processor, modality: str, seed: int = 0, thermal_share: float = 0.0,
                 anchor_near_infrared: bool = False, thermal_style: str = "prior"):
        if modality not in ("ir", "sketch"):
            raise ValueError(f"`modality` must be 'ir' or 'sketch', got {modality!r}.")
        if anchor_near_infrared and modality != "ir":
            raise ValueError(f"`anchor_near_infrared` needs modality 'ir', got {modality!r}.")
        self.image_processor, self.modality, self.seed, self.calls = image_processor, modality, seed, 0
        self.thermal_share = thermal_share  # IR: the share of synthetic views that are thermal rather than CAJ
        from processing_aio.synthesis import THERMAL_STYLES

        if thermal_style not in THERMAL_STYLES:
            raise ValueError(f"`thermal_style` must be one of {sorted(THERMAL_STYLES)}, got {thermal_style!r}.")
        self.anchor_near_infrared, self.thermal_style = anchor_near_infrared, thermal_style

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from processing_aio.synthesis import ir_view, xdog_sketch

        rng = random.Random(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        images, anchored = [], []
        for example in examples:
            image = Image.open(example["image"]).convert("RGB")
            near_infrared = False
            if example.get("synthesize") and self.modality == "sketch":
                image = xdog_sketch(image)
            elif example.get("synthesize"):
                image, thermal = ir_view(image, rng, self.thermal_share, self.thermal_style)
                near_infrared = not thermal
            fill = (255, 255, 255) if self.modality == "sketch" else (0, 0, 0)
            images.append(augment_view(image, rng, fill))
            anchored.append(near_infrared)
        pixels = self.image_processor(images, modality=self.modality, return_tensors="pt")["pixel_values"]
        batch = {"pixel_values": pixels, "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long)}
        if self.anchor_near_infrared:
            batch["anchored"] = torch.tensor(anchored)
        return batch


@torch.no_grad()
def photo_prototypes(trunk: OSNet, image_processor, photos: list[list[str | Path]], batch_size: int = 64) -> torch.Tensor:
    """(L, 256): per identity, the normalised mean of the trunk's unit-length embeddings of its photos."""
    trunk.eval()
    flat = [(label, path) for label, paths in enumerate(photos) for path in paths]
    if not flat or any(not paths for paths in photos):
        raise ValueError("`photos` needs at least one photo for every identity.")
    sums = torch.zeros(len(photos), OSNet.embedding_size)
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        pixels = image_processor([Image.open(p).convert("RGB") for _, p in chunk], modality="rgb",
                                 return_tensors="pt")["pixel_values"]
        embeds = F.normalize(trunk(pixels.to(next(trunk.parameters()).device))[1], dim=-1).cpu()
        sums.index_add_(0, torch.tensor([label for label, _ in chunk]), embeds)
    return F.normalize(sums, dim=-1)


def binding_examples(items, modality: str) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """From training items (`.image`, `.label`, `.real_sketch`): the binding examples of `modality` (one per real
    sketch; for IR, which has no real images here, one synthetic view per photo) with labels renumbered over the
    identities they cover, and those identities' photos."""
    if modality == "sketch":
        pairs = sorted({(str(item.real_sketch), item.label, False) for item in items if item.real_sketch})
    elif modality == "ir":
        pairs = [(str(item.image), item.label, True) for item in items]
    else:
        raise ValueError(f"`modality` must be 'ir' or 'sketch', got {modality!r}.")
    index = {label: i for i, label in enumerate(sorted({label for _, label, _ in pairs}))}
    photos: list[list[str]] = [[] for _ in index]
    for item in items:
        if item.label in index:
            photos[index[item.label]].append(str(item.image))
    return [{"image": path, "labels": index[label], "synthesize": synthetic} for path, label, synthetic in pairs], photos


def bind_modality_trunk(aio_model, image_processor, modality: str, examples: list[dict[str, Any]],
                        photos: list[list[str | Path]], output_dir: str | Path, steps: int, learning_rate: float = 1e-4,
                        batch_size: int = 32, seed: int = 42, temperature: float = 0.05,
                        thermal_share: float = 0.0, anchor_weight: float = 0.0,
                        thermal_style: str = "prior") -> list[dict[str, float]]:
    """Trains `aio_model.embeddings.modality_backbones[modality]` in place with `Trainer` (on its device, then back
    where it was) and returns its loss log.

    examples: `{"image", "labels", "synthesize"}` dicts, labels indexing `photos` (the photo paths per identity).
    thermal_share: for IR, the share of synthetic views rendered as thermal (`synthesis.thermal_ir`) instead of CAJ.
    anchor_weight: for IR, > 0 keeps the trunk reading the CAJ (near-infrared) views as the shared trunk does, with
    this weight on `trunk_anchor_loss`.
    thermal_style: the thermal views' look, a key of `synthesis.THERMAL_STYLES`."""
    backbones = aio_model.embeddings.modality_backbones
    if modality not in backbones:
        raise ValueError(f"The model has no trunk of its own for {modality!r} (config.osnet_modality_trunks = "
                         f"{tuple(backbones)}).")
    if not examples:
        raise ValueError(f"No {modality} images to bind the {modality} trunk on.")
    bad = sorted({e["labels"] for e in examples if not 0 <= e["labels"] < len(photos)})
    if bad:
        raise ValueError(f"`examples` labels {bad[:5]} have no photos (there are {len(photos)} identities).")
    if anchor_weight < 0:
        raise ValueError(f"`anchor_weight` must be >= 0, got {anchor_weight}.")
    shared = aio_model.embeddings.image_backbone
    prototypes = photo_prototypes(shared, image_processor, photos)
    trunk = backbones[modality]
    reference = copy.deepcopy(shared).eval() if anchor_weight > 0 else None
    return train_trunk_in_place(
        trunk, TrunkBindingModel(trunk, prototypes, temperature, reference, anchor_weight), examples,
        TrunkBindingCollator(image_processor, modality, seed, thermal_share, anchor_near_infrared=reference is not None,
                             thermal_style=thermal_style),
        output_dir, steps, batch_size, seed,
        learning_rate=learning_rate, weight_decay=5e-4, lr_scheduler_type="constant", warmup_steps=0)


def train_trunk_in_place(trunk: nn.Module, loss_model: nn.Module, examples: list[dict[str, Any]], collator,
                         output_dir: str | Path, steps: int, batch_size: int, seed: int,
                         optimizers: tuple = (None, None), bf16: bool = False, channels_last: bool = True,
                         save_steps: int = 0, resume: bool = False, **optimization) -> list[dict[str, float]]:
    """One `Trainer` run of a trunk stage (binding, distillation): `loss_model` wraps `trunk` and returns the loss.
    The trunk trains on Trainer's device, then goes back frozen, in eval mode, to where it was (the rest of the
    model stays there). `optimization`: TrainingArguments' learning-rate fields, unless `optimizers` are given.
    `bf16`: Trainer's bf16 autocast with the trunk in channels_last memory while it trains (on a CPU with AVX512-BF16
    a training step ran 2.4x faster, `benchmarks/bench_trunk_training.py`; weights and optimiser state stay fp32);
    `channels_last=False` keeps a trunk with 5-D weights (a ported graph's grouped convolutions) as it is.
    `save_steps`: a Trainer checkpoint in `output_dir` that often (the last two kept); `resume` goes on from the
    last one there. Returns the loss log."""
    device = next(trunk.parameters()).device
    trunk.requires_grad_(True)
    if bf16 and channels_last:
        trunk.to(memory_format=torch.channels_last)  # convolutions then run channels_last whatever the input's layout
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        logging_steps=max(1, min(10, steps)), save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or None, save_total_limit=2, seed=seed, data_seed=seed, dataloader_drop_last=True,
        dataloader_num_workers=0, remove_unused_columns=False, report_to=[], disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=bf16, **optimization,
    )
    trainer = Trainer(model=loss_model, args=args, train_dataset=examples, data_collator=collator,
                      optimizers=optimizers)
    trainer.train(resume_from_checkpoint=resume or None)
    # accelerate wrapped the model's forward in bf16 autocast; what runs it after training (an export, an
    # evaluation) must compute in the model's own precision
    extract_model_from_parallel(loss_model, keep_fp32_wrapper=False)
    trunk.requires_grad_(False)
    trunk.eval().to(device, memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    return [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]


__all__ = ["TrunkBindingModel", "TrunkBindingCollator", "TrunkBindingOutput", "photo_prototypes", "trunk_anchor_loss",
           "bind_modality_trunk", "binding_examples", "augment_view", "freeze_batchnorm", "train_trunk_in_place"]
