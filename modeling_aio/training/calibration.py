"""Calibration stages after the Trainer run, on identities no head trained on: the RGB and sketch skip scales
(`choose_skip_scale`) and the text skip with the composed-query weights (`align_text_skip`). The frozen parts'
outputs are cached once (`alignment_features`), so each fitting step is a few matrix products.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from PIL import Image

from processing_aio.synthesis import grayscale_ir, synthetic_view

from ..configuration_aio import MODALITIES
from ..evaluation.metrics import rank_metrics
from ..evaluation.protocols import composed_query_protocol
from ..losses import symmetric_info_nce
from .data import TrainingItem


@torch.no_grad()
def alignment_features(model, processor, items: list[TrainingItem], companions: tuple[str, ...] = (), seed: int = 0,
                       batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Everything the text skip's fit needs, computed once with the model as trained: the RGB embedding of each
    captioned photo and, per caption and query kind (text alone, text + each synthetic companion image), the
    [CLS] projection, the pooled text output and the image skip (0 where none)."""
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
        tokens, globals_, _ = model.embeddings.tokenize({m: pixels[f"pixel_values_{m}"] for m in images})
        cache["rgb"].append(F.normalize(model.encode_tokens({"rgb": tokens["rgb"]}, None, globals_).features, dim=-1))
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


@torch.no_grad()
def choose_skip_scale(model, processor, held_items: list[TrainingItem], modality: str = "sketch",
                      log_scales: tuple[float, ...] = tuple(x / 4 for x in range(13)), batch_size: int = 32,
                      distractors: list[TrainingItem] = ()) -> dict[str, float]:
    """Chooses `skip_log_scales[modality]` of an `AIOModel` on identities no stage trained it on; ties go to the
    smaller scale. sketch: by Rank-1 (then mAP) of the held-out identities' real sketches (`hold_out_sketches`)
    against their photos plus the `distractors` (other people's photos, counted apart). rgb: by the mean Rank-1
    (then mAP) of RGB->RGB and grayscale IR->RGB among the held-out identities' photos (`hold_out_identities`), each
    query's own photo removed; chosen first, as it changes the gallery every later choice matches against."""
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
        """[CLS] projections, trunk embeddings (the skips' inputs) and unit ReID parts of `pairs`' images."""
        parts: dict[str, list[torch.Tensor]] = {"cls": [], "raw": [], "embeds": []}
        for start in range(0, len(pairs), batch_size):
            images = [Image.open(path).convert("RGB") for path, _ in pairs[start:start + batch_size]]
            images = [synthesize(image) for image in images] if synthesize else images
            pixels = processor.image_processor(images, modality=image_modality, return_tensors="pt")["pixel_values"]
            tokens, globals_, _ = model.embeddings.tokenize({image_modality: pixels})
            out = model.encode_tokens(tokens, None, globals_)
            parts["cls"].append(out.projected_cls)
            parts["raw"].append(globals_[image_modality])
            parts["embeds"].append(F.normalize(out.features, dim=-1))  # the ReID part: what the skips change
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


def photo_labels_of(cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """The identity label of each cached RGB photo (the cache keeps labels per caption)."""
    return torch.zeros(len(cache["rgb"]), dtype=torch.long).index_put_((cache["photo"],), cache["labels"])


@torch.no_grad()
def cached_rank1(model, cache: dict[str, torch.Tensor], kind: str, rows: torch.Tensor,
                 photo_labels: torch.Tensor) -> float:
    """Rank-1 of the cached `kind` queries of `rows` among the RGB photos of their identities (`photo_labels_of`),
    each query's own photo removed (its IR / sketch view was made from it), as the development evaluation scores
    composed queries."""
    query_photos = cache["photo"][rows]
    photos = query_photos.unique()
    scores = F.normalize(cached_query_features(model, cache, kind, rows), dim=-1) @ cache["rgb"][photos].T
    own_photo = query_photos[:, None] == photos[None, :]
    scores[own_photo] = float("-inf")
    same = cache["labels"][rows][:, None] == photo_labels[photos][None, :]
    valid = (same & ~own_photo).any(1)
    hits = same.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)
    return float(hits[valid].float().mean()) if valid.any() else 0.0


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
            losses = {kind: symmetric_info_nce(cached_query_features(model, cache, kind, batch), rgb, labels, temperature)
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
    the per-modality skip weights of composed queries by Rank-1 over a grid of text-to-image weight ratios
    (`fusion_log_ratios`) on captioned identities (1) never saw. The frozen parts' outputs are cached once
    (`alignment_features`), so each step is a few matrix products. `fusion_items`: captioned photos of identities
    whose captions no earlier stage trained on (`hold_out_captions`); without them, `fusion_fraction` of the captioned
    identities of `items` are held back from (1)."""
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
    photo_labels = photo_labels_of(cache)

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
                scored.append((cached_rank1(model, cache, kind, rows, photo_labels), -log_ratio))
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


__all__ = ["alignment_features", "cached_query_features", "photo_labels_of", "cached_rank1", "fit_text_skip",
           "align_text_skip", "choose_skip_scale"]
