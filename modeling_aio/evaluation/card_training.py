"""The model card's training provenance: one sentence per stage (trunks, distillation, skip scales, text-aligned
part, IR trunk) and the commands that reproduce each, written from `weights/training_summary.json` and the trained
weights' shape file, never typed in. `model_card` assembles them into the card.
"""

from __future__ import annotations

import json


def trunk_line(shape: dict, summary: dict) -> str:
    """The card's line on per-modality OSNet trunks (empty when every image modality reads the shared one)."""
    modalities = shape.get("osnet_modality_trunks") or []
    if not modalities:
        return ""
    bound = summary.get("trunk_binding") or {}
    details = "; ".join(f"{m}: {b['steps']} steps on {b['images']} images of {b['identities']} identities, loss "
                        f"{b['first_loss']:.2f} -> {b['last_loss']:.2f}, {b['seconds']} s" for m, b in bound.items())
    ir = summary.get("ir_trunk")
    if ir and "ir" in modalities:
        modalities = [m for m in modalities if m != "ir"]
        ir_text = "* " + ir_training_text(summary) + "\n"
        if not modalities:
            return ir_text + skip_scale_line(summary)
    else:
        ir_text = ""
    return (f"* own OSNet trunk for **{', '.join(modalities)}** (an addition to the paper): a copy of the shared trunk, "
            "trained in a first stage (`modeling_aio.training.trunk_binding`) so that each image of its modality (real "
            "sketches; synthetic views for IR) is classified among the training identities' photo embeddings of the "
            "frozen shared trunk, then frozen; the RGB gallery side "
            f"is untouched{' (' + details + ')' if details else ''};\n" + ir_text + skip_scale_line(summary))


def text_alignment_line(shape: dict, summary: dict) -> str:
    """The card's line on the text-aligned part of the embedding (empty without one)."""
    if not shape.get("text_alignment_size"):
        return ""
    heads = summary.get("text_alignment_heads") or {}
    shares = heads.get("shares") or {}
    towers = heads.get("towers_run")
    if towers:
        webp = f", photos WebP-compressed at quality {towers['webp_quality']}" if towers.get("webp_quality") else ""
        trained = (f", fine-tuned end to end with its trunk and the encoder's top {heads['tuned_layers']} layers, "
                   f"{towers['epochs']} epochs on {towers['captions']:,} captions of {towers['identities']:,} "
                   f"identities{webp} (`scripts/experiment_text_finetune.py run --variant {towers['variant_name']}`, "
                   f"seed {towers['seed']}, {towers['seconds']} s on one {towers['hardware']})")
    else:
        trained = (f", trained {heads['epochs']} epochs on {heads['captions']:,} captions of {heads['identities']:,} "
                   f"identities (`{heads['script']}`, seed {heads['seed']}, {heads['seconds']} s on "
                   f"{heads['hardware']})" if heads else "")
    chosen = (f"; shares chosen on {heads['held_identities']} captioned and {heads['rgb_held_identities']} "
              f"uncaptioned held-out identities: RGB {shares['rgb']}, text {shares['text']}, text + IR "
              f"{shares['text+ir']}, text + sketch {shares['text+sketch']}" if shares else "")
    refit = heads.get("refit")
    if refit:
        chosen += (f"; then both heads trained again from the start, shares kept, on every caption: "
                   f"{refit['captions']:,} of {refit['identities']:,} identities ({refit['seconds']} s)")
    layers = shape.get("text_alignment_layers", 0)
    context = f"{layers} self-attention layer{'s' if layers > 1 else ''} over the words, then " if layers else ""
    tuned = shape.get("text_alignment_tuned_layers", 0)
    words = (f"its own pass through the encoder, whose top {tuned} layer{'s' if tuned > 1 else ''} are fine-tuned "
             "copies" if tuned else "the encoder's outputs at its words")
    tuned_trunk = (f"0267 whose stages from {heads['trunk_from']} up train with the heads, on cached outputs of the "
                   "stages below" if heads.get("trunk_from") else "0267 fine-tuned on captions")
    if shape.get("text_alignment_trunk_from") and heads.get("branched_from"):
        tuned_trunk += (f"; it ships as its stages from {heads['branched_from']} up alone, which read the plain "
                        "second RGB trunk's stages below in place of its own tuned ones (`scripts/"
                        f"branch_text_alignment_trunk.py --from {heads['branched_from']}`, nothing retrained), so "
                        "a photo runs them once for both")
    elif shape.get("text_alignment_trunk_from"):
        tuned_trunk += (f"; it ships as those stages alone, reading the second RGB trunk's stages below "
                        f"{shape['text_alignment_trunk_from']}, so a photo runs them once for both")
    trunk = {"second_rgb": "the second RGB trunk's (0267's) feature map",
             "tuned": f"the feature map of a trunk of its own ({tuned_trunk})"}.get(
        shape.get("text_alignment_trunk"), "the shared trunk's feature map")
    return (f"* text-aligned part (an addition to the paper): {shape['text_alignment_size']} more dimensions in every "
            f"search vector. An RGB image fills them from {trunk} (1x1 convolution, max and "
            f"mean over positions), a caption from {words} ("
            f"{context}a GELU layer, max and mean over words); both heads trained together (symmetric InfoNCE over "
            "identities plus an identity loss through one cosine classifier, "
            f"`modeling_aio.training.text_alignment`){trained}. Each kind of query "
            f"weighs the part by its own share of the vector's length{chosen}; sketch and IR queries leave it "
            "zero, so their ranking is that of the ReID part alone;\n")


