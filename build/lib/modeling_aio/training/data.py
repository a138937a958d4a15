"""Training data: one item per RGB photo, the multimodal training set with synthesised modalities, the
identity-balanced P x K sampler, the collator that masks attribute words, and the identity hold-outs that later
stages choose their settings on.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

from processing_aio.synthesis import channel_augment_ir, random_sketch


@dataclass
class TrainingItem:
    """One RGB photo of an identity, with what else is known about that identity."""

    image: str
    label: int
    captions: list[str] = field(default_factory=list)
    real_sketch: str | None = None


class MultimodalReIdDataset(Dataset):
    """Yields, for one RGB photo: the augmented photo, a synthetic IR view (CAJ channel augmentation), a sketch
    (synthetic XDoG, or the identity's real sketch once `use_real_sketches` is on: the progressive schedule) and a
    caption when the identity has one. Views are seeded by (seed, epoch, index), so a resumed run sees the same."""

    def __init__(self, items: list[TrainingItem], seed: int = 0, flip: bool = True):
        self.items, self.seed, self.flip = items, seed, flip
        self.epoch = 0
        self.use_real_sketches = False

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    @property
    def has_caption(self) -> list[bool]:
        return [bool(item.captions) for item in self.items]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        rng = random.Random(hash((self.seed, self.epoch, index)) & 0xFFFFFFFF)
        photo = Image.open(item.image).convert("RGB")
        if self.flip and rng.random() < 0.5:
            photo = ImageOps.mirror(photo)
        if self.use_real_sketches and item.real_sketch is not None:
            sketch = Image.open(item.real_sketch).convert("RGB")
        else:
            sketch = random_sketch(photo, rng)
        example = {"rgb": photo, "ir": channel_augment_ir(photo, rng), "sketch": sketch, "labels": item.label}
        if item.captions:
            example["text"] = item.captions[rng.randrange(len(item.captions))]
        return example


class IdentityBalancedSampler(Sampler[int]):
    """P identities x K instances per batch (Hermans et al. 2017), and every batch drawn from one pool (captioned
    or not) so that a batch either has text for all its queries or for none. Deterministic per (seed, epoch)."""

    def __init__(self, labels: list[int], pools: list[bool], identities_per_batch: int, instances_per_identity: int,
                 seed: int = 0):
        self.p, self.k, self.seed, self.epoch = identities_per_batch, instances_per_identity, seed, 0
        self.by_pool: dict[bool, dict[int, list[int]]] = {}
        for index, (label, pool) in enumerate(zip(labels, pools)):
            self.by_pool.setdefault(pool, {}).setdefault(label, []).append(index)
        self._length = len(self._batches(0)) * self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + epoch)
        batches = []
        for pool in sorted(self.by_pool):
            groups = []
            for label, indices in sorted(self.by_pool[pool].items()):
                chosen = indices[:] if len(indices) >= self.k else indices + [rng.choice(indices) for _ in
                                                                              range(self.k - len(indices))]
                rng.shuffle(chosen)
                groups.append(chosen[: self.k])
            rng.shuffle(groups)
            for start in range(0, len(groups) - self.p + 1, self.p):
                batches.append([i for group in groups[start:start + self.p] for i in group])
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        for batch in self._batches(self.epoch):
            yield from batch

    def __len__(self) -> int:
        return self._length


class AIOTrainingCollator:
    """Turns examples into model inputs with `AIOProcessor`, and builds the masked-attribute targets: every word
    piece of the caption that is an attribute word is replaced by [MASK] in `masked_input_ids`, and its index in
    `attribute_words` becomes the label there (-100 elsewhere)."""

    def __init__(self, processor, attribute_words, modalities=("rgb", "ir", "sketch"), mask_probability: float = 0.8):
        self.processor = processor
        self.modalities = tuple(modalities)
        self.mask_probability = mask_probability
        tokenizer = processor.tokenizer
        self.mask_token_id = tokenizer.mask_token_id
        self.attribute_of_token: dict[int, int] = {}
        for index, word in enumerate(attribute_words):
            ids = tokenizer.convert_tokens_to_ids([word])
            if ids and ids[0] != tokenizer.unk_token_id:
                self.attribute_of_token[ids[0]] = index

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        query = {m: [e[m] for e in examples] for m in self.modalities}
        if all("text" in e for e in examples):
            query["text"] = [e["text"] for e in examples]
        batch = dict(self.processor(**query, return_tensors="pt"))
        batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=torch.long)
        if "input_ids" in batch and self.attribute_of_token:
            ids = batch["input_ids"]
            lookup = torch.full((int(ids.max()) + 1,), -100, dtype=torch.long)
            for token, attribute in self.attribute_of_token.items():
                if token < len(lookup):
                    lookup[token] = attribute
            attribute_labels = lookup[ids]
            # Seeded by the batch itself, so a resumed run masks the same words as the uninterrupted one.
            generator = torch.Generator().manual_seed(int((ids * torch.arange(1, ids.shape[1] + 1)).sum()) % 2**31
                                                      + int(batch["labels"].sum()))
            chosen = torch.rand(ids.shape, generator=generator) < self.mask_probability
            attribute_labels = torch.where(chosen, attribute_labels, torch.full_like(attribute_labels, -100))
            batch["masked_input_ids"] = torch.where(attribute_labels >= 0, torch.full_like(ids, self.mask_token_id), ids)
            batch["attribute_labels"] = attribute_labels
        return batch


def hold_out_captions(items: list[TrainingItem], fraction: float, seed: int
                      ) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """Splits off `fraction` of the captioned identities: returns the items with those identities' captions removed
    (their photos still train the image paths) and those identities' captioned items, for fitting how much a
    caption should count in composed queries on people whose descriptions were never trained on."""
    identities = sorted({item.label for item in items if item.captions})
    random.Random(seed).shuffle(identities)
    held = set(identities[:round(len(identities) * fraction)])
    kept = [TrainingItem(i.image, i.label, [] if i.label in held else i.captions, i.real_sketch) for i in items]
    return kept, [item for item in items if item.label in held and item.captions]


def hold_out_sketches(items: list[TrainingItem], fraction: float, seed: int
                      ) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """Splits off `fraction` of the identities with a real sketch: returns the items with those sketches removed
    (their photos still train) and those identities' items, sketch included, for choosing the sketch skip's scale
    (`choose_skip_scale`) on people whose sketches no stage trained on."""
    identities = sorted({item.label for item in items if item.real_sketch})
    random.Random(seed).shuffle(identities)
    held = set(identities[:round(len(identities) * fraction)])
    if len(held) < 2:  # too few to choose anything on: keep every sketch for training
        return items, []
    kept = [TrainingItem(i.image, i.label, i.captions, None if i.label in held else i.real_sketch) for i in items]
    return kept, [item for item in items if item.label in held]


def hold_out_identities(items: list[TrainingItem], count: int, seed: int, spare: list[TrainingItem] = ()
                        ) -> tuple[list[TrainingItem], list[TrainingItem]]:
    """`count` identities with at least two photos and neither captions nor a real sketch, for choosing the RGB skip's
    scale (`choose_skip_scale(..., modality="rgb")`) on people no head trained on. They come from `spare` (photos no
    stage trains a head on, e.g. the identities past `--max-identities`) when it has that many; otherwise they are
    taken out of `items`, at most a tenth of its identities. Returns (items left for training, held items)."""
    def eligible(pool) -> list[int]:
        photos = Counter(item.label for item in pool)
        marked = {item.label for item in pool if item.captions or item.real_sketch}
        return sorted(label for label, n in photos.items() if n >= 2 and label not in marked)

    candidates, source = eligible(spare), spare
    if len(candidates) < count:
        candidates, source = eligible(items), items
        count = min(count, len({item.label for item in items}) // 10, len(candidates))
    if count < 2:
        return items, []
    held = set(random.Random(seed).sample(candidates, count))
    kept = items if source is spare else [item for item in items if item.label not in held]
    return kept, [item for item in source if item.label in held]


__all__ = ["TrainingItem", "MultimodalReIdDataset", "IdentityBalancedSampler", "AIOTrainingCollator",
           "hold_out_captions", "hold_out_sketches", "hold_out_identities"]
