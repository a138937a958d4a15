"""The model card's trunk, infrared and text-alignment text (modeling_aio.evaluation.model_card and card_training): written
from the training summary, so the card says what IR and text were and were not trained on and how to rebuild each stage."""

from __future__ import annotations

from modeling_aio.evaluation.card_training import (
    image_tokenizer_text, init_flags, ir_reproduce_lines, ir_training_text, late_stage_reproduce_lines,
    schedule_flags, second_rgb_trunk_line, second_rgb_trunk_reproduce_line, text_alignment_line,
    text_alignment_reproduce_lines, trained_trunks,
)
from modeling_aio.evaluation.model_card import limitations

IR_TRUNK = {"script": "scripts/experiment_thermal_binding.py", "steps": 150, "identities": 0, "real_train_pairs": 37,
            "thermal_share": 0.5, "thermal_style": "prior", "anchor_weight": 0.0, "learning_rate": 1e-4, "seed": 0,
            "loss": [3.4, 0.01], "seconds": 250, "hardware": "2 CPU threads",
            "thermal_gate": {"fit_accuracy": 0.99, "test_thermal_fired": 0.943, "grey_photos_fired": 0.033}}


def test_without_an_ir_trunk_the_card_calls_ir_a_near_infrared_path(tmp_path):
    assert "never on real thermal" in ir_training_text({})
    assert ir_reproduce_lines({}) == ""
    assert trained_trunks({"osnet_modality_trunks": ["ir", "sketch"]}, {}) == ["ir", "sketch"]
    assert "synthetic IR" in limitations(tmp_path, {})[0]


def test_the_shipped_ir_trunk_is_described_and_reproducible_from_its_summary(tmp_path):
    summary = {"ir_trunk": IR_TRUNK}
    text = ir_training_text(summary)
    assert "37 real thermal/visible person pairs" in text and "94.3%" in text and "3.3%" in text
    assert "synthetic thermal views" not in text  # no identities: real pairs only
    lines = ir_reproduce_lines(summary)
    assert "--identities 0" in lines and "--thermal-gate" in lines and "--ship" in lines
    assert "--anchor-weight" not in lines
    assert trained_trunks({"osnet_modality_trunks": ["ir", "sketch"]}, summary) == ["sketch"]
    assert "no real near-infrared" in limitations(tmp_path, summary)[0]


TEXT_HEADS = {"script": "scripts/train_text_alignment.py", "size": 256, "hidden": 1024, "epochs": 20, "seed": 42,
              "captions": 13700, "identities": 1937, "held_identities": 342, "rgb_held_identities": 300,
              "seconds": 1800, "hardware": "2 CPU threads",
              "shares": {"rgb": 0.1, "text": 0.9, "text+ir": 0.5, "text+sketch": 0.7}}


def test_the_text_aligned_part_is_described_and_reproducible_from_its_summary(tmp_path):
    assert text_alignment_line({}, {}) == "" and text_alignment_reproduce_lines({}) == ""
    summary = {"text_alignment_heads": TEXT_HEADS}
    line = text_alignment_line({"text_alignment_size": 256}, summary)
    assert "256 more dimensions" in line and "13,700 captions of 1,937 identities" in line
    assert "RGB 0.1, text 0.9, text + IR 0.5, text + sketch 0.7" in line
    commands = text_alignment_reproduce_lines(summary)
    assert "--epochs 20 --size 256 --hidden 1024 --seed 42" in commands and "--ship runs/text-alignment" in commands
    assert any("1,937 identities" in line for line in limitations(tmp_path, summary))
    assert "(1 self-attention layer over the words, then a GELU layer" in text_alignment_line(
        {"text_alignment_size": 256, "text_alignment_layers": 1}, summary)
    layered = text_alignment_reproduce_lines({"text_alignment_heads": {**TEXT_HEADS, "layers": 1}})
    assert "--hidden 1024 --layers 1 --seed 42 --no-refit" in layered  # a record from before the refit
    refit = {**TEXT_HEADS, "refit": {"captions": 16119, "identities": 2279, "seconds": 1184}}
    refit_line = text_alignment_line({"text_alignment_size": 256}, {"text_alignment_heads": refit})
    assert "trained again from the start, shares kept, on every caption: 16,119 of 2,279 identities" in refit_line
    assert text_alignment_reproduce_lines({"text_alignment_heads": refit}).splitlines()[0].endswith("--seed 42")
    assert any("2,279 identities" in line for line in limitations(tmp_path, {"text_alignment_heads": refit}))
    tuned = {"text_alignment_heads": {**refit, "tuned_layers": 2}}
    assert "--hidden 1024 --tuned-layers 2 --seed 42" in text_alignment_reproduce_lines(tuned)
    assert "top 2 layers are fine-tuned copies" in text_alignment_line(
        {"text_alignment_size": 256, "text_alignment_tuned_layers": 2}, tuned)
    stages = {"text_alignment_heads": {**refit, "tuned_layers": 2, "trunk": "tuned", "trunk_from": "conv4"}}
    assert "--tuned-layers 2 --trunk tuned --tune-trunk-from conv4 --seed 42" in text_alignment_reproduce_lines(stages)
    assert "0267 whose stages from conv4 up train with the heads" in text_alignment_line(
        {"text_alignment_size": 256, "text_alignment_trunk": "tuned"}, stages)
    assert "reading the second RGB trunk's stages below conv4" in text_alignment_line(
        {"text_alignment_size": 256, "text_alignment_trunk": "tuned", "text_alignment_trunk_from": "conv4"}, stages)


