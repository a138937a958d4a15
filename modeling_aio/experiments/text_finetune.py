"""End-to-end fine-tuning of the text path's two towers, scored on the full-size text protocol: the design check of
issue 20 that frozen trunks with trained heads cannot answer.

Why: the shipped text part trains only two heads over frozen inputs (0267's feature map, MiniLM's word outputs) and
levels off near 27 Rank-1 on the full-size protocol; the methods that reach 50 without vision-language pretraining
fine-tune both towers. This measures, from one start and on the same protocol, the heads alone, 0267 with MiniLM's
top layers fine-tuned (small enough to ship), and both towers fine-tuned whole.

Two halves, because the data stays where `../shared` is and the accelerator machine takes a small folder:
`pack_bundle` (CPU) writes the photos' encoded bytes, the captions tokenised over a pruned vocabulary and the two
towers' weights (fp16) into one safetensors file plus a JSON description; `run_variants` (GPU or CPU) decodes them,
trains each variant from the same start and writes Rank-1 / mAP of every variant. The code is not part of the
shipped model; the towers it saves are (`training.tuned_alignment`, `--variant 0267-top3-ship`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.protocols import text_to_image_protocol
from ..losses import cosine_identity_cross_entropy, symmetric_info_nce
from ..osnet import OSNet

PHOTO_SIZE = (256, 128)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Variant:
    """One way to train the text path: which tower parts learn, for how many epochs."""

    name: str
    train_image_trunk: bool
    text_layers_trained: int  # 0: MiniLM frozen; k: its top k layers learn; 6: all of it (embeddings stay frozen)
    epochs: int = 20
    share_holdout: bool = True  # False: leave out the people train_text_alignment.py chooses the shares on

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):  # it names the towers' file
            raise ValueError(f"Variant name {self.name!r}: use letters, digits, '.', '_' and '-' only.")
        if self.text_layers_trained < 0 or self.epochs < 1:
            raise ValueError(f"Variant {self.name}: text_layers_trained must be >= 0 and epochs >= 1.")


DEFAULT_VARIANTS = (Variant("both-towers", True, 6), Variant("0267-top2", True, 2), Variant("heads-only", False, 0),
                    Variant("0267-top2-ship", True, 2, epochs=15, share_holdout=False),
                    Variant("0267-top3-ship", True, 3, epochs=15, share_holdout=False))


def _full_gallery(text_gallery_split: Path, data: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """(gallery rows, (caption, person id) queries) of the full-size text protocol, read from `CUHK-PEDES/index.csv`."""
    split = json.loads(text_gallery_split.read_text())
    people, queried = set(split["person_ids"]), set(split["text_query_person_ids"])
    with open(data / "CUHK-PEDES" / "index.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["person_id"] in people]
    if len(rows) != split["gallery_photos"]:
        raise ValueError(f"{text_gallery_split}: {len(rows)} gallery photos found, the split says "
                         f"{split['gallery_photos']}.")
    queries = [(caption, row["person_id"]) for row in rows if row["person_id"] in queried
               for caption in json.loads(row["captions"] or "[]")]
    return rows, queries


def pack_bundle(out: Path, checkpoint: Path, minilm: Path, split_file: Path, text_gallery_split: Path, data: Path,
                seed: int = 42, max_identities: int = 4000, webp_quality: int | None = None,
                share_holdout: bool = True) -> dict:
    """Writes `out/bundle.safetensors` and `out/bundle.json`: the training captions of every captioned training
    identity (those `train_text_alignment.py` trains on, share hold-out included) with their photos, the full-size
    protocol's gallery and queries, MiniLM (`minilm`, a BertModel folder) with its word embeddings cut to the tokens
    the captions use, and 0267 as `checkpoint`'s second RGB trunk. `webp_quality`: re-encode the photos as WebP at
    that quality (about 0.6 of a JPEG's bytes at 75), so that the bundle travels within a size limit. Without
    `share_holdout`, the people `train_text_alignment.py` holds out to choose the shares stay out of the bundle, so
    that towers trained on it can have their shares chosen on people they never saw; with it, `photo_share_holdout`
    marks their photos, so that a variant can leave them out (`Variant.share_holdout`)."""
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoTokenizer

    from ..training.text_alignment import held_out_people

    items, held, _ = held_out_people(split_file, seed, max_identities, 0.15, 300)
    train = [item for item in (items + held if share_holdout else items) if item.captions]
    gallery_rows, queries = _full_gallery(text_gallery_split, data)
    gallery_people = sorted({row["person_id"] for row in gallery_rows})
    gallery_label = {pid: n for n, pid in enumerate(gallery_people)}
    photos = [Path(item.image) for item in train] + [data / "CUHK-PEDES" / row["image"] for row in gallery_rows]
    if len({str(p) for p in photos}) != len(photos):
        raise ValueError("a full-size protocol photo is also a training photo")

    def encoded(path: Path) -> bytes:
        if webp_quality is None:
            return path.read_bytes()
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "WEBP", quality=webp_quality)
        return buffer.getvalue()

    blobs = [encoded(p) for p in photos]
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    captions = [(c, n) for n, item in enumerate(train) for c in item.captions]
    captions += [(c, len(train) + n) for n, row in enumerate(gallery_rows)
                 if row["person_id"] in {pid for _, pid in queries} for c in json.loads(row["captions"] or "[]")]
    tokens = tokenizer([c for c, _ in captions], padding="max_length", truncation=True, max_length=64,
                       return_tensors="pt")
    used = torch.unique(torch.cat([tokens["input_ids"].flatten(), torch.tensor(tokenizer.all_special_ids)]))
    remap = torch.full((tokenizer.vocab_size,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    if len(used) >= 2 ** 15 or tokenizer.pad_token_id != 0:
        raise ValueError("the pruned vocabulary does not fit int16 ids with padding at 0")
    text_state = load_file(str(minilm / "model.safetensors"))
    word_key = next(k for k in text_state if k.endswith("word_embeddings.weight"))
    text_state[word_key] = text_state[word_key][used]
    image_state = {k[len("second_rgb_trunk."):]: v for k, v in load_file(str(checkpoint / "model.safetensors")).items()
                   if k.startswith("second_rgb_trunk.")}
    if not image_state:
        raise ValueError(f"{checkpoint} has no second RGB trunk (0267) to fine-tune.")
    labels = torch.tensor([item.label for item in train] + [gallery_label[r["person_id"]] for r in gallery_rows])
    held_labels = {item.label for item in held}
    in_share_holdout = torch.tensor([item.label in held_labels for item in train] + [False] * len(gallery_rows))
    tensors = {
        "photo_bytes": torch.from_numpy(np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()),
        "photo_offsets": torch.from_numpy(offsets.astype(np.int64)),
        "photo_labels": labels,
        "photo_share_holdout": in_share_holdout,
        "caption_ids": remap[tokens["input_ids"]].short(),  # padding is token 0, the mask is `ids != 0`
        "caption_photo": torch.tensor([n for _, n in captions]),
        **{f"text.{k}": v.half().contiguous() for k, v in text_state.items() if v.is_floating_point()},
        **{f"image.{k}": (v.half() if v.is_floating_point() else v).contiguous() for k, v in image_state.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "bundle.safetensors"))
    config = AutoConfig.from_pretrained(minilm).to_dict()
    config["vocab_size"] = len(used)
    description = {"train_photos": len(train), "gallery_photos": len(gallery_rows), "queries": len(queries),
                   "train_identities": len({i.label for i in train}),
                   "train_captions": sum(len(i.captions) for i in train), "share_holdout": share_holdout,
                   "minilm_config": config,
                   "image_channels": list(OSNet.channels), "seed": seed, "webp_quality": webp_quality,
                   "megabytes": round((out / "bundle.safetensors").stat().st_size / 1e6, 1)}
    if description["queries"] != sum(1 for _, n in captions if n >= len(train)):
        raise ValueError("the query captions and the protocol's captions differ")
    (out / "bundle.json").write_text(json.dumps(description, indent=1) + "\n")
    return description


class ImageTower(nn.Module):
    """0267 and the shipped image head's design (1x1 convolution, BatchNorm, ReLU, global max and mean, linear).
    The towers restate the heads of `text_alignment_aio` rather than import them: that module imports the config,
    which an accelerator machine's older transformers cannot load; a test checks that a model holding these towers
    (`training.tuned_alignment.install_tuned_towers`) computes what they compute."""

    def __init__(self, channels: tuple[int, ...], hidden: int = 1024, size: int = 256):
        super().__init__()
        self.trunk = OSNet(channels=channels)
        self.expand = nn.Conv2d(channels[-1], hidden, 1)
        self.norm = nn.BatchNorm2d(hidden)
        self.output = nn.Linear(2 * hidden, size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        positions = F.relu(self.norm(self.expand(self.trunk(pixels)[0])))
        return self.output(torch.cat([positions.amax(dim=(2, 3)), positions.mean(dim=(2, 3))], dim=1))


class TextTower(nn.Module):
    """MiniLM and the shipped text head's design (LayerNorm, linear, GELU, max and mean over the words, linear)."""

    def __init__(self, config: dict, hidden: int = 1024, size: int = 256):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.encoder = BertModel(BertConfig(**{k: v for k, v in config.items() if k != "architectures"}),
                                 add_pooling_layer=False)
        width = self.encoder.config.hidden_size
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, hidden)
        self.output = nn.Linear(2 * hidden, size)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        positions = F.gelu(self.expand(self.norm(states)))
        real = mask[..., None].to(positions.dtype)
        largest = positions.masked_fill(real == 0, torch.finfo(positions.dtype).min).amax(dim=1)
        mean = (positions * real).sum(1) / real.sum(1).clamp(min=1.0)
        return self.output(torch.cat([largest, mean], dim=1))


