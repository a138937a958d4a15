"""The text-aligned part of the embedding (`AIOConfig.text_alignment_size`): training its two heads and choosing how
much each kind of query weighs it (shipping it into the trained weights: `ship_alignment`).

Why: a caption names parts (shoes, a bag, a striped shirt) that a pooled ReID embedding, trained to tell people
apart, does not keep where a linear map of a sentence can find them. The image head reads the shared trunk's
feature map, the text head the frozen encoder's outputs at every word; both are trained together with a symmetric
InfoNCE over identities and an identity loss through one cosine classifier. The frozen inputs (trunk maps,
encoder outputs) are computed once (`text_alignment_inputs`), so an epoch over every caption only runs the heads.
Then `choose_alignment_shares` picks, on people no stage trained on, the share of the aligned part in RGB
embeddings (RGB -> RGB must not lose), in text queries and in composed queries (text with an image).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..configuration_aio import MODALITIES
from ..evaluation.metrics import rank_metrics
from ..losses import cosine_identity_cross_entropy, symmetric_info_nce
from ..text_alignment_aio import ALIGNMENT_QUERY_KINDS
from .data import TrainingItem

#: Shares of the aligned part tried for each kind of query (0: the query ignores it; 1: only the aligned part). The
#: values close to 1 matter: with a small RGB share, a text query must lean almost wholly on the aligned part for the
#: two parts to count alike in its scores.
SHARE_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995,
                                 0.998, 0.999, 1.0)

#: Where a model keeps its text-aligned part: both heads, a tuned part's own trunk, and the shares.
PART_PREFIXES: tuple[str, ...] = ("text_alignment_image.", "text_alignment_text.", "text_alignment_rgb_trunk.",
                                  "alignment_shares")


@torch.no_grad()
def text_alignment_inputs(model, processor, items: list[TrainingItem], batch_size: int = 64,
                          captions_required: bool = True, trunk_from: str | None = None) -> dict[str, torch.Tensor]:
    """What both heads read, computed once with the frozen rest of `model` (an `AIOModel`): per photo, the feature
    map the image head reads (fp16; `config.text_alignment_trunk`) and its unit ReID part; per caption, what the
    text head reads (`AIOModel.text_alignment_states`; fp16, padded to `max_text_length`), its mask and the unit
    ReID part of the text query; the photo each caption describes (`caption_photo`) and every photo's identity
    (`photo_labels`). Tuned encoder layers are not frozen inputs: the cache holds the pass below them, and they
    train with the heads. Likewise a tuned trunk's top stages, with `trunk_from` (an `OSNet.stages` name): the
    cache then holds, instead of the feature map, what that stage of `text_alignment_rgb_trunk` reads."""
    if trunk_from is not None:
        _tuned_trunk(model)  # fails early on a model without one
    was_training = model.training
    model.eval()
    text_index = MODALITIES.index("text")
    parts: dict[str, list[torch.Tensor]] = {"maps": [], "photo_reid": [], "states": [], "masks": [], "text_reid": [],
                                            "caption_photo": []}
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pixels = processor(rgb=[Image.open(item.image).convert("RGB") for item in chunk],
                           return_tensors="pt")["pixel_values_rgb"]
        tokens, image_globals, feature_maps = model.embeddings.tokenize({"rgb": pixels})
        if trunk_from is None:
            feature_maps, _ = model.second_rgb_outputs({"rgb": pixels}, feature_maps)
            parts["maps"].append(feature_maps["rgb"].half())
        else:
            parts["maps"].append(model.text_alignment_rgb_trunk.features_before(pixels, trunk_from).half())
        parts["photo_reid"].append(F.normalize(model.encode_tokens(tokens, None, image_globals).features, dim=-1))
        captions = [(n, caption) for n, item in enumerate(chunk) for caption in item.captions]
        if not captions:
            continue
        text = processor(text=[c for _, c in captions], padding="max_length", return_tensors="pt")
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
        positions = out.modality_ids == text_index
        states = model.text_alignment_states(model.embeddings.text_tokenizer(text["input_ids"]),
                                             out.last_hidden_state[:, positions], out.attention_mask[:, positions])
        parts["states"].append(states.half())
        parts["masks"].append(out.attention_mask[:, positions].bool())
        parts["text_reid"].append(F.normalize(out.features, dim=-1))
        parts["caption_photo"].append(torch.tensor([start + n for n, _ in captions]))
    model.train(was_training)
    if not parts["states"]:
        if captions_required:
            raise ValueError("text_alignment_inputs: none of the items has a caption.")
        parts = {**parts, "states": [torch.zeros(0, model.config.max_text_length, model.config.hidden_size).half()],
                 "masks": [torch.zeros(0, model.config.max_text_length, dtype=torch.bool)],
                 "text_reid": [torch.zeros(0, model.config.embedding_size)],
                 "caption_photo": [torch.zeros(0, dtype=torch.long)]}
    cache = {name: torch.cat(values) for name, values in parts.items()}
    cache["photo_labels"] = torch.tensor([item.label for item in items])
    return cache


def photo_inputs(model, processor, items: list[TrainingItem], trunk_from: str | None = None
                 ) -> dict[str, torch.Tensor]:
    """`text_alignment_inputs` of the items' photos alone (captions ignored): RGB -> RGB and distractors."""
    return text_alignment_inputs(model, processor, [TrainingItem(i.image, i.label, [], None) for i in items],
                                 captions_required=False, trunk_from=trunk_from)