def test_towers_fine_tuned_on_a_gpu_are_described_and_reproducible_from_their_run(tmp_path):
    towers = {"variant_name": "0267-top3-ship", "epochs": 15, "captions": 13689, "identities": 1937, "seconds": 148,
              "hardware": "NVIDIA H200", "seed": 0, "webp_quality": 75}
    heads = {"script": "scripts/train_text_alignment.py --tuned-towers", "size": 256, "hidden": 1024,
             "tuned_layers": 3, "trunk": "tuned", "seed": 42, "held_identities": 342, "rgb_held_identities": 300,
             "shares": TEXT_HEADS["shares"], "towers_run": towers}
    summary = {"text_alignment_heads": heads}
    line = text_alignment_line({"text_alignment_size": 256, "text_alignment_trunk": "tuned",
                                "text_alignment_tuned_layers": 3}, summary)
    assert "fine-tuned end to end with its trunk and the encoder's top 3 layers, 15 epochs on 13,689 captions of " \
           "1,937 identities, photos WebP-compressed at quality 75" in line
    assert "`scripts/experiment_text_finetune.py run --variant 0267-top3-ship`, seed 0, 148 s on one NVIDIA H200" in line
    commands = text_alignment_reproduce_lines(summary).splitlines()
    assert commands[0] == "python scripts/experiment_text_finetune.py pack --out runs/text-finetune --webp-quality 75"
    assert "--variant 0267-top3-ship --seed 0 --save-towers runs/text-finetune" in commands[1]
    assert commands[2].endswith("--tuned-towers runs/text-finetune/0267-top3-ship.safetensors --towers-run "
                                "runs/text-finetune/run.json --seed 42")
    assert commands[3].startswith("python scripts/train_text_alignment.py --ship runs/text-alignment")
    assert any("1,937 identities" in line for line in limitations(tmp_path, summary))