def text_alignment_reproduce_lines(summary: dict) -> str:
    """The commands that train and ship the text-aligned part after the main run, from its summary."""
    heads = summary.get("text_alignment_heads")
    if not heads:
        return ""
    towers = heads.get("towers_run")
    if towers:
        name, folder = towers["variant_name"], "runs/text-finetune"
        webp = f" --webp-quality {towers['webp_quality']}" if towers.get("webp_quality") else ""
        return (f"python scripts/experiment_text_finetune.py pack --out {folder}{webp}\n"
                f"python scripts/experiment_text_finetune.py run --bundle {folder} --out {folder}/run.json "
                f"--variant {name} --seed {towers['seed']} --save-towers {folder}  # on a GPU\n"
                "python scripts/train_text_alignment.py --checkpoint aio-reid --out runs/text-alignment "
                f"--tuned-towers {folder}/{name}.safetensors --towers-run {folder}/run.json --seed {heads['seed']}\n"
                "python scripts/train_text_alignment.py --ship runs/text-alignment && "
                "python scripts/build_checkpoint.py\n")
    return (f"python scripts/train_text_alignment.py --checkpoint aio-reid --out runs/text-alignment --epochs "
            f"{heads['epochs']} --size {heads['size']} --hidden {heads['hidden']}"
            f"{' --layers ' + str(heads['layers']) if heads.get('layers') else ''}"
            f"{' --tuned-layers ' + str(heads['tuned_layers']) if heads.get('tuned_layers') else ''}"
            f"{' --trunk ' + heads['trunk'] if heads.get('trunk', 'shared') != 'shared' else ''}"
            f"{' --tune-trunk-from ' + heads['trunk_from'] if heads.get('trunk_from') else ''} --seed {heads['seed']}"
            f"{'' if heads.get('refit') else ' --no-refit'}\n"
            "python scripts/train_text_alignment.py --ship runs/text-alignment && python scripts/build_checkpoint.py\n")