def _tuned_trunk(model) -> torch.nn.Module:
    """The text-aligned part's own whole trunk, whose top stages `trunk_from` trains."""
    if getattr(model.config, "text_alignment_trunk", None) != "tuned" or model.config.text_alignment_trunk_from:
        raise ValueError("training a trunk's top stages (`trunk_from`) needs a text-aligned part with a whole trunk "
                         "of its own (`text_alignment_trunk='tuned'`, `--trunk tuned`; `add_text_alignment` makes "
                         "one, also from a model whose trunk branches).")
    return model.text_alignment_rgb_trunk


def _heads(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    if not getattr(model.config, "text_alignment_size", 0):
        raise ValueError("the model has no text-aligned part (build it with `text_alignment_size` > 0).")
    return model.text_alignment_image, model.text_alignment_text


def train_alignment_heads(model, cache: dict[str, torch.Tensor], epochs: int = 20, batch_size: int = 256,
                          learning_rate: float = 1e-3, temperature: float = 0.03, identity_weight: float = 1.0,
                          identity_scale: float = 20.0, label_smoothing: float = 0.1, bf16: bool = True,
                          seed: int = 0, log_every: int = 50, tuned_learning_rate: float = 3e-5,
                          trunk_from: str | None = None, trunk_learning_rate: float = 1e-4) -> list[dict[str, float]]:
    """Trains `model`'s two text-alignment heads (an `AIOModel`) on cached inputs (`text_alignment_inputs`):
    AdamW with warm-up and cosine decay, batches of captions with the photo each describes (its feature map
    mirrored at random), symmetric InfoNCE with identity-level positives plus an identity cross-entropy of both
    sides through one cosine classifier over the cached identities (dropped afterwards). The text head's tuned
    encoder layers (`text_alignment_tuned_layers`), pretrained, learn at `tuned_learning_rate`; with `trunk_from`
    (the cache made with the same), the tuned trunk's stages from that one up learn at `trunk_learning_rate` (their
    BatchNorm statistics too). Returns the loss log."""
    image_head, text_head = _heads(model)
    text_head.tuned_layers.requires_grad_(True)  # frozen everywhere but here
    trunk_stages = torch.nn.ModuleList()
    if trunk_from is not None:
        trunk = _tuned_trunk(model)
        if trunk_from not in trunk.stages:
            raise ValueError(f"trunk_from {trunk_from!r}: expected one of {', '.join(trunk.stages)}.")
        trunk_stages.extend(getattr(trunk, name) for name in trunk.stages[trunk.stages.index(trunk_from):])
        trunk_stages.requires_grad_(True)
    labels_of_photo = cache["photo_labels"]
    identities, photo_classes = labels_of_photo.unique(return_inverse=True)
    if len(identities) < 2:
        raise ValueError("train_alignment_heads needs captions of at least two identities.")
    caption_classes = photo_classes[cache["caption_photo"]]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = torch.nn.Parameter(F.normalize(torch.randn(len(identities), model.config.text_alignment_size,
                                                            generator=generator), dim=-1))
    tuned = list(text_head.tuned_layers.parameters())
    parameters = [p for p in [*image_head.parameters(), *text_head.parameters()] if all(p is not t for t in tuned)]
    groups = [{"params": parameters + [classifier], "lr": learning_rate}]
    if tuned:
        groups.append({"params": tuned, "lr": tuned_learning_rate})
    if len(trunk_stages):
        groups.append({"params": list(trunk_stages.parameters()), "lr": trunk_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    captions = len(caption_classes)
    batch_size = min(batch_size, captions)
    steps_per_epoch = max(1, captions // batch_size)
    total = steps_per_epoch * epochs
    warmup = min(200, total // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total)))
    image_head.train()
    text_head.train()
    trunk_stages.train()
    logged, started, step = [], time.time(), 0
    with torch.enable_grad():
        for epoch in range(epochs):
            order = torch.randperm(captions, generator=generator)
            for batch_start in range(0, steps_per_epoch * batch_size, batch_size):
                rows = order[batch_start:batch_start + batch_size]
                maps = cache["maps"][cache["caption_photo"][rows]].float()
                if bool(torch.rand(1, generator=generator) < 0.5):
                    maps = maps.flip(-1)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and maps.device.type == "cpu"):
                    if trunk_from is not None:
                        maps = model.text_alignment_rgb_trunk.feature_map_from(maps, trunk_from)
                    image = image_head(maps)
                    text = text_head(cache["states"][rows].float(), cache["masks"][rows])
                image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
                classes = caption_classes[rows]
                contrastive = symmetric_info_nce(text, image, classes, temperature)
                identity = cosine_identity_cross_entropy([text, image], classifier, classes, identity_scale,
                                                         label_smoothing)
                loss = contrastive + identity_weight * identity
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step % log_every == 0 or step == total:
                    logged.append({"stage": "text_alignment", "epoch": epoch + 1, "step": step,
                                   "loss": round(float(loss.detach()), 4),
                                   "contrastive": round(float(contrastive.detach()), 4),
                                   "identity": round(float(identity.detach()), 4),
                                   "seconds": round(time.time() - started)})
    image_head.eval()
    text_head.eval()
    text_head.tuned_layers.requires_grad_(False)
    trunk_stages.eval().requires_grad_(False)
    return logged


@torch.no_grad()
def aligned_vectors(model, cache: dict[str, torch.Tensor], batch_size: int = 512
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit aligned vectors of the cached photos, of the cached captions), with the heads as they are."""
    image_head, text_head = _heads(model)
    image_head.eval()
    text_head.eval()
    size = model.config.text_alignment_size
    images = [image_head(cache["maps"][i:i + batch_size].float()) for i in range(0, len(cache["maps"]), batch_size)]
    texts = [text_head(cache["states"][i:i + batch_size].float(), cache["masks"][i:i + batch_size])
             for i in range(0, len(cache["states"]), batch_size)]
    return (F.normalize(torch.cat(images or [torch.zeros(0, size)]), dim=-1),
            F.normalize(torch.cat(texts or [torch.zeros(0, size)]), dim=-1))


def joined(reid: torch.Tensor, aligned: torch.Tensor, share: float) -> torch.Tensor:
    """The search vector `AIOModel.join_aligned` makes, from unit parts and a share."""
    return torch.cat([reid * math.sqrt(1 - share), aligned * math.sqrt(share)], dim=1)


def _rank1_map(queries: torch.Tensor, gallery: torch.Tensor, query_labels: torch.Tensor,
               gallery_labels: torch.Tensor, remove_own: torch.Tensor | None = None) -> tuple[float, float]:
    scores = (queries @ gallery.T).numpy()
    invalid = None
    if remove_own is not None:  # each query's own photo leaves its gallery
        mask = torch.zeros(scores.shape, dtype=torch.bool)
        mask[torch.arange(len(queries)), remove_own] = True
        invalid = lambda rows: mask[rows].numpy()  # noqa: E731 (rank_metrics asks for a function of row slices)
    metrics = rank_metrics(scores, query_labels.numpy(), gallery_labels.numpy(), invalid, ranks=(1,))
    return float(metrics["rank-1"]), float(metrics["mAP"])


@torch.no_grad()
def choose_alignment_shares(model, held: dict[str, torch.Tensor], rgb_held: dict[str, torch.Tensor] | None = None,
                            composed: dict[str, dict[str, torch.Tensor]] | None = None,
                            grid: tuple[float, ...] = SHARE_GRID) -> dict:
    """Sets `model.alignment_shares` (an `AIOModel`) from people no head trained on, and returns the record.

    `held`: `text_alignment_inputs` of held-out captioned identities. `rgb_held`: the same of held-out uncaptioned
    identities (photos only), added to the gallery as distractors and used for RGB -> RGB. The RGB share is the
    largest of `grid` (above 0, so the text part can count) whose leave-one-out RGB -> RGB Rank-1 and mAP over all
    held photos are at least those without the part; the text share is the one whose captions find their people
    best (Rank-1, then mAP) among the held photos; each composed share likewise for its `composed` queries (per
    kind, `text+ir` and `text+sketch`: `reid`, their unit ReID parts; `text_rows`, which caption of `held` each
    holds; `source_photo`, the photo its image was made from, removed from its gallery). Without composed queries
    of a kind, its share is the text share."""
    images, texts = aligned_vectors(model, held)
    photo_reid, photo_labels = held["photo_reid"], held["photo_labels"]
    if rgb_held is not None:
        extra_images, _ = aligned_vectors(model, rgb_held)
        images = torch.cat([images, extra_images])
        photo_reid = torch.cat([photo_reid, rgb_held["photo_reid"]])
        photo_labels = torch.cat([photo_labels, rgb_held["photo_labels"]])
    own = torch.arange(len(photo_reid))
    has_pair = (photo_labels[:, None] == photo_labels[None, :]).sum(1) > 1
    rgb_queries = torch.nonzero(has_pair).flatten()
    rgb_scores = {}
    for share in grid:
        gallery = joined(photo_reid, images, share)
        rgb_scores[share] = _rank1_map(gallery[rgb_queries], gallery, photo_labels[rgb_queries], photo_labels,
                                       own[rgb_queries])
    baseline = rgb_scores[min(grid)]
    keeping = [s for s in grid if 0 < s < 1 and rgb_scores[s][0] >= baseline[0] and rgb_scores[s][1] >= baseline[1]]
    rgb_share = max(keeping) if keeping else min(s for s in grid if s > 0)
    gallery = joined(photo_reid, images, rgb_share)
    caption_labels = held["photo_labels"][held["caption_photo"]]
    text_scores = {share: _rank1_map(joined(held["text_reid"], texts, share), gallery, caption_labels, photo_labels)
                   for share in grid}
    text_share = max(grid, key=lambda s: (text_scores[s], -s))
    record = {"stage": "alignment_shares", "rgb": rgb_share, "text": text_share,
              "rgb_rank1_map": {str(s): [round(v, 2) for v in rgb_scores[s]] for s in grid},
              "text_rank1_map": {str(s): [round(v, 2) for v in text_scores[s]] for s in grid},
              "held_photos": len(photo_reid), "held_captions": len(caption_labels)}
    shares = {"rgb": rgb_share, "text": text_share}
    for kind, queries in (composed or {}).items():
        composed_labels = caption_labels[queries["text_rows"]]
        scores = {share: _rank1_map(joined(queries["reid"], texts[queries["text_rows"]], share), gallery,
                                    composed_labels, photo_labels, queries["source_photo"]) for share in grid}
        shares[kind] = max(grid, key=lambda s: (scores[s], -s))
        record[f"{kind}_rank1_map"] = {str(s): [round(v, 2) for v in scores[s]] for s in grid}
    for kind in ALIGNMENT_QUERY_KINDS:
        shares.setdefault(kind, text_share)
    record.update({kind: shares[kind] for kind in ALIGNMENT_QUERY_KINDS})
    model.alignment_shares.copy_(torch.tensor([shares[kind] for kind in ALIGNMENT_QUERY_KINDS]))
    return record


def composed_queries(model, processor, held_items: list[TrainingItem], seed: int = 0
                     ) -> dict[str, dict[str, torch.Tensor]]:
    """The held captions as composed queries, per kind (`text+ir`, `text+sketch`): each caption with a synthetic
    view of the photo it describes (`calibration.alignment_features`, the text skip's own cache); their unit ReID
    parts, which caption of `text_alignment_inputs(held_items)` each holds (captions come in the same order) and
    its source photo."""
    from .calibration import alignment_features, cached_query_features

    cache = alignment_features(model, processor, held_items, ("ir", "sketch"), seed)
    rows = torch.arange(len(cache["labels"]))
    return {kind: {"reid": F.normalize(cached_query_features(model, cache, kind, rows), dim=-1), "text_rows": rows,
                   "source_photo": cache["photo"]} for kind in ("text+ir", "text+sketch")}


def choose_shares_on(model, processor, held_items: list[TrainingItem], rgb_held_items: list[TrainingItem] = (),
                     seed: int = 0, held: dict[str, torch.Tensor] | None = None) -> dict:
    """`choose_alignment_shares` on held-out people: their captioned photos (`held_items`, also as composed
    queries) and uncaptioned ones (`rgb_held_items`), their frozen inputs computed here (`held`: those of
    `held_items`, when the caller has them already)."""
    rgb_cache = photo_inputs(model, processor, rgb_held_items) if rgb_held_items else None
    if held is None:
        held = text_alignment_inputs(model, processor, held_items)
    return choose_alignment_shares(model, held, rgb_cache, composed_queries(model, processor, held_items, seed))


def merged_inputs(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two `text_alignment_inputs` caches as one: the second's captions point at its photos, after the first's."""
    merged = {name: torch.cat([first[name], second[name]]) for name in first}
    merged["caption_photo"] = torch.cat([first["caption_photo"], second["caption_photo"] + len(first["maps"])])
    return merged


def add_text_alignment(model, size: int = 256, hidden: int = 1024, layers: int = 0, trunk: str = "shared",
                       tuned_layers: int = 0):
    """A copy of `model` (an `AIOModel`) whose config adds an untrained text-aligned part of `size` (shares 0, so
    it ranks as `model` does until `choose_alignment_shares`), its text head with `layers` context layers, its
    image head on `trunk`'s feature map (`AIOConfig.text_alignment_trunk`). A text-aligned part that `model` already
    has is replaced, not reused: it may have another shape. With `trunk="tuned"` its own trunk starts as the second
    RGB trunk (0267); with `tuned_layers` k, the text head's tuned layers start as the encoder's top k."""
    from ..modeling_aio import AIOModel

    config = model.config.__class__.from_dict({
        **model.config.to_dict(), "text_alignment_size": size, "text_alignment_hidden": hidden,
        "text_alignment_layers": layers, "text_alignment_trunk": trunk, "text_alignment_tuned_layers": tuned_layers,
        "text_alignment_trunk_from": None})  # a whole trunk trains; `ship_alignment` branches it
    grown = AIOModel(config).eval()
    kept = {key: value for key, value in model.state_dict().items() if not key.startswith(PART_PREFIXES)}
    missing, unexpected = grown.load_state_dict(kept, strict=False)
    if unexpected or any(not key.startswith(PART_PREFIXES) for key in missing):
        raise RuntimeError(f"unexpected state-dict difference: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if trunk == "tuned":  # 0267: the second RGB trunk's copy, else the shipped weights'
        if hasattr(grown, "second_rgb_trunk"):
            start = grown.second_rgb_trunk.state_dict()
        else:
            from ..checkpoint.build import pretrained_osnet_state

            start, _ = pretrained_osnet_state("osnet-0267", 1)
        grown.text_alignment_rgb_trunk.load_state_dict(start)
    encoder_layers = grown.encoder.layers.layer
    for copy, layer in zip(grown.text_alignment_text.tuned_layers, encoder_layers[len(encoder_layers) - tuned_layers:]):
        copy.load_state_dict(layer.state_dict())
    return grown


def align_text_heads(model, processor, items: list[TrainingItem], held_items: list[TrainingItem],
                     rgb_held_items: list[TrainingItem] = (), epochs: int = 20, seed: int = 0,
                     log_every: int = 50, refit: bool = True, trunk_from: str | None = None) -> dict:
    """The whole stage on an `AIOModel` with a text-aligned part: caches the frozen inputs of the captioned
    `items`, trains both heads on them, then chooses the shares on `held_items` (captioned people the heads never
    saw) and `rgb_held_items` (uncaptioned people, RGB -> RGB). With `refit`, the heads then start again and train
    on the captions of `items` and `held_items` together, the shares kept: the shipped heads see every captioned
    person, and only the share choice needs people they did not see. With `trunk_from`, the tuned trunk's stages
    from that one up train with the heads (`train_alignment_heads`) and start again with them for the refit.
    Returns the stage's record (losses, shares, timings)."""
    started = time.time()
    captioned = [item for item in items if item.captions]
    held = [item for item in held_items if item.captions]
    if len({item.label for item in held}) < 2:
        raise ValueError("align_text_heads needs held-out captions of at least two identities to choose the shares.")
    image_head, text_head = _heads(model)
    trained = {"image": image_head, "text": text_head}
    if trunk_from is not None:
        trained["trunk"] = _tuned_trunk(model)
    initial = {name: {k: v.clone() for k, v in part.state_dict().items()} for name, part in trained.items()}
    cache = text_alignment_inputs(model, processor, captioned, trunk_from=trunk_from)
    cached_at = time.time()
    log = train_alignment_heads(model, cache, epochs=epochs, seed=seed, log_every=log_every, trunk_from=trunk_from)
    trained_at = time.time()
    held_cache = text_alignment_inputs(model, processor, held)  # feature maps of the trunk as trained
    shares = choose_shares_on(model, processor, held, rgb_held_items, seed, held=held_cache)
    record = {"epochs": epochs, "seed": seed, "captions": int(sum(len(i.captions) for i in captioned)),
              "identities": len({i.label for i in captioned}), "held_identities": len({i.label for i in held}),
              "rgb_held_identities": len({i.label for i in rgb_held_items}), "loss": [log[0], log[-1]],
              "shares": shares, "cache_seconds": round(cached_at - started),
              "training_seconds": round(trained_at - cached_at)}
    if refit:
        refit_started = time.time()
        for name, part in trained.items():
            part.load_state_dict(initial[name])
        if trunk_from is not None:  # the held photos as the training cache holds them (the stages below are frozen)
            held_cache = {**held_cache, "maps": photo_inputs(model, processor, held, trunk_from)["maps"]}
        log = train_alignment_heads(model, merged_inputs(cache, held_cache), epochs=epochs, seed=seed,
                                    log_every=log_every, trunk_from=trunk_from)
        record["refit"] = {"captions": record["captions"] + int(sum(len(i.captions) for i in held)),
                           "identities": len({i.label for i in captioned + held}), "loss": [log[0], log[-1]],
                           "seconds": round(time.time() - refit_started)}
    del cache, held_cache
    return {**record, "seconds": round(time.time() - started),
            "hardware": f"{torch.get_num_threads()} CPU threads" if not torch.cuda.is_available() else "cuda"}


def held_out_people(split_file: Path, seed: int, max_identities: int | None, fusion_holdout: float,
                    rgb_identities: int) -> tuple[list[TrainingItem], list[TrainingItem], list[TrainingItem]]:
    """(training items, held-out captioned items, held-out uncaptioned items) of the `../shared` recipe, drawn as
    `scripts/train.py` draws its fusion and RGB-scale hold-outs for the same seed."""
    from .data import hold_out_captions, hold_out_identities
    from .recipe import build_items, shared_recipe

    all_records = shared_recipe(split_file, None, seed)
    records = shared_recipe(split_file, max_identities, seed)
    items, _ = build_items(records)
    items, held_items = hold_out_captions(items, fusion_holdout, seed)
    trained_identities = {r["identity"] for r in records}
    spare, _ = build_items([r for r in all_records if r["identity"] not in trained_identities])
    _, rgb_held = hold_out_identities(items, rgb_identities, seed, spare)
    return items, held_items, rgb_held


def rechoose_shares(aligned: Path, split_file: Path, seed: int = 42, max_identities: int | None = 4000,
                    fusion_holdout: float = 0.15, rgb_identities: int = 300) -> dict:
    """Chooses the shares of an aligned checkpoint (`run_text_alignment`'s output) again with today's `SHARE_GRID`,
    on the same held-out people, without retraining the heads; saves the checkpoint and its summary in place."""
    import json

    from transformers import AutoProcessor

    from ..modeling_aio import AIOModel

    _, held_items, rgb_held = held_out_people(split_file, seed, max_identities, fusion_holdout, rgb_identities)
    processor = AutoProcessor.from_pretrained(aligned)
    model = AIOModel.from_pretrained(aligned).eval()
    shares = choose_shares_on(model, processor, [item for item in held_items if item.captions], rgb_held, seed)
    model.save_pretrained(aligned)
    summary_file = aligned / "text_alignment_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    summary["shares"] = shares
    summary_file.write_text(json.dumps(summary, indent=1) + "\n")
    return shares


def run_text_alignment(checkpoint: Path, out: Path, split_file: Path, epochs: int = 20, size: int = 256,
                       hidden: int = 1024, seed: int = 42, max_identities: int | None = 4000,
                       fusion_holdout: float = 0.15, rgb_identities: int = 300, layers: int = 0,
                       trunk: str = "shared", refit: bool = True, tuned_layers: int = 0,
                       trunk_from: str | None = None) -> dict:
    """Adds a text-aligned part to `checkpoint`, runs `align_text_heads` on the `../shared` recipe (every caption
    of the training identities; `split_file`'s and the cross-domain source's people left out, as `scripts/train.py`
    leaves them) with the same held-out people as the main run's calibration (with `refit`, the heads then train
    again on those people's captions too; with `trunk_from`, a tuned trunk's stages from that one up train with
    them), and saves the result (weights, config, processor,
    `text_alignment_summary.json`) to `out`."""
    import json

    from transformers import AutoProcessor

    from ..modeling_aio import AIOModel

    torch.manual_seed(seed)
    items, held_items, rgb_held = held_out_people(split_file, seed, max_identities, fusion_holdout, rgb_identities)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = add_text_alignment(AIOModel.from_pretrained(checkpoint), size, hidden, layers, trunk, tuned_layers)
    record = align_text_heads(model, processor, items, held_items, rgb_held, epochs=epochs, seed=seed, refit=refit,
                              trunk_from=trunk_from)
    record = {"script": "scripts/train_text_alignment.py", "size": size, "hidden": hidden, "layers": layers,
              "trunk": trunk, "tuned_layers": tuned_layers, "trunk_from": trunk_from,
              "max_identities": max_identities, "fusion_holdout": fusion_holdout, **record}
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "text_alignment_summary.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


__all__ = ["SHARE_GRID", "PART_PREFIXES", "text_alignment_inputs", "photo_inputs", "train_alignment_heads",
           "aligned_vectors", "joined", "choose_alignment_shares", "composed_queries", "choose_shares_on",
           "merged_inputs", "add_text_alignment", "align_text_heads", "held_out_people", "rechoose_shares",
           "run_text_alignment"]