def test_the_pretrained_trunk_the_schedule_and_the_second_rgb_trunk_are_written_from_the_run():
    """A run from 0277, stopped before its schedule's end, with a second RGB trunk shipped: the card names 0277 (not
    0267 widened), reproduces the stop and the init flag, and describes and re-ships the second trunk; a summary
    from before these fields keeps the 0267 words and plain flags."""
    shape = {"osnet_width": 2, "osnet_token_grid": [4, 2], "second_rgb_trunk_share": 0.3}
    summary = {"pretrained_trunk": "omz-0277", "steps": 600, "max_steps": 1000}
    text = image_tokenizer_text(shape, summary)
    assert "person-reidentification-retail-0277" in text and "OSNet x1.0, 0277's own width" in text
    assert "widened" not in text
    assert schedule_flags(summary) == "--max-steps 1000 --stop-after 600"
    assert init_flags(summary) == "--osnet-weights omz-0277 "
    assert "counts for **0.3** of an RGB query's similarity" in second_rgb_trunk_line(shape)
    assert second_rgb_trunk_reproduce_line(shape).startswith("python scripts/ship_second_rgb_trunk.py --share 0.3 ")
    old = {"steps": 600}
    assert "retail-0267" in image_tokenizer_text({"osnet_width": 2}, old) and "widened" in image_tokenizer_text(
        {"osnet_width": 2}, old)
    assert schedule_flags(old) == "--max-steps 600" and init_flags(old) == ""
    assert second_rgb_trunk_line({}) == "" and second_rgb_trunk_reproduce_line({}) == ""
    # a text-aligned part read from the second trunk: the card says so, and the trunk ships before the part trains
    heads = {"epochs": 20, "size": 256, "hidden": 1024, "seed": 42, "trunk": "second_rgb"}
    second_shape = {**shape, "text_alignment_size": 256, "text_alignment_trunk": "second_rgb"}
    assert "the second RGB trunk's (0267's) feature map" in text_alignment_line(second_shape, {})
    lines = late_stage_reproduce_lines(second_shape, {"text_alignment_heads": heads}).splitlines()
    assert lines[0].startswith("python scripts/ship_second_rgb_trunk.py") and "--trunk second_rgb" in lines[1]
    plain_lines = late_stage_reproduce_lines(shape, {"text_alignment_heads": {**heads, "trunk": "shared"}})
    assert plain_lines.splitlines()[0].startswith("python scripts/train_text_alignment.py")
    assert "--trunk" not in plain_lines
    # a tuned trunk made a branch of the second trunk after training: said, and done last
    branched = {"text_alignment_heads": {**TEXT_HEADS, "trunk": "tuned", "branched_from": "conv3"}}
    tuned_shape = {**shape, "text_alignment_size": 256, "text_alignment_trunk": "tuned",
                   "text_alignment_trunk_from": "conv3"}
    assert "read the plain second RGB trunk's stages below in place of its own tuned ones" in text_alignment_line(
        tuned_shape, branched) and "nothing retrained" in text_alignment_line(tuned_shape, branched)
    branched_lines = late_stage_reproduce_lines(tuned_shape, branched).splitlines()
    assert branched_lines[-2].startswith("python scripts/ship_second_rgb_trunk.py")
    assert branched_lines[-1] == ("python scripts/branch_text_alignment_trunk.py --from conv3 && "
                                  "python scripts/build_checkpoint.py")


def test_the_cross_domain_goal_compares_rank1_and_map_with_0277_measured_on_the_same_protocol(tmp_path):
    """The card's goal rows for issue 19: aio-reid's cross-domain Rank-1 and mAP each against OMZ 0277's, read from
    the two runs' result files; without 0277's file the rows say nothing is met or missed."""
    import json

    from modeling_aio.evaluation.model_card import goals

    def write(label: str, rank1: float, mean_ap: float) -> None:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / "rgb-cross-domain.json").write_text(json.dumps({"metrics": {"rank-1": rank1, "mAP": mean_ap}}))

    write("aio-reid", 89.6, 87.0)
    rows = [row for row in goals(tmp_path) if "cross-domain" in row]
    assert rows == ["| RGB → RGB cross-domain Rank-1 ≥ OMZ 0277's (—) | 89.6 | — |",
                    "| RGB → RGB cross-domain mAP ≥ OMZ 0277's (—) | 87.0 | — |"]
    write("openvino-0277", 88.1, 87.5)
    rows = [row for row in goals(tmp_path) if "cross-domain" in row]
    assert rows == ["| RGB → RGB cross-domain Rank-1 ≥ OMZ 0277's (88.1) | 89.6 | yes |",
                    "| RGB → RGB cross-domain mAP ≥ OMZ 0277's (87.5) | 87.0 | **no** |"]


def test_limitations_of_a_model_on_0277_name_the_frozen_trunk_the_cross_domain_figures_and_the_speed(tmp_path):
    import json

    def write(label: str, task: str, rank1: float) -> None:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{task}.json").write_text(json.dumps({"metrics": {"rank-1": rank1, "mAP": 50.0}}))

    write("aio-reid", "rgb", 97.3)
    write("openvino-0277", "rgb", 97.8)
    write("aio-reid", "rgb-cross-domain", 89.6)
    write("openvino-0277", "rgb-cross-domain", 88.1)
    lines = limitations(tmp_path, {"pretrained_trunk": "omz-0277"})
    rgb = next(line for line in lines if line.startswith("* RGB -> RGB"))
    assert "0277 itself, frozen" in rgb and "scores 89.6 against 0277's 88.1" in rgb and "distillation" not in rgb
    assert any(line.startswith("* Speed: an RGB photo runs two OSNet trunks") for line in lines)
    old = limitations(tmp_path, {})
    assert any("distillation brought the trunk" in line for line in old)
    assert not any(line.startswith("* Speed") for line in old)