def ir_training_text(summary: dict) -> str:
    """What the IR path was trained on, from the training summary (its `ir_trunk` entry when an IR trunk ships)."""
    ir = summary.get("ir_trunk")
    if not ir:
        return ("The IR path was trained on synthetic IR only (CAJ channel augmentation, grayscale), never on real "
                "thermal images: it is a near-infrared path.")
    synthetic = (f" and synthetic thermal views (`{ir['thermal_style']}` style) of {ir['identities']} training "
                 "identities' photos" if ir["identities"] and ir["thermal_share"] > 0 else "")
    gate = ir.get("thermal_gate")
    gate_text = (" A thermal gate (`AIOThermalGate`, a logistic regression over the shared trunk's embedding and five "
                 "pixel statistics) sends an IR query to that trunk only when it looks thermal; near-infrared and "
                 "grayscale queries read the shared trunk as before (on unseen data the gate fired on "
                 f"{100 * gate['test_thermal_fired']:.1f}% of the held-out real thermal crops and "
                 f"{100 * gate['grey_photos_fired']:.1f}% of grayscale development photos, whose IR row it lowers "
                 "that much)." if gate else "")
    return (f"IR has an OSNet trunk of its own for **thermal** (LWIR) images, bound to the shared trunk's photo "
            f"embeddings on the {ir['real_train_pairs']} real thermal/visible person pairs of the `train` frames of "
            f"`splits/thermal_pairs_boxes.csv` (RoadScene and VIFB street scenes){synthetic} "
            f"(`{ir['script']}`, {ir['steps']} steps, seed {ir['seed']}, {ir['seconds']} s on {ir['hardware']})."
            f"{gate_text} Near-infrared is still learnt from synthetic views only (CAJ channel augmentation).")


def distill_flags(shape: dict, summary: dict) -> str:
    """The reproduce command's distillation flags (the teacher lives in ../shared/weights)."""
    run = summary.get("trunk_distillation") or {}
    teacher = run.get("teacher")
    if not teacher:
        return ""
    xml = run.get("teacher_xml", f"../shared/weights/openvino-person-reid/{teacher}-FP16/{teacher}.xml")
    options = " --distill-batchnorm train" if run.get("batchnorm") == "train" else ""
    options += " --distill-schedule cosine" if run.get("schedule") == "cosine" else ""
    options += " --distill-bf16" if run.get("bf16") else ""
    options += f" --distill-mixup {run['mixup']:g}" if run.get("mixup") else ""
    options += f" --distill-supervised {run['supervised']:g}" if run.get("supervised") else ""
    return f" \\\n    --distill-teacher {xml} --distill-steps {run.get('steps', 600)}{options}"


#: The Open Model Zoo network behind each pretrained trunk source (`checkpoint.build.OSNET_SOURCES`).
TRUNK_NETWORKS = {"osnet-0267": "person-reidentification-retail-0267", "omz-0277": "person-reidentification-retail-0277"}


def pretrained_trunk(summary: dict) -> str:
    """The pretrained source the run's shared trunk started from (summaries from before it was recorded: 0267)."""
    return summary.get("pretrained_trunk") or "osnet-0267"


def image_tokenizer_text(shape: dict, summary: dict) -> str:
    """The card's words on the OSNet image tokenizer: which pretrained trunk, how wide, how it is used."""
    source = pretrained_trunk(summary)
    return (f" — the OSNet trunk of Intel Open Model Zoo {TRUNK_NETWORKS[source]} (Apache-2.0, frozen while the "
            "tokenizers train, shared by the image modalities) with a trainable adapter per modality, grid "
            f"{shape.get('osnet_token_grid')} + 1 global token per image{osnet_width_note(shape, source)}")


def osnet_width_note(shape: dict, source: str = "osnet-0267") -> str:
    """The card's words on trunks wider than 0267 (empty at 0267's own width)."""
    width = shape.get("osnet_width", 1)
    if width <= 1:
        return ""
    if source == "omz-0277":
        return (f"; every trunk is OSNet x{0.5 * width:.1f}, 0277's own width (its OpenVINO IR ported to PyTorch, "
                "`checkpoint.osnet_conversion`)")
    return (f"; every trunk is **{width}x as wide as 0267** (OSNet x{0.5 * width:g}: 0267 widened without changing its "
            "function, `OSNet.widened`, so that the distillation below has the capacity of its x1.0 teacher)")


def second_rgb_trunk_line(shape: dict) -> str:
    """The card's line on the second RGB trunk (empty without one)."""
    share = shape.get("second_rgb_trunk_share")
    if not share:
        return ""
    return ("* second RGB trunk (an addition to the paper): person-reidentification-retail-0267 (OSNet x0.5, "
            "Apache-2.0, frozen, never trained here) fills 256 more dimensions of an RGB image's search vector; it "
            f"counts for **{share:g}** of an RGB query's similarity to an RGB photo (the weighted mean of the two "
            "cosines; share chosen on the cross-domain development protocol, `docs/experiments.md`). Two trunks "
            "trained on different data err on different people. Queries without an RGB image leave those "
            "dimensions zero, so their ranking is that of the other parts alone;\n")


