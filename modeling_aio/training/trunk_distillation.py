"""Distilling a stronger RGB ReID teacher into the shared OSNet trunk (stage 0 of training).

Why: the RGB gallery of every query modality is embedded by the shared OSNet trunk, so RGB -> RGB search can be no
better than that trunk. Open Model Zoo's person-reidentification-retail-0277 is stronger than 0267 on person crops
it never saw; distillation moves what it knows into the 0267 trunk on the training photos. Two losses on P x K
batches (`losses.feature_regression_loss`, `losses.relation_distillation_loss`), optionally a supervised
contrastive term on the batch's identity labels. Runs through `transformers.Trainer` like `trunk_binding`:
`TrunkDistillationCollator` augments the photos and runs the teacher on exactly the pixels the student sees. The
teacher is any callable from normalised pixels to embeddings, e.g. `openvino_reid_embedder` on an Open Model Zoo IR.
What each option measured is in `docs/experiments.md`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers.utils import ModelOutput

from ..losses import feature_regression_loss, relation_distillation_loss, supervised_contrastive_binding_loss
from ..osnet import OSNet
from .trunk_binding import augment_view, freeze_batchnorm, train_trunk_in_place


@dataclass
class TrunkDistillationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    feature_loss: torch.Tensor | None = None
    relation_loss: torch.Tensor | None = None
    supervised_loss: torch.Tensor | None = None
    embeds: torch.Tensor | None = None


class TrunkDistillationModel(nn.Module):
    """The trainable trunk (student) plus a linear map of its embedding to the teacher's dimension (trained here and
    thrown away afterwards). `supervised_weight`: weight of a third loss that uses the identity labels of the P x K
    batch (supervised contrastive among the student's own embeddings, at the relation loss's temperature)."""

    def __init__(self, trunk: OSNet, teacher_dim: int, temperature: float = 0.05, relation_weight: float = 1.0,
                 train_batchnorm: bool = False, supervised_weight: float = 0.0):
        super().__init__()
        self.trunk = trunk
        self.to_teacher = nn.Linear(OSNet.embedding_size, teacher_dim)
        self.temperature, self.relation_weight = temperature, relation_weight
        self.train_batchnorm, self.supervised_weight = train_batchnorm, supervised_weight

    def train(self, mode: bool = True) -> TrunkDistillationModel:
        super().train(mode)
        if not self.train_batchnorm:
            freeze_batchnorm(self.trunk)
        return self

    def forward(self, pixel_values: torch.Tensor, teacher_embeds: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> TrunkDistillationOutput:
        for name, value in (("teacher_embeds", teacher_embeds), ("labels", labels)):
            if value is not None and value.shape[0] != pixel_values.shape[0]:
                raise ValueError(f"`{name}` has {value.shape[0]} rows for {pixel_values.shape[0]} images.")
        student = self.trunk(pixel_values)[1]
        with torch.autocast(pixel_values.device.type, enabled=False):  # under bf16 autocast only the trunk is bf16
            return self.losses(student.float(), teacher_embeds, labels)

    def losses(self, student: torch.Tensor, teacher_embeds: torch.Tensor | None,
               labels: torch.Tensor | None = None) -> TrunkDistillationOutput:
        """All losses in fp32: similarities divided by a 0.05 temperature need more than bf16's 8 mantissa bits."""
        embeds = F.normalize(student, dim=-1)
        if teacher_embeds is None:
            return TrunkDistillationOutput(embeds=embeds)
        teacher = F.normalize(teacher_embeds.float(), dim=-1)
        feature_loss = feature_regression_loss(self.to_teacher(student), teacher)
        relation_loss = relation_distillation_loss(embeds, teacher, self.temperature)
        loss = feature_loss + self.relation_weight * relation_loss
        supervised_loss = None
        if self.supervised_weight:
            if labels is None:
                raise ValueError("`supervised_weight` needs the batch's identity `labels`.")
            supervised_loss = supervised_contrastive_binding_loss(embeds, embeds, labels, self.temperature,
                                                                  exclude_self=True)
            loss = loss + self.supervised_weight * supervised_loss
            supervised_loss = supervised_loss.detach()
        return TrunkDistillationOutput(loss=loss, feature_loss=feature_loss.detach(),
                                       relation_loss=relation_loss.detach(), supervised_loss=supervised_loss,
                                       embeds=embeds)


class TrunkDistillationCollator:
    """Examples `{"images": [photo paths of one identity]}` -> K augmented photos each (drawn with replacement),
    their `pixel_values`, the teacher's embeddings of those same pixels and `labels` (each photo's identity, as its
    example's index in the batch). Seeded per call, so a run repeats.

    `mixup`: the probability that a crop is blended with another crop of the batch (weight uniform in [0, 1]) before
    either network sees it. The teacher embeds the blend too, so the student matches the teacher's function on
    inputs between the training photos, not only on the photos themselves ("function matching", Beyer et al.,
    CVPR 2022): the finite photo set stops being what the student fits."""

    def __init__(self, image_processor, teacher: Callable[[torch.Tensor], torch.Tensor], instances_per_identity: int = 4,
                 seed: int = 0, mixup: float = 0.0):
        if instances_per_identity < 2:
            raise ValueError(f"`instances_per_identity` must be at least 2, got {instances_per_identity}.")
        if not 0.0 <= mixup <= 1.0:
            raise ValueError(f"`mixup` is a probability in [0, 1], got {mixup}.")
        self.image_processor, self.teacher = image_processor, teacher
        self.instances, self.seed, self.calls, self.mixup = instances_per_identity, seed, 0, mixup

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        images = [augment_view(Image.open(path).convert("RGB"), rng, (0, 0, 0))
                  for example in examples for path in rng.choices(example["images"], k=self.instances)]
        pixels = self.image_processor(images, modality="rgb", return_tensors="pt")["pixel_values"]
        if self.mixup:
            pixels = mix_pixels(pixels, self.mixup, torch.Generator().manual_seed(rng.getrandbits(63)))
        with torch.no_grad():
            teacher_embeds = self.teacher(pixels).float()
        labels = torch.arange(len(examples)).repeat_interleave(self.instances)
        return {"pixel_values": pixels, "teacher_embeds": teacher_embeds, "labels": labels}