def test_the_card_states_the_width_of_the_vectors_the_model_returns():
    from modeling_aio import AIOConfig
    from modeling_aio.evaluation.model_card import search_vector_width

    shape = {"embedding_size": 512, "text_alignment_size": 256, "second_rgb_trunk_share": 0.33}
    config = AIOConfig(image_tokenizer="osnet", image_size=(256, 128), **shape)
    assert search_vector_width(shape) == config.search_embedding_size == 1024
    assert search_vector_width({}) == 512


def test_the_card_describes_and_reproduces_a_gallery_encoder_trained_in_two_stages():
    from modeling_aio.evaluation.card_training import rgb_gallery_line, rgb_gallery_reproduce_lines

    first = {"trunk": "osnet-0277", "image_size": [224, 112], "train_from": "conv3", "learning_rate": 1e-4,
             "bank_size": 4096, "steps": 2000, "seed": 7}
    run = {**first, "steps": 1500, "balanced_parts": [512, 256, 256], "init_from_run": first}
    assert rgb_gallery_line({}, {"rgb_gallery_encoder": run}) == "" == rgb_gallery_reproduce_lines({})
    line = rgb_gallery_line({"rgb_gallery_image_size": [224, 112]}, {"rgb_gallery_encoder": run})
    assert "**224x112**" in line and "3500 steps, the last 1500 toward targets" in line
    lines = rgb_gallery_reproduce_lines({"rgb_gallery_encoder": run}).splitlines()
    assert lines[0].startswith("python scripts/low_resolution_student.py --trunk osnet-0277 --image-size 224x112")
    assert "--init-from runs/gallery-0 " in lines[1] and "--steps 1500" in lines[1] and "--balance-parts" in lines[1]
    assert lines[2].startswith("python scripts/ship_rgb_gallery_encoder.py runs/gallery-1")
    assert "--skip-blocks" not in "".join(lines)


def test_the_card_names_the_blocks_a_gallery_encoder_left_out_and_the_run_that_left_them_out():
    from modeling_aio.evaluation.card_training import rgb_gallery_line, rgb_gallery_reproduce_lines

    first = {"trunk": "osnet-0277", "image_size": [224, 112], "train_from": "conv3", "learning_rate": 1e-4,
             "bank_size": 4096, "steps": 2000, "seed": 7}
    balanced = {**first, "steps": 1500, "balanced_parts": [512, 256, 256], "init_from_run": first}
    run = {**balanced, "steps": 2000, "skipped_blocks": ["conv3.1", "conv4.1"], "part_weights": [1.0, 2.0, 1.0],
           "init_from_run": balanced}
    shape = {"rgb_gallery_image_size": [224, 112], "rgb_gallery_skipped_blocks": ["conv3.1", "conv4.1"]}
    line = rgb_gallery_line(shape, {"rgb_gallery_encoder": run})
    assert "**224x112**, less its blocks conv3.1, conv4.1," in line and "5500 steps, the last 3500 toward" in line
    assert "alike, the last 2000 of them in the ratio 1:2:1;" in line
    lines = rgb_gallery_reproduce_lines({"rgb_gallery_encoder": run}).splitlines()
    assert "--skip-blocks" not in lines[0] + lines[1] and "--part-weights" not in lines[1]
    assert lines[2].endswith("--balance-parts --part-weights 1,2,1 --skip-blocks conv3.1,conv4.1 "
                             "--output-dir runs/gallery-2")