def second_rgb_trunk_reproduce_line(shape: dict) -> str:
    """The command that gives the shipped weights their second RGB trunk (empty without one)."""
    share = shape.get("second_rgb_trunk_share")
    if not share:
        return ""
    return f"python scripts/ship_second_rgb_trunk.py --share {share:g} && python scripts/build_checkpoint.py\n"


def gallery_steps(run: dict) -> int | str:
    """Every training step a gallery encoder took, over the runs it went on from."""
    if run.get("averaged_runs"):  # a soup: each run it averages took as many
        return gallery_steps(run["averaged_runs"][0])
    steps = run.get("steps")
    if steps is None:
        return "?"
    earlier = gallery_steps(run["init_from_run"]) if run.get("init_from_run") else 0
    return steps + (earlier if earlier != "?" else 0)


def rgb_gallery_line(shape: dict, summary: dict) -> str:
    """The card's line on the fast RGB gallery encoder (empty without one)."""
    size, run = shape.get("rgb_gallery_image_size"), summary.get("rgb_gallery_encoder") or {}
    if not size:
        return ""
    members = run.get("averaged_runs") or [run]
    run = members[0]
    steps, balanced, stage = f"{gallery_steps(run)} steps", 0, run
    earlier_soup = None
    while stage.get("balanced_parts") and isinstance(stage.get("steps"), int):  # the stages that ran balanced last
        balanced, stage = balanced + stage["steps"], stage.get("init_from_run") or {}
        if stage.get("averaged_runs"):  # went on from a soup: count along its first run
            earlier_soup, stage = earlier_soup or stage, stage["averaged_runs"][0]
    if balanced:
        steps += (f", the last {balanced} toward targets whose ReID, text-aligned and second-trunk parts weigh "
                  "alike")
    if run.get("part_weights"):
        steps += f", the last {run['steps']} of them in the ratio {':'.join(f'{w:g}' for w in run['part_weights'])}"
    if len(members) > 1:
        seeds = ", ".join(str(member.get("seed", "?")) for member in members)
        steps += (f"; the mean of the weights of {len(members)} such runs, seeds {seeds} of the last run, a model "
                  "soup: `scripts/student_soup.py`")
    if earlier_soup is not None:
        seeds = ", ".join(str(member.get("seed", "?")) for member in earlier_soup["averaged_runs"])
        height, width = earlier_soup["image_size"]
        steps += (f"; the last {run['steps']} at this size, from the mean of the weights of "
                  f"{len(earlier_soup['averaged_runs'])} runs at {height}x{width} (seeds {seeds})")
    skipped = shape.get("rgb_gallery_skipped_blocks")
    network = f", less its blocks {', '.join(skipped)}," if skipped else ""
    return ("* fast RGB gallery encoder (an addition to the paper): 0277's network (OSNet x1.0) read at "
            f"**{size[0]}x{size[1]}**{network} plus a linear map into the search space, distilled from this "
            f"model's RGB search embedding of the training photos ({steps}; `scripts/low_resolution_student.py`); the "
            "`openvino-int8` backend indexes RGB photos with it in int8 (NNCF with accurate bias correction, "
            "calibrated on 640 training photos), so text, sketch and IR queries search a gallery it embedded (the "
            "`openvino-int8` column);\n")


def skip_flag(stage: dict, earlier: list[dict]) -> str:
    """`--skip-blocks` for the blocks a stage leaves out that the stage it went on from still had."""
    before = set(earlier[-1].get("skipped_blocks", [])) if earlier else set()
    new = [block for block in stage.get("skipped_blocks", []) if block not in before]
    return f" --skip-blocks {','.join(new)}" if new else ""