def mix_pixels(pixels: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each image, with `probability`, becomes `w * itself + (1 - w) * another image of the batch`, w ~ U(0, 1)."""
    weights = torch.rand(len(pixels), generator=generator)
    chosen = torch.rand(len(pixels), generator=generator) < probability
    weights = torch.where(chosen, weights, torch.ones_like(weights))[:, None, None, None]
    partners = torch.randperm(len(pixels), generator=generator)
    return weights * pixels + (1 - weights) * pixels[partners]


def distillation_examples(items) -> list[dict[str, list[str]]]:
    """One example per training identity with at least two photos (items: `.image`, `.label`)."""
    photos: dict[int, list[str]] = {}
    for item in items:
        photos.setdefault(item.label, []).append(str(item.image))
    return [{"images": sorted(paths)} for _, paths in sorted(photos.items()) if len(paths) >= 2]


def openvino_reid_embedder(xml: str | Path, image_processor, threads: int | None = None
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """An Open Model Zoo ReID IR (e.g. person-reidentification-retail-0277) as a function of this package's
    normalised RGB pixels: those models take BGR 0..255, one image per call."""
    import openvino as ov

    xml = Path(xml)
    if not xml.is_file():
        raise FileNotFoundError(f"OpenVINO model {xml} not found.")
    core = ov.Core()
    if threads:
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
    compiled = core.compile_model(core.read_model(str(xml)), "CPU")
    mean = torch.tensor(image_processor.image_mean)[:, None, None]
    std = torch.tensor(image_processor.image_std)[:, None, None]

    def embed(pixels: torch.Tensor) -> torch.Tensor:
        bgr = ((pixels.cpu() * std + mean) * 255.0).flip(1).numpy()
        return torch.from_numpy(np.concatenate([compiled([x[None]])[compiled.output(0)] for x in bgr]))

    return embed


def distill_trunk(trunk: OSNet, image_processor, teacher: Callable[[torch.Tensor], torch.Tensor],
                  examples: list[dict[str, list[str]]], output_dir: str | Path, steps: int,
                  learning_rate: float = 1e-4, identities_per_batch: int = 16, instances_per_identity: int = 4,
                  seed: int = 42, warmup_steps: int = 50, train_batchnorm: bool = False, schedule: str = "constant",
                  bf16: bool = False, mixup: float = 0.0, supervised_weight: float = 0.0) -> list[dict[str, float]]:
    """Trains `trunk` in place with `Trainer` (on its device, then back where it was) and returns its loss log.
    The linear map to the teacher learns 10x faster than the pretrained trunk; `train_batchnorm` lets the trunk's
    BatchNorm statistics follow the training batches (frozen by default). After the linear warm-up the learning rate
    stays (`schedule="constant"`) or decays to zero by the last step (`"cosine"`); `bf16`: see
    `train_trunk_in_place`; `mixup`: see `TrunkDistillationCollator`; `supervised_weight`: see
    `TrunkDistillationModel` (not with `mixup`: a blend of two people has no one identity)."""
    learning_rate_factor(0, steps, warmup_steps, schedule)  # checks `schedule` before any work
    if supervised_weight and mixup:
        raise ValueError("`supervised_weight` needs unblended crops (a blend has no one identity): set `mixup` to 0.")
    if len(examples) < identities_per_batch:
        raise ValueError(f"Distillation needs at least {identities_per_batch} identities with two photos, "
                         f"got {len(examples)}.")
    student = TrunkDistillationModel(trunk, teacher_dim_of(teacher, image_processor), train_batchnorm=train_batchnorm,
                                     supervised_weight=supervised_weight)
    optimizer = torch.optim.AdamW([{"params": trunk.parameters(), "lr": learning_rate},
                                   {"params": student.to_teacher.parameters(), "lr": 10 * learning_rate}],
                                  weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps, warmup_steps, schedule))
    collator = TrunkDistillationCollator(image_processor, teacher, instances_per_identity, seed, mixup)
    return train_trunk_in_place(trunk, student, examples, collator, output_dir, steps, identities_per_batch, seed,
                                optimizers=(optimizer, scheduler), bf16=bf16)


def learning_rate_factor(step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Distillation's learning-rate multiplier: linear warm-up, then 1 (`"constant"`) or a cosine decay that
    reaches 0 at `steps` (`"cosine"`)."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"`schedule` must be 'constant' or 'cosine', got {schedule!r}.")
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    return warmup * (0.5 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps))) if schedule == "cosine" else 1.0)


def teacher_dim_of(teacher: Callable[[torch.Tensor], torch.Tensor], image_processor) -> int:
    """The teacher's embedding size, from one blank crop."""
    blank = Image.new("RGB", (128, 256))
    return int(teacher(image_processor([blank], modality="rgb", return_tensors="pt")["pixel_values"]).shape[-1])


__all__ = ["TrunkDistillationModel", "TrunkDistillationCollator", "TrunkDistillationOutput", "distill_trunk",
           "distillation_examples", "mix_pixels", "learning_rate_factor", "openvino_reid_embedder"]