def _soup_of_two_gallery_runs() -> tuple[list[dict], dict]:
    """Two 224x112 gallery runs without conv2.1 (seeds 7 and 42) that went on from one balanced run, and their soup."""
    first = {"trunk": "osnet-0277", "image_size": [224, 112], "train_from": "conv3", "learning_rate": 1e-4,
             "bank_size": 4096, "steps": 2000, "seed": 7, "balanced_parts": [512, 256, 256]}
    members = [{**first, "train_from": "conv2", "steps": 2500, "seed": seed, "skipped_blocks": ["conv2.1"],
                "init_from_run": first} for seed in (7, 42)]
    soup = {"trunk": "osnet-0277", "image_size": [224, 112], "skipped_blocks": ["conv2.1"], "averaged_runs": members}
    return members, soup


def test_the_card_describes_and_reproduces_a_soup_of_two_gallery_encoders_once_per_shared_run():
    from modeling_aio.evaluation.card_training import rgb_gallery_line, rgb_gallery_reproduce_lines

    members, soup = _soup_of_two_gallery_runs()
    line = rgb_gallery_line({"rgb_gallery_image_size": [224, 112], "rgb_gallery_skipped_blocks": ["conv2.1"]},
                            {"rgb_gallery_encoder": soup})
    assert "4500 steps, the last 4500 toward targets" in line
    assert "the mean of the weights of 2 such runs, seeds 7, 42 of the last run" in line
    lines = rgb_gallery_reproduce_lines({"rgb_gallery_encoder": soup}).splitlines()
    assert len(lines) == 6 and lines[0].startswith("python scripts/low_resolution_student.py --trunk osnet-0277")
    assert [("--seed 7 " in line, "--seed 42 " in line) for line in lines[1:3]] == [(True, False), (False, True)]
    assert all("--init-from runs/gallery-0 " in line and "--skip-blocks conv2.1" in line for line in lines[1:3])
    assert lines[3] == "python scripts/student_soup.py runs/gallery-soup runs/gallery-1 runs/gallery-2"
    assert lines[4].startswith("python scripts/ship_rgb_gallery_encoder.py runs/gallery-soup ")


def test_the_card_describes_and_reproduces_a_gallery_encoder_that_went_on_from_a_soup_at_another_size():
    from modeling_aio.evaluation.card_training import rgb_gallery_line, rgb_gallery_reproduce_lines

    members, soup = _soup_of_two_gallery_runs()
    run = {**members[0], "image_size": [160, 80], "steps": 1000, "seed": 3, "init_from_run": soup}
    line = rgb_gallery_line({"rgb_gallery_image_size": [160, 80], "rgb_gallery_skipped_blocks": ["conv2.1"]},
                            {"rgb_gallery_encoder": run})
    assert "**160x80**, less its blocks conv2.1," in line and "5500 steps, the last 5500 toward targets" in line
    assert "the last 1000 at this size, from the mean of the weights of 2 runs at 224x112 (seeds 7, 42)" in line
    lines = rgb_gallery_reproduce_lines({"rgb_gallery_encoder": run}).splitlines()
    assert len(lines) == 7
    assert lines[3] == "python scripts/student_soup.py runs/gallery-soup runs/gallery-1 runs/gallery-2"
    assert lines[4].startswith("python scripts/low_resolution_student.py --init-from runs/gallery-soup "
                               "--image-size 160x80 ") and "--skip-blocks" not in lines[4]
    assert lines[4].endswith("--output-dir runs/gallery-4\n".strip())
    assert lines[5].startswith("python scripts/ship_rgb_gallery_encoder.py runs/gallery-4 ")

    again = {"trunk": "osnet-0277", "image_size": [160, 80], "skipped_blocks": ["conv2.1"],
             "averaged_runs": [run, {**run, "seed": 42}]}  # two seeds at the new size, averaged again
    line = rgb_gallery_line({"rgb_gallery_image_size": [160, 80]}, {"rgb_gallery_encoder": again})
    assert "the mean of the weights of 2 such runs, seeds 3, 42 of the last run" in line
    assert "; the last 1000 at this size, from the mean of the weights of 2 runs at 224x112 (seeds 7, 42)" in line
    lines = rgb_gallery_reproduce_lines({"rgb_gallery_encoder": again}).splitlines()
    assert len(lines) == 9 and sum("student_soup.py runs/gallery-soup " in line for line in lines) == 1
    assert lines[6] == "python scripts/student_soup.py runs/gallery-soup-1 runs/gallery-4 runs/gallery-5"