def _gallery_command(stage: dict, earlier: list[dict], start: str, output: str) -> str:
    height, width = stage["image_size"]
    flags = " --balance-parts" if stage.get("balanced_parts") else ""
    if stage.get("part_weights"):
        flags += f" --part-weights {','.join(f'{w:g}' for w in stage['part_weights'])}"
    return (f"python scripts/low_resolution_student.py {start}--image-size {height}x{width} --train-from "
            f"{stage['train_from']} --learning-rate {stage['learning_rate']:g} --bank-size {stage['bank_size']} "
            f"--steps {stage['steps']} --save-steps 500 --seed {stage['seed']}{flags}"
            f"{skip_flag(stage, earlier)} --output-dir {output}\n")


def _reproduce_gallery_run(run: dict, folders: dict[str, str], lines: list[str]) -> str:
    """Appends to `lines` the commands that make `run`'s student folder, after those of the runs it went on from or
    averages, each run once (`folders`: a run -> its folder); returns that folder."""
    key = json.dumps(run, sort_keys=True)
    if key not in folders:
        if run.get("averaged_runs"):
            members = [_reproduce_gallery_run(member, folders, lines) for member in run["averaged_runs"]]
            soups = sum(folder.startswith("runs/gallery-soup") for folder in folders.values())
            folder = "runs/gallery-soup" + (f"-{soups}" if soups else "")
            lines.append(f"python scripts/student_soup.py {folder} {' '.join(members)}\n")
        else:
            earlier = run.get("init_from_run")
            start = (f"--init-from {_reproduce_gallery_run(earlier, folders, lines)} " if earlier else
                     f"--trunk {run['trunk']} ")
            folder = f"runs/gallery-{len(folders)}"
            lines.append(_gallery_command(run, [earlier] if earlier else [], start, folder))
        folders[key] = folder
    return folders[key]


def rgb_gallery_reproduce_lines(summary: dict) -> str:
    """The commands that distil, ship and score the fast RGB gallery encoder (none without one): each run it went
    on from, each soup's runs and their averaging, each once."""
    run = summary.get("rgb_gallery_encoder")
    if not run:
        return ""
    lines: list[str] = []
    final = _reproduce_gallery_run(run, {}, lines)
    return ("".join(lines) + f"python scripts/ship_rgb_gallery_encoder.py {final} && "
            "python scripts/build_checkpoint.py  # + its int8 graph\n"
            "BACKEND=openvino-int8 scripts/dev_eval.sh aio-reid aio-reid-int8 \"sketch text text-full-gallery rgb "
            "rgb-cross-domain ir\"\n")


def late_stage_reproduce_lines(shape: dict, summary: dict) -> str:
    """The commands of the stages after the main run and its IR stage: the text-aligned part and the second RGB
    trunk, the trunk first when the part's image head reads it (`text_alignment_trunk`); last, when the part's
    tuned trunk was made a branch of the second trunk after training, that step."""
    text, second = text_alignment_reproduce_lines(summary), second_rgb_trunk_reproduce_line(shape)
    stage = (summary.get("text_alignment_heads") or {}).get("branched_from")
    branch = (f"python scripts/branch_text_alignment_trunk.py --from {stage} && python scripts/build_checkpoint.py\n"
              if stage else "")
    return (second + text if shape.get("text_alignment_trunk") == "second_rgb" else text + second) + branch


def schedule_flags(summary: dict) -> str:
    """The main run's step flags: its schedule's length, and where it stopped when that was earlier."""
    steps = summary.get("steps", 1200)
    schedule = summary.get("max_steps") or steps
    return f"--max-steps {schedule}" + (f" --stop-after {steps}" if schedule != steps else "")


def init_flags(summary: dict) -> str:
    """The init build's flag for the pretrained trunk (none for 0267, the default)."""
    source = pretrained_trunk(summary)
    return "" if source == "osnet-0267" else f"--osnet-weights {source} "


