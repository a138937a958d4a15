"""Training pieces for `transformers.Trainer`: the multimodal training set with synthesised modalities, an
identity-balanced P x K sampler, a collator built on `AIOProcessor` that masks attribute words, and a Trainer that
logs each head's loss.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler
from transformers import Trainer, TrainerCallback

from processing_aio.synthesis import channel_augment_ir, grayscale_ir, random_sketch

from .configuration_aio import MODALITIES
from .evaluation import composed_query_protocol, rank_metrics
from .modeling_aio import supervised_contrastive_binding_loss


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


class AIOTrainer(Trainer):
    """Trainer with the identity-balanced sampler and one logged loss per head (every `*_loss` field of the
    model's output)."""

    def __init__(self, *args, sampler_kwargs: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler_kwargs = sampler_kwargs or {}
        self._head_sums: dict[str, float] = {}
        self._head_counts: dict[str, int] = {}

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return IdentityBalancedSampler(dataset.labels, dataset.has_caption, seed=self.args.seed, **self.sampler_kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        for name, value in outputs.items():  # every `*_loss` the model returns (ModelOutput skips None)
            if name.endswith("_loss") and value is not None:
                self._head_sums[name] = self._head_sums.get(name, 0.0) + float(value.detach())
                self._head_counts[name] = self._head_counts.get(name, 0) + 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            for name, total in self._head_sums.items():
                logs[name] = round(total / max(1, self._head_counts[name]), 4)
            self._head_sums, self._head_counts = {}, {}
        super().log(logs, *args, **kwargs)


class EpochAndScheduleCallback(TrainerCallback):
    """Keeps the dataset's augmentation epoch in step with training, and switches from synthetic to real sketches
    after `real_after` of the run (progressive training: synthetic modalities first, then real pairs)."""

    def __init__(self, dataset: MultimodalReIdDataset, real_after: float):
        self.dataset, self.real_after = dataset, real_after

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)

    def on_step_begin(self, args, state, control, **kwargs):
        progress = state.global_step / max(1, state.max_steps)
        self.dataset.use_real_sketches = progress >= self.real_after


class StopAfterStepCallback(TrainerCallback):
    """Ends a run at `step` while keeping the learning-rate schedule of the full `max_steps`, so two runs compared
    at equal steps (e.g. one per frozen encoder) also had equal learning rates on the way."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True


def trainable_state_dict(model, include_identity_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The weights to ship: everything that trains, without the frozen encoder and (by default) without the
    dataset-specific identity classifier; keys are those of `AIOModel` (prefix `aio.` removed)."""
    # Besides what trains now: weights set by a stage of their own (skip weights, chosen after training; the
    # per-modality trunks, bound before it; the shared trunk, when a teacher was distilled into it).
    distilled = getattr(model.config, "osnet_trunk_teacher", None) is not None
    names = {name for name, parameter in model.named_parameters()
             if parameter.requires_grad or name.endswith(("skip_log_weights", "skip_log_scales"))
             or ".modality_backbones." in name or (distilled and ".image_backbone." in name)}
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("aio.encoder."):
            continue
        if not include_identity_classifier and name.startswith("identity_classifier."):
            continue
        is_buffer_of_trained = name.rsplit(".", 1)[0] in {n.rsplit(".", 1)[0] for n in names}
        if name in names or is_buffer_of_trained:
            state[name[len("aio."):] if name.startswith("aio.") else name] = tensor.detach().clone()
    return state


def set_trainable(model, mode: str, freeze_text_tokenizer: bool = True) -> None:
    """`all`: tokenizers, embeddings, projection and heads; `heads`: only the projection and heads (a light
    adaptation to a user's data that leaves the tokenizers as they are). The encoder is always frozen, and by
    default so is the text tokenizer: it starts as MiniLM's own embedding layer, which a few hundred captioned
    identities would only pull away from what the frozen layers expect. Per-modality OSNet trunks are bound in a
    stage of their own (`trunk_binding`) and stay frozen here."""
    if mode not in ("all", "heads"):
        raise ValueError(f"--train must be 'all' or 'heads', got {mode!r}.")
    frozen_backbone = not model.config.train_image_backbone
    for name, parameter in model.named_parameters():
        if name.startswith(("aio.encoder.", "aio.embeddings.modality_backbones.")) or (
                frozen_backbone and name.startswith("aio.embeddings.image_backbone.")):
            parameter.requires_grad_(False)
        elif mode == "heads":
            parameter.requires_grad_(not name.startswith("aio.embeddings."))
        else:
            parameter.requires_grad_(True)
    if freeze_text_tokenizer:
        model.aio.embeddings.text_tokenizer.requires_grad_(False)
    for name in ("skip_log_weights", "skip_log_scales"):  # chosen after training, on identities it never saw
        if hasattr(model.aio, name):
            getattr(model.aio, name).requires_grad_(False)
    if getattr(model, "bnneck", None) is not None:
        model.bnneck.bias.requires_grad_(False)


def _info_nce(queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE with identity-level positives: the binding loss in both directions."""
    return (supervised_contrastive_binding_loss(queries, keys, labels, temperature)
            + supervised_contrastive_binding_loss(keys, queries, labels, temperature)) / 2


@torch.no_grad()
def alignment_features(model, processor, items: list[TrainingItem], companions: tuple[str, ...] = (), seed: int = 0,
                       batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Everything the text skip's fit needs, computed once with the model as trained: the RGB embedding of each
    captioned photo and, per caption and query kind (text alone, text + each synthetic companion image), the
    [CLS] projection, the pooled text output and the image skip (0 where none)."""
    from processing_aio.synthesis import synthetic_view

    kinds = ("text",) + tuple(f"text+{m}" for m in companions)
    cache: dict[str, list[torch.Tensor]] = {"rgb": [], "labels": [], "photo": []}
    for kind in kinds:
        cache.update({f"{kind}/cls": [], f"{kind}/pooled": [], f"{kind}/image_skip": []})
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        rng = random.Random(seed + start)
        photos = [Image.open(item.image).convert("RGB") for item in chunk]
        images = {"rgb": photos, **{m: [synthetic_view(p, m, rng) for p in photos] for m in companions}}
        pixels = processor(**images, return_tensors="pt")
        tokens, globals_ = model.embeddings.tokenize({m: pixels[f"pixel_values_{m}"] for m in images})
        cache["rgb"].append(model.encode_tokens({"rgb": tokens["rgb"]}, None, globals_).embeds)
        photo_of = torch.tensor([i for i, item in enumerate(chunk) for _ in item.captions])
        text = processor(text=[c for item in chunk for c in item.captions], return_tensors="pt")
        text_tokens = model.embeddings.text_tokenizer(text["input_ids"])
        for kind in kinds:
            query = {"text": text_tokens}
            image = kind.split("+")[1] if "+" in kind else None
            if image:
                query[image] = tokens[image][photo_of]
            out = model.encode_tokens(query, text["attention_mask"], {m: g[photo_of] for m, g in globals_.items()})
            cache[f"{kind}/cls"].append(out.projected_cls)
            cache[f"{kind}/pooled"].append(out.text_pooled_output)
            if image is not None and model.config.osnet_embedding_skip:
                cache[f"{kind}/image_skip"].append(model.image_skip(globals_[image][photo_of], image))
        cache["labels"].append(torch.tensor([item.label for item in chunk])[photo_of])
        cache["photo"].append(photo_of + start)
    return {key: torch.cat(values) for key, values in cache.items() if values}


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


@torch.no_grad()
def choose_skip_scale(model, processor, held_items: list[TrainingItem], modality: str = "sketch",
                      log_scales: tuple[float, ...] = tuple(x / 4 for x in range(13)), batch_size: int = 32,
                      distractors: list[TrainingItem] = ()) -> dict[str, float]:
    """Chooses `skip_log_scales[modality]` of an `AIOModel` on identities no stage trained it on; ties go to the
    smaller scale.

    sketch: by Rank-1 (then mAP) of the real sketches of held-out identities (`hold_out_sketches`) against those
    identities' photos. Why: the [CLS] projection of a sketch query is trained on the few real training sketches and
    can fit them more than it generalises, while the bound sketch trunk's embedding (the skip) carries the identity.
    `distractors`: photos of other people no stage trained on (e.g. the RGB scale's `hold_out_identities`), added
    to that gallery, their labels counted apart from the held-out ones. Why: 20 sketches against only their 40
    photos leave Rank-1 at or near 1.0 for most scales (the earlier shipped choice, x3.49, scored 1.0 there), so the
    choice rests on a few queries; among hundreds of other people's photos the scales separate.

    rgb: by the mean Rank-1 (then mAP) of RGB->RGB and grayscale IR->RGB among the photos of held-out identities
    (`hold_out_identities`), each query's own photo removed from its gallery. Why: the RGB skip weighs the shared
    trunk's embedding in every gallery feature, and the [CLS] projection, fitted on the training identities, can
    outweigh a trunk that generalises better to new people. It changes the gallery that every query is matched
    against, so it is chosen before the sketch scale and the text alignment."""
    if modality not in ("sketch", "rgb"):
        raise ValueError(f"choose_skip_scale chooses the 'sketch' or 'rgb' scale, not {modality!r}.")
    if not hasattr(model, "skip_log_scales"):
        raise ValueError("choose_skip_scale needs a model built with `osnet_embedding_skip=True`.")
    photos = [(str(item.image), item.label) for item in held_items]
    if modality == "sketch":
        queries = sorted({(str(item.real_sketch), item.label) for item in held_items if item.real_sketch})
        if {str(item.image) for item in distractors} & {path for path, _ in photos}:
            raise ValueError("`distractors` must be photos of people other than the held-out sketches'.")
        # Their own label space (e.g. `hold_out_identities`' spare people): negative, so no held label is matched.
        photos += sorted({(str(item.image), -1 - item.label) for item in distractors})
    else:
        photos = sorted(set(photos))
        queries = photos
    if len({label for _, label in queries}) < 2:
        raise ValueError(f"choose_skip_scale needs held-out {modality} queries of at least two identities.")
    was_training, device = model.training, next(model.parameters()).device
    model.eval().cpu()  # a cheap stage: on the CPU, where the images are decoded

    def encode(pairs: list[tuple[str, int]], image_modality: str, synthesize=None) -> dict[str, torch.Tensor]:
        """[CLS] projections, trunk embeddings (the skips' inputs) and final embeddings of `pairs`' images."""
        parts: dict[str, list[torch.Tensor]] = {"cls": [], "raw": [], "embeds": []}
        for start in range(0, len(pairs), batch_size):
            images = [Image.open(path).convert("RGB") for path, _ in pairs[start:start + batch_size]]
            images = [synthesize(image) for image in images] if synthesize else images
            pixels = processor.image_processor(images, modality=image_modality, return_tensors="pt")["pixel_values"]
            tokens, globals_ = model.embeddings.tokenize({image_modality: pixels})
            out = model.encode_tokens(tokens, None, globals_)
            parts["cls"].append(out.projected_cls)
            parts["raw"].append(globals_[image_modality])
            parts["embeds"].append(out.embeds)
        return {name: torch.cat(values) for name, values in parts.items()}

    index = MODALITIES.index(modality)
    gallery_labels = [label for _, label in photos]
    query_labels = [label for _, label in queries]
    if modality == "sketch":
        gallery = encode(photos, "rgb")["embeds"]
        sketches = encode(queries, "sketch")

        def score() -> tuple[float, float]:
            features = F.normalize(sketches["cls"] + model.image_skip(sketches["raw"], "sketch"), dim=-1)
            metrics = rank_metrics((features @ gallery.T).numpy(), query_labels, gallery_labels, ranks=(1,))
            return float(metrics["rank-1"]) / 100, float(metrics["mAP"]) / 100
    else:
        rgb = encode(photos, "rgb")
        ir_queries = encode(photos, "ir", synthesize=grayscale_ir)["embeds"].numpy()
        own_photo = list(range(len(photos)))

        def score() -> tuple[float, float]:
            gallery = F.normalize(rgb["cls"] + model.image_skip(rgb["raw"], "rgb"), dim=-1).numpy()
            tasks = [composed_query_protocol(query, gallery, query_labels, gallery_labels, own_photo, ranks=(1,))
                     for query in (gallery, ir_queries)]
            return (sum(float(m["rank-1"]) for m in tasks) / 200, sum(float(m["mAP"]) for m in tasks) / 200)

    scored = []
    for log_scale in sorted(log_scales):
        model.skip_log_scales[index] = log_scale
        scored.append((*score(), log_scale))
    best = max(scored, key=lambda entry: entry[:2])  # first maximum: the smallest scale
    model.skip_log_scales[index] = best[2]
    model.train(was_training).to(device)
    unscaled = next((rank1 for rank1, _, log_scale in scored if log_scale == 0.0), None)
    return {"stage": "skip_scale", "modality": modality, "scale": round(math.exp(best[2]), 4),
            "rank1": round(best[0], 4), "mAP": round(best[1], 4),
            "rank1_unscaled": None if unscaled is None else round(unscaled, 4),
            "queries": len(queries), "photos": len(photos), "identities": len(set(query_labels)),
            "gallery_identities": len(set(gallery_labels))}


def cached_query_features(model, cache: dict[str, torch.Tensor], kind: str, rows: torch.Tensor) -> torch.Tensor:
    """The features `encode_tokens` gives a `kind` query (`"text"`, `"text+ir"`, ...), rebuilt from an
    `alignment_features` cache with the model's current text skip and skip weights: [CLS] projection plus the
    weighted mean of the text skip and the image skip (if any)."""
    skips = {"text": model.text_skip(cache[f"{kind}/pooled"][rows])}
    if f"{kind}/image_skip" in cache:
        skips[kind.split("+")[1]] = cache[f"{kind}/image_skip"][rows]
    return cache[f"{kind}/cls"][rows] + model.combine_skips(skips)


def fit_text_skip(model, cache: dict[str, torch.Tensor], kinds: tuple[str, ...], rows: torch.Tensor, steps: int = 1000,
                  batch_size: int = 256, learning_rate: float = 1e-3, temperature: float = 0.05, seed: int = 0,
                  log_every: int = 100) -> list[dict[str, float]]:
    """Fits `model.text_skip` alone (AdamW, symmetric InfoNCE toward the RGB embedding of the caption's photo, one
    loss per query kind) on the cached caption `rows`; returns the loss log. The one fit of the text skip: the
    last training stage and `scripts/text_scaling.py`'s learning curve both run it."""
    optimizer = torch.optim.AdamW(model.text_skip.parameters(), lr=learning_rate, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(seed)
    logged = []
    with torch.enable_grad():
        for step in range(1, steps + 1):
            batch = rows[torch.randperm(len(rows), generator=generator)[:batch_size]]
            labels, rgb = cache["labels"][batch], cache["rgb"][cache["photo"][batch]]
            losses = {kind: _info_nce(cached_query_features(model, cache, kind, batch), rgb, labels, temperature)
                      for kind in kinds}
            loss = torch.stack(list(losses.values())).mean()
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % log_every == 0 or step == steps:
                logged.append({"stage": "text", "step": step, "loss": round(float(loss.detach()), 4),
                               **{kind: round(float(value.detach()), 4) for kind, value in losses.items()}})
    model.zero_grad(set_to_none=True)
    return logged


def align_text_skip(model, processor, items: list[TrainingItem], steps: int = 1000, batch_size: int = 256,
                    learning_rate: float = 1e-3, temperature: float = 0.05, companions: tuple[str, ...] = ("ir", "sketch"),
                    fusion_items: list[TrainingItem] | None = None, fusion_fraction: float = 0.15,
                    fusion_log_ratios: tuple[float, ...] = tuple(x / 4 for x in range(-12, 5)), seed: int = 0,
                    log_every: int = 100) -> list[dict[str, float]]:
    """Last training stage for an `AIOModel` with `text_embedding_skip`: (1) fits `text_skip` so that text queries,
    alone and composed with a synthetic IR or sketch view, land on the RGB embeddings of their identity; (2) chooses
    the per-modality skip weights of composed queries, by Rank-1 over a grid of text-to-image weight ratios
    (`fusion_log_ratios`), on captioned identities that (1) never saw, so the weight given to text reflects how it
    does on new people, not on captions it has fitted. (A contrastive fit of those weights over-trusted text: on
    development ids its text + IR queries were 2 Rank-1 points below those with the grid's choice.)

    Everything else is frozen by then, so the frozen parts' outputs are cached once (`alignment_features`) and
    each step is a few matrix products: thousands of caption epochs in seconds instead of hours of image batches,
    which is what the few captioned identities need.

    `fusion_items`: captioned photos of identities whose captions no earlier stage trained on (see
    `hold_out_captions`); without them, `fusion_fraction` of the captioned identities of `items` are held back from
    (1) only, which still lets earlier stages' text training flatter text on them."""
    if not getattr(model.config, "text_embedding_skip", False):
        raise ValueError("align_text_skip needs a model built with `text_embedding_skip=True`.")
    captioned = [item for item in items if item.captions]
    identities = sorted({item.label for item in captioned})
    if len(identities) < 2:
        raise ValueError("align_text_skip needs captioned photos of at least two identities.")
    if fusion_items is not None:
        fusion_items = [item for item in fusion_items if item.captions]
        held = sorted({item.label for item in fusion_items})
        if set(held) & set(identities):
            raise ValueError("`fusion_items` must be identities that `items` does not caption.")
        captioned += fusion_items if companions and fusion_log_ratios and len(held) >= 2 else []
        fusion_ids = torch.tensor(held, dtype=torch.long)
    else:
        random.Random(seed).shuffle(identities)
        num_fusion = round(len(identities) * fusion_fraction) if companions and fusion_log_ratios else 0
        num_fusion = num_fusion if 2 <= num_fusion <= len(identities) - 2 else 0
        fusion_ids = torch.tensor(identities[:num_fusion], dtype=torch.long)

    was_training, device = model.training, next(model.parameters()).device
    model.eval().cpu()  # cached features and a few matrix products per step: the CPU is enough, and one place
    cache = alignment_features(model, processor, captioned, companions, seed, batch_size=32)
    in_fusion = torch.isin(cache["labels"], fusion_ids)
    fit_rows, fusion_rows = torch.nonzero(~in_fusion).flatten(), torch.nonzero(in_fusion).flatten()

    photo_labels = torch.zeros(len(cache["rgb"]), dtype=torch.long).index_put_((cache["photo"],), cache["labels"])

    @torch.no_grad()
    def rank1(kind: str, rows: torch.Tensor) -> float:
        """Rank-1 of `kind` queries among the RGB photos of the rows' identities, each query's own photo removed
        (its IR / sketch view was made from it), as the development evaluation scores composed queries."""
        query_photos = cache["photo"][rows]
        photos = query_photos.unique()
        scores = F.normalize(cached_query_features(model, cache, kind, rows), dim=-1) @ cache["rgb"][photos].T
        own_photo = query_photos[:, None] == photos[None, :]
        scores[own_photo] = float("-inf")
        same = cache["labels"][rows][:, None] == photo_labels[photos][None, :]
        valid = (same & ~own_photo).any(1)
        hits = same.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)
        return float(hits[valid].float().mean()) if valid.any() else 0.0

    @torch.no_grad()
    def calibrate(companion_kinds: tuple[str, ...], rows: torch.Tensor) -> list[dict[str, float]]:
        """Per companion modality, the weight of text relative to it (a grid of log ratios) that gives composed
        queries the best Rank-1 on `rows`; ties go to the smaller text weight, so text only refines an image query
        as far as it measurably helps."""
        logged = []
        text = MODALITIES.index("text")
        model.skip_log_weights[text] = 0.0
        for kind in companion_kinds:
            if f"{kind}/image_skip" not in cache:  # no image skip (no OSNet skip): text is the only skip, no ratio
                continue
            image = MODALITIES.index(kind.split("+")[1])
            scored = []
            for log_ratio in sorted(fusion_log_ratios):
                model.skip_log_weights[image] = -log_ratio
                scored.append((rank1(kind, rows), -log_ratio))
            best = max(scored, key=lambda pair: pair[0])  # first maximum: the smallest text weight
            model.skip_log_weights[image] = best[1]
            equal = next((r for r, log_weight in scored if log_weight == 0.0), None)
            logged.append({"stage": "fusion", "kind": kind, "text_over_image_weight": round(math.exp(-best[1]), 4),
                           "rank1": round(best[0], 4), "rank1_equal_weights": None if equal is None else round(equal, 4),
                           "rank1_lightest_text": round(scored[0][0], 4)})
        return logged

    kinds = ("text",) + tuple(f"text+{m}" for m in companions)
    history = fit_text_skip(model, cache, kinds, fit_rows, steps, batch_size, learning_rate, temperature, seed,
                            log_every)
    if len(fusion_rows):
        history += calibrate(kinds[1:], fusion_rows)
    model.train(was_training).to(device)
    return history


__all__ = ["TrainingItem", "MultimodalReIdDataset", "IdentityBalancedSampler", "AIOTrainingCollator", "AIOTrainer",
           "EpochAndScheduleCallback", "StopAfterStepCallback", "trainable_state_dict", "set_trainable",
           "align_text_skip", "alignment_features", "cached_query_features", "fit_text_skip", "hold_out_captions",
           "hold_out_sketches", "hold_out_identities", "choose_skip_scale"]