def decode_photos(bundle: dict[str, torch.Tensor], workers: int = 16) -> torch.Tensor:
    """(N, 3, 256, 128) uint8 photos, resized as `AIOImageProcessor` resizes them (bilinear)."""
    from PIL import Image

    raw = bundle["photo_bytes"].numpy().tobytes()
    offsets = bundle["photo_offsets"].tolist()

    def one(n: int) -> np.ndarray:
        image = Image.open(io.BytesIO(raw[offsets[n]:offsets[n + 1]])).convert("RGB")
        return np.asarray(image.resize((PHOTO_SIZE[1], PHOTO_SIZE[0]), Image.Resampling.BILINEAR))

    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(one, range(len(offsets) - 1)))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _normalised(photos: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=photos.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=photos.device)[:, None, None]
    return (photos.float() / 255 - mean) / std


def _augmented(photos: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random 256x128 crop of the photo padded by 10 pixels (torchreid's defaults)."""
    batch = len(photos)
    flip = torch.rand(batch, generator=generator) < 0.5
    photos = torch.where(flip.to(photos.device)[:, None, None, None], photos.flip(-1), photos)
    padded = F.pad(photos, (10, 10, 10, 10))
    dy, dx = (int(v) for v in torch.randint(0, 21, (2,), generator=generator))
    return padded[:, :, dy:dy + PHOTO_SIZE[0], dx:dx + PHOTO_SIZE[1]]


def _towers(bundle: dict[str, torch.Tensor], description: dict, device: torch.device) -> tuple[nn.Module, nn.Module]:
    image = ImageTower(tuple(description["image_channels"]))
    image.trunk.load_state_dict({k[len("image."):]: v.float() if v.is_floating_point() else v
                                 for k, v in bundle.items() if k.startswith("image.")})
    text = TextTower(description["minilm_config"])
    state = {k[len("text."):]: v.float() for k, v in bundle.items()
             if k.startswith("text.") and not k.startswith("text.pooler.")}  # the sentence pooler is not used
    missing, unexpected = text.encoder.load_state_dict(state, strict=False)
    if unexpected or any("position_ids" not in k for k in missing):
        raise RuntimeError(f"MiniLM weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return image.to(device), text.to(device)


@torch.no_grad()
def score(image: nn.Module, text: nn.Module, bundle: dict[str, torch.Tensor], photos: torch.Tensor,
          description: dict, device: torch.device) -> dict[str, float]:
    """Rank-1 / mAP of the protocol's captions among its gallery photos."""
    image.eval()
    text.eval()
    first = description["train_photos"]
    gallery = torch.cat([F.normalize(image(_normalised(photos[i:i + 512].to(device))).float(), dim=-1).cpu()
                         for i in range(first, len(photos), 512)])
    rows = torch.nonzero(bundle["caption_photo"] >= first).flatten()
    queries = torch.cat([F.normalize(text(bundle["caption_ids"][r].long().to(device),
                                          bundle["caption_mask"][r].to(device)).float(), dim=-1).cpu()
                         for r in rows.split(512)])
    labels = bundle["photo_labels"]
    metrics = text_to_image_protocol(queries.numpy(), gallery.numpy(), labels[bundle["caption_photo"][rows]].numpy(),
                                     labels[first:].numpy())
    return {"rank-1": round(float(metrics["rank-1"]), 2), "mAP": round(float(metrics["mAP"]), 2)}


def training_captions(variant: Variant, bundle: dict[str, torch.Tensor], description: dict) -> torch.Tensor:
    """The caption rows `variant` trains on: every training caption, less those of the share hold-out's people
    when the variant leaves them out (the bundle must mark them, `photo_share_holdout`)."""
    photo = bundle["caption_photo"]
    keep = photo < description["train_photos"]
    if not variant.share_holdout and description.get("share_holdout", True):
        if "photo_share_holdout" not in bundle:
            raise ValueError(f"Variant {variant.name} leaves out the share hold-out, but the bundle does not mark its "
                             "photos (`photo_share_holdout`): pack it again.")
        keep &= ~bundle["photo_share_holdout"][photo]
    return torch.nonzero(keep).flatten()


def train_variant(variant: Variant, bundle: dict[str, torch.Tensor], photos: torch.Tensor, description: dict,
                  device: torch.device, seed: int = 0, batch_size: int = 128, head_lr: float = 1e-3,
                  trunk_lr: float = 1e-4, text_lr: float = 3e-5, temperature: float = 0.03,
                  score_every: int = 5, save_to: Path | None = None) -> tuple[dict, nn.Module, nn.Module]:
    """Trains one variant from the packed start (symmetric InfoNCE with identity positives plus a cosine identity
    loss through one classifier, as `training.text_alignment`; AdamW, warm-up and cosine decay, bf16 autocast on
    CUDA) and scores it every `score_every` epochs and at the end, each time writing what it trained to `save_to`
    (`save_towers`). Returns its record and its two towers."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    image, text = _towers(bundle, description, device)
    image.trunk.requires_grad_(variant.train_image_trunk)
    text.encoder.requires_grad_(False)
    layers = text.encoder.encoder.layer
    for layer in layers[len(layers) - variant.text_layers_trained:] if variant.text_layers_trained else []:
        layer.requires_grad_(True)
    train_photos = description["train_photos"]
    rows = training_captions(variant, bundle, description)
    identities, classes = bundle["photo_labels"][:train_photos].unique(return_inverse=True)
    classifier = nn.Parameter(F.normalize(torch.randn(len(identities), 256, generator=generator), dim=-1).to(device))
    heads = [p for m in (image.expand, image.norm, image.output, text.norm, text.expand, text.output)
             for p in m.parameters()] + [classifier]
    groups = [{"params": heads, "lr": head_lr}]
    if variant.train_image_trunk:
        groups.append({"params": list(image.trunk.parameters()), "lr": trunk_lr})
    if variant.text_layers_trained:
        groups.append({"params": [p for p in text.encoder.parameters() if p.requires_grad], "lr": text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    batch_size = min(batch_size, len(rows))
    steps_per_epoch = len(rows) // batch_size
    total = steps_per_epoch * variant.epochs
    warmup = min(200, total // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total)))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    trained_on = {"train_identities": len(bundle["photo_labels"][bundle["caption_photo"][rows]].unique()),
                  "train_captions": len(rows),
                  "share_holdout": description.get("share_holdout") and variant.share_holdout}
    record = {**asdict(variant), "trainable_parameters": sum(p.numel() for g in groups for p in g["params"]),
              **trained_on, "scores": [], "losses": []}
    started = time.time()
    for epoch in range(variant.epochs):
        image.train()
        text.train()
        image.trunk.train(variant.train_image_trunk)  # a frozen trunk keeps its BatchNorm statistics
        text.encoder.train(variant.text_layers_trained > 0)
        order = rows[torch.randperm(len(rows), generator=generator)]
        for step in range(steps_per_epoch):
            batch = order[step * batch_size:(step + 1) * batch_size]
            pixels = _normalised(_augmented(photos[bundle["caption_photo"][batch]].to(device), generator))
            with autocast:
                image_vectors = image(pixels)
                text_vectors = text(bundle["caption_ids"][batch].long().to(device),
                                    bundle["caption_mask"][batch].to(device))
            image_vectors = F.normalize(image_vectors.float(), dim=-1)
            text_vectors = F.normalize(text_vectors.float(), dim=-1)
            labels = classes[bundle["caption_photo"][batch]].to(device)
            loss = (symmetric_info_nce(text_vectors, image_vectors, labels, temperature)
                    + cosine_identity_cross_entropy([text_vectors, image_vectors], classifier, labels, 20.0, 0.1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        record["losses"].append(round(float(loss.detach()), 4))
        if (epoch + 1) % score_every == 0 or epoch + 1 == variant.epochs:
            record["scores"].append({"epoch": epoch + 1, "seconds": round(time.time() - started),
                                     **score(image, text, bundle, photos, description, device)})
            print(f"  {variant.name} epoch {epoch + 1}: loss {record['losses'][-1]}  {record['scores'][-1]}",
                  flush=True)
            if save_to is not None:
                save_towers(image, text, variant, save_to, record["scores"][-1], trained_on)
    record["seconds"] = round(time.time() - started)
    return record, image, text


def save_towers(image: nn.Module, text: nn.Module, variant: Variant, path: Path, scores: dict,
                data: dict | None = None) -> None:
    """What a variant trained, as fp16 safetensors (written whole, then renamed): the image tower whole (`image.*`,
    BatchNorm statistics included), the text head and MiniLM's tuned top layers (`text.*`; the frozen rest is
    MiniLM's own), with the variant, its last scores and what it trained on (`data`) as metadata."""
    from safetensors.torch import save_file

    layers = text.encoder.encoder.layer
    tuned = {f"encoder.encoder.layer.{n}." for n in range(len(layers) - variant.text_layers_trained, len(layers))}
    tensors = {f"image.{k}": v for k, v in image.state_dict().items()}
    tensors |= {f"text.{k}": v for k, v in text.state_dict().items()
                if not k.startswith("encoder.") or k.startswith(tuple(tuned))}
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in tensors.items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={"variant": json.dumps(asdict(variant)), "scores": json.dumps(scores),
                                               "data": json.dumps(data or {})})
    partial.replace(path)


def run_variants(bundle_dir: Path, out: Path, variants: tuple[Variant, ...] = DEFAULT_VARIANTS,
                 budget_seconds: float = 420.0, seed: int = 0, save_dir: Path | None = None,
                 score_every: int = 5) -> list[dict]:
    """Every variant in turn (until `budget_seconds` of training have passed: a variant starts only while under
    it), each result appended to `out` (JSON) as soon as it is scored; with `save_dir`, each variant's towers go to
    `save_dir/NAME.safetensors` at every scoring."""
    from safetensors.torch import load_file

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    description = json.loads((bundle_dir / "bundle.json").read_text())
    bundle = load_file(str(bundle_dir / "bundle.safetensors"))
    bundle["caption_mask"] = bundle["caption_ids"] != 0
    started = time.time()
    photos = decode_photos(bundle)
    if device.type == "cuda":
        photos = photos.to(device)
        torch.backends.cudnn.benchmark = True
    print(f"decoded {len(photos)} photos in {time.time() - started:.0f} s on {device}", flush=True)
    results: list[dict] = []
    began = time.time()
    for variant in variants:
        if time.time() - began > budget_seconds:
            results.append({"name": variant.name, "skipped": "time budget"})
            continue
        save_to = None if save_dir is None else save_dir / f"{variant.name}.safetensors"
        results.append(train_variant(variant, bundle, photos, description, device, seed=seed,
                                     score_every=score_every, save_to=save_to)[0])
        out.write_text(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                                   "seed": seed, "bundle": description | {"minilm_config": None},
                                   "variants": results},
                                  indent=1) + "\n")
    return results


__all__ = ["Variant", "DEFAULT_VARIANTS", "pack_bundle", "run_variants", "train_variant", "training_captions",
           "save_towers", "score", "decode_photos", "ImageTower", "TextTower"]