def distillation_line(shape: dict, summary: dict) -> str:
    """The card's line on the teacher distilled into the shared trunk (empty when the trunk is 0267 as it is)."""
    run = summary.get("trunk_distillation") or {}
    teacher = run.get("teacher")
    if not teacher:
        return ""
    settings = "".join([
        ", learning rate decayed to zero" if run.get("schedule") == "cosine" else "",
        ", bf16 autocast" if run.get("bf16") else "",
        f", {run['mixup']:.0%} of crops blended with another (mixup, seen by both networks)" if run.get("mixup") else "",
        f", plus a supervised contrastive loss on the batch's identity labels (weight {run['supervised']:g})"
        if run.get("supervised") else ""])
    details = (f" ({run['steps']} steps{settings} on {run['photos']} photos of {run['identities']} training "
               f"identities, loss {run['first_loss']:.2f} -> {run['last_loss']:.2f}, {run['seconds']} s)") if run else ""
    return (f"* the shared trunk is 0267 **distilled from {teacher}** (Open Model Zoo, Apache-2.0; an addition to the "
            "paper) in a stage before the others (`modeling_aio.training.trunk_distillation`): on training photos, a linear map "
            "of its embedding regresses the teacher's (cosine) and its in-batch similarity ranking follows the "
            f"teacher's (KL){details}; the teacher's own weights are not part of the checkpoint;\n")


def skip_scale_line(summary: dict) -> str:
    """The card's lines on the chosen RGB and sketch skip scales (empty when none was chosen)."""
    lines = ""
    rgb = summary.get("rgb_skip_scale")
    if rgb:
        lines += (f"* the RGB skip (the shared trunk's embedding in every gallery feature) counts **x{rgb['scale']:.2f}** "
                  "against the [CLS] projection: chosen by the mean Rank-1 (then mAP) of RGB->RGB and grayscale "
                  f"IR->RGB over a grid of scales, among the {rgb['photos']} photos of {rgb['identities']} "
                  "training-side identities no head trained on (`--rgb-scale-identities`; mean Rank-1 "
                  f"{100 * rgb['rank1']:.1f} there vs {100 * rgb['rank1_unscaled']:.1f} unscaled); chosen before the "
                  "sketch scale and the text alignment, which match against that gallery;\n")
    chosen = summary.get("skip_scale")
    if chosen:
        lines += (f"* the {chosen['modality']} skip counts **x{chosen['scale']:.2f}** against the [CLS] projection: "
                  f"chosen by Rank-1 (then mAP) over a grid of scales on the real sketches of {chosen['queries']} "
                  "training-side identities that neither stage saw (`--sketch-holdout`; Rank-1 "
                  f"{100 * chosen['rank1']:.0f} there vs {100 * chosen['rank1_unscaled']:.0f} unscaled, against "
                  f"{sketch_gallery(chosen)});\n")
    return lines


def sketch_gallery(chosen: dict) -> str:
    """Words for the sketch scale's gallery: the held-out people's photos, plus other people's where there were."""
    people = chosen.get("gallery_identities", chosen["identities"])
    if people == chosen["identities"]:
        return f"their {chosen['photos']} photos"
    return (f"{chosen['photos']} photos: theirs and those of {people - chosen['identities']} other people no head "
            "trained on")


def trained_trunks(shape: dict, summary: dict) -> list[str]:
    """The modality trunks of the main training run (an IR trunk bound afterwards is not one of them)."""
    return [m for m in shape.get("osnet_modality_trunks") or [] if not (m == "ir" and summary.get("ir_trunk"))]


def ir_reproduce_lines(summary: dict) -> str:
    """The commands that bind and ship the IR trunk (and gate) after the main run, from its summary."""
    ir = summary.get("ir_trunk")
    if not ir:
        return ""
    options = (f"--steps {ir['steps']} --identities {ir['identities']} --thermal-share {ir['thermal_share']} "
               f"--thermal-style {ir['thermal_style']} --learning-rate {ir['learning_rate']} --seed {ir['seed']}"
               f"{' --anchor-weight ' + str(ir['anchor_weight']) if ir.get('anchor_weight') else ''}"
               f"{' --thermal-gate' if ir.get('thermal_gate') else ''}")
    return (f"python scripts/experiment_thermal_binding.py --checkpoint aio-reid --out runs/ir {options}\n"
            "python scripts/experiment_thermal_binding.py --out runs/ir --ship && python scripts/build_checkpoint.py\n")


__all__ = ["trunk_line", "text_alignment_line", "text_alignment_reproduce_lines", "late_stage_reproduce_lines", "ir_training_text", "distill_flags", "osnet_width_note", "distillation_line", "skip_scale_line", "sketch_gallery", "trained_trunks", "ir_reproduce_lines"]
