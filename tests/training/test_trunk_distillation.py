"""Distilling an RGB ReID teacher into the shared OSNet trunk (`AIOConfig.osnet_trunk_teacher`)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from modeling_aio import AIOForReIdentification, AIOModel
from modeling_aio.evaluation.embedder import Embedder
from modeling_aio.training.data import TrainingItem
from modeling_aio.training.trainer import trainable_state_dict, trained_parameters
from modeling_aio.training.trunk_distillation import (
    TrunkDistillationCollator, TrunkDistillationModel, distill_trunk, distillation_examples, learning_rate_factor,
    mix_pixels, openvino_reid_embedder,
)
from processing_aio import AIOImageProcessor

from conftest import REPO, requires_shared_data
from test_trunk_binding import osnet_config, striped, with_shipped_trunks, write_training_fixture

TEACHER_XML = (REPO.parent / "shared" / "weights" / "openvino-person-reid" / "person-reidentification-retail-0277-FP16"
               / "person-reidentification-retail-0277.xml")


def pooled_teacher(pixels: torch.Tensor) -> torch.Tensor:
    """A fixed stand-in teacher: the 4x4 colour layout of the crop through a fixed random map (48 -> 32)."""
    weights = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    return F.adaptive_avg_pool2d(pixels, (4, 4)).flatten(1) @ weights


@pytest.fixture
def photo_items(tmp_path) -> list[TrainingItem]:
    items = []
    for person in range(3):
        for shot in range(2):
            photo = tmp_path / f"{person}_{shot}.jpg"
            striped(person, person * 10 + shot).save(photo)
            items.append(TrainingItem(str(photo), person, [], None))
    lonely = tmp_path / "lonely.jpg"
    striped(0, 99).save(lonely)
    return items + [TrainingItem(str(lonely), 9, [], None)]


def test_distillation_examples_group_photos_and_drop_single_shots(photo_items):
    examples = distillation_examples(photo_items)
    assert len(examples) == 3 and [len(e["images"]) for e in examples] == [2, 2, 2]
    assert examples[1]["images"][0].endswith("1_0.jpg")


def test_collator_feeds_the_teacher_the_students_pixels_and_repeats_from_its_seed(photo_items):
    examples = distillation_examples(photo_items)
    processor = AIOImageProcessor()
    first = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=3)(examples)
    again = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=3)(examples)
    other = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=4)(examples)
    assert first["pixel_values"].shape == (6, 3, 256, 128) and first["teacher_embeds"].shape == (6, 32)
    assert torch.allclose(first["teacher_embeds"], pooled_teacher(first["pixel_values"]))
    assert torch.equal(first["pixel_values"], again["pixel_values"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    with pytest.raises(ValueError, match="instances_per_identity"):
        TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=1)


def test_mixup_blends_some_crops_with_others_and_the_teacher_embeds_the_blends(photo_items):
    examples = distillation_examples(photo_items)
    processor = AIOImageProcessor()
    plain = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=3)(examples)
    mixed = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=3, mixup=1.0)(examples)
    again = TrunkDistillationCollator(processor, pooled_teacher, instances_per_identity=2, seed=3, mixup=1.0)(examples)
    assert torch.equal(mixed["pixel_values"], again["pixel_values"])
    assert not torch.equal(mixed["pixel_values"], plain["pixel_values"])
    assert torch.allclose(mixed["teacher_embeds"], pooled_teacher(mixed["pixel_values"]))
    with pytest.raises(ValueError, match="mixup"):
        TrunkDistillationCollator(processor, pooled_teacher, mixup=1.5)


def test_mix_pixels_is_a_convex_blend_with_a_batch_partner_and_leaves_unchosen_images_alone():
    pixels = torch.arange(4.0)[:, None, None, None].expand(4, 3, 2, 2).clone()
    untouched = mix_pixels(pixels, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, pixels)
    blended = mix_pixels(pixels, 1.0, torch.Generator().manual_seed(0))
    assert blended.shape == pixels.shape
    assert (blended >= 0).all() and (blended <= 3).all()  # between two of the batch's images, pixel by pixel
    assert not torch.equal(blended, pixels)


def test_relation_loss_vanishes_when_the_teacher_ranks_like_the_student():
    model = with_shipped_trunks(AIOModel(osnet_config())).eval()
    student = TrunkDistillationModel(model.embeddings.image_backbone, teacher_dim=256).eval()
    pixels = torch.randn(4, 3, 256, 128)
    with torch.no_grad():
        own = student(pixels).embeds
        same = student(pixels, teacher_embeds=own)
        shuffled = student(pixels, teacher_embeds=own.roll(1, dims=0))
    assert same.relation_loss.item() < 1e-5 < shuffled.relation_loss.item()
    with pytest.raises(ValueError, match="teacher_embeds"):
        student(pixels, teacher_embeds=own[:3])


def test_supervised_term_adds_a_contrastive_loss_over_the_batch_identities():
    model = with_shipped_trunks(AIOModel(osnet_config())).eval()
    trunk = model.embeddings.image_backbone
    pixels, labels = torch.randn(6, 3, 256, 128), torch.tensor([0, 0, 1, 1, 2, 2])
    teacher = torch.randn(6, 256)
    plain = TrunkDistillationModel(trunk, teacher_dim=256).eval()
    supervised = TrunkDistillationModel(trunk, teacher_dim=256, supervised_weight=0.5).eval()
    supervised.to_teacher.load_state_dict(plain.to_teacher.state_dict())
    with torch.no_grad():
        without, with_labels = plain(pixels, teacher, labels), supervised(pixels, teacher, labels)
    assert without.supervised_loss is None
    # the third loss, by hand: each embedding's softmax over the other five, mean log-probability of its partner
    embeds = without.embeds
    logits = (embeds @ embeds.T / 0.05).masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    partner = torch.tensor([1, 0, 3, 2, 5, 4])
    expected = -torch.log_softmax(logits, dim=1)[torch.arange(6), partner].mean()
    torch.testing.assert_close(with_labels.supervised_loss, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_labels.loss, without.loss + 0.5 * expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        supervised(pixels, teacher)
    with pytest.raises(ValueError, match="labels"):
        supervised(pixels, teacher, labels[:4])


def test_collator_labels_each_photo_with_its_identity_in_the_batch(photo_items):
    examples = distillation_examples(photo_items)
    batch = TrunkDistillationCollator(AIOImageProcessor(), pooled_teacher, instances_per_identity=2, seed=3)(examples)
    assert batch["labels"].tolist() == [0, 0, 1, 1, 2, 2]


def test_supervised_distillation_trains_and_refuses_mixed_identities(photo_items, tmp_path):
    torch.manual_seed(0)
    trunk = with_shipped_trunks(AIOModel(osnet_config())).embeddings.image_backbone
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    log = distill_trunk(trunk, AIOImageProcessor(), pooled_teacher, distillation_examples(photo_items), tmp_path / "s",
                        steps=2, identities_per_batch=3, instances_per_identity=2, seed=0, warmup_steps=1,
                        supervised_weight=1.0)
    assert log and any(not torch.equal(v, before[k]) for k, v in trunk.state_dict().items())
    with pytest.raises(ValueError, match="mixup"):
        distill_trunk(trunk, AIOImageProcessor(), pooled_teacher, distillation_examples(photo_items), tmp_path / "m",
                      steps=1, identities_per_batch=3, mixup=0.5, supervised_weight=1.0)


def test_distillation_lowers_the_loss_and_moves_only_the_shared_trunk(photo_items, tmp_path):
    torch.manual_seed(0)
    model = with_shipped_trunks(AIOModel(osnet_config()))
    processor = AIOImageProcessor()
    examples = distillation_examples(photo_items)
    trunk = model.embeddings.image_backbone
    sketch_before = {k: v.clone() for k, v in model.embeddings.modality_backbones["sketch"].state_dict().items()}
    pixels = processor([p for e in examples for p in e["images"]], modality="rgb")["pixel_values"]
    targets = pooled_teacher(pixels)

    def relation_loss() -> float:
        with torch.no_grad():
            return TrunkDistillationModel(trunk, 32).eval()(pixels, targets).relation_loss.item()

    start = relation_loss()
    log = distill_trunk(trunk, processor, pooled_teacher, examples, tmp_path / "distil", steps=30,
                        learning_rate=3e-4, identities_per_batch=3, instances_per_identity=2, seed=0, warmup_steps=1)
    assert relation_loss() < start and log and log[-1]["step"] == 30
    assert not trunk.training and not any(p.requires_grad for p in trunk.parameters())
    for name, value in model.embeddings.modality_backbones["sketch"].state_dict().items():
        assert torch.equal(value, sketch_before[name]), name
    with pytest.raises(ValueError, match="at least 16 identities"):
        distill_trunk(trunk, processor, pooled_teacher, examples, tmp_path / "x", steps=1)


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_batchnorm_statistics_move_only_when_asked(photo_items, tmp_path, train_batchnorm):
    torch.manual_seed(0)
    trunk = with_shipped_trunks(AIOModel(osnet_config())).embeddings.image_backbone
    stats = {k: v.clone() for k, v in trunk.state_dict().items() if k.endswith("running_mean")}
    distill_trunk(trunk, AIOImageProcessor(), pooled_teacher, distillation_examples(photo_items), tmp_path / "d",
                  steps=2, identities_per_batch=3, instances_per_identity=2, seed=0, warmup_steps=1,
                  train_batchnorm=train_batchnorm)
    moved = [k for k, v in trunk.state_dict().items() if k in stats and not torch.equal(v, stats[k])]
    assert bool(moved) == train_batchnorm and (not moved or len(moved) == len(stats))
    assert not trunk.training  # frozen after the stage either way


def test_cosine_schedule_decays_to_zero_after_the_warmup_and_constant_holds():
    cosine = [learning_rate_factor(step, 100, 10, "cosine") for step in range(101)]
    constant = [learning_rate_factor(step, 100, 10, "constant") for step in range(101)]
    assert cosine[0] == constant[0] == pytest.approx(0.1) and constant[10:] == [1.0] * 91
    assert cosine[50] == pytest.approx(0.5) and cosine[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:]))
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor(0, 100, 10, "linear")


def test_bf16_distillation_runs_only_the_trunk_in_bf16_and_hands_it_back_fp32_contiguous(photo_items, tmp_path,
                                                                                          monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trunk = with_shipped_trunks(AIOModel(osnet_config())).embeddings.image_backbone
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    trunk_dtypes, loss_inputs = [], []
    trunk.register_forward_hook(lambda module, args, output: trunk_dtypes.append(output[1].dtype))
    losses = TrunkDistillationModel.losses

    def spy(self, student, teacher_embeds, labels=None):
        loss_inputs.append((student.dtype, torch.is_autocast_enabled("cpu")))
        return losses(self, student, teacher_embeds, labels)

    monkeypatch.setattr(TrunkDistillationModel, "losses", spy)
    log = distill_trunk(trunk, AIOImageProcessor(), pooled_teacher, distillation_examples(photo_items), tmp_path / "d",
                        steps=2, learning_rate=1e-3, identities_per_batch=3, instances_per_identity=2, seed=0,
                        warmup_steps=1, schedule="cosine", bf16=True)
    assert log[-1]["step"] == 2 and set(trunk_dtypes) == {torch.bfloat16}
    assert set(loss_inputs) == {(torch.float32, False)}
    state = trunk.state_dict()
    assert all(v.dtype == before[k].dtype and v.is_contiguous() for k, v in state.items())
    assert any(not torch.equal(v, before[k]) for k, v in state.items() if k.endswith("weight"))
    save_file(state, str(tmp_path / "trunk.safetensors"))  # refuses non-contiguous tensors
    with pytest.raises(ValueError, match="schedule"):
        distill_trunk(trunk, AIOImageProcessor(), pooled_teacher, [], tmp_path / "x", steps=1, schedule="linear")


def test_a_distilled_shared_trunk_ships_with_the_trained_weights():
    plain_model = AIOForReIdentification(osnet_config(num_identities=3))
    plain = trainable_state_dict(plain_model)
    assert not any(k.startswith("embeddings.image_backbone.") for k in plain)
    assert plain.keys() == trainable_state_dict(plain_model, trained_parameters(plain_model)).keys()
    distilled_model = AIOForReIdentification(osnet_config(num_identities=3))
    distilled = trainable_state_dict(distilled_model, trained_parameters(distilled_model, shared_trunk=True))
    trunk_keys = [k for k in distilled if k.startswith("embeddings.image_backbone.")]
    assert len(trunk_keys) == len(distilled_model.aio.embeddings.image_backbone.state_dict())
    assert "embeddings.image_backbone.fc.1.running_var" in trunk_keys


@pytest.mark.slow
@requires_shared_data
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_teacher_embeds_normalised_pixels(tmp_path):
    processor = AIOImageProcessor()
    teacher = openvino_reid_embedder(TEACHER_XML, processor, threads=2)
    photos = [striped(0, 1), striped(2, 3)]
    embeds = teacher(processor(photos, modality="rgb", return_tensors="pt")["pixel_values"])
    assert embeds.shape == (2, 256) and torch.isfinite(embeds).all()
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        openvino_reid_embedder(tmp_path / "missing.xml", processor)


@pytest.mark.slow
@requires_shared_data
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_train_script_distils_the_shared_trunk_first_and_exports_it(tokenizer, tmp_path):
    """`scripts/train.py --distill-teacher 0277.xml` on a tiny OSNet-tokenizer checkpoint and a PKU-Sketch fixture."""
    import json
    import subprocess

    from safetensors.torch import load_file

    command = write_training_fixture(tmp_path, tokenizer, people=4, sketched=4) + [
        "--distill-teacher", str(TEACHER_XML), "--distill-steps", "2", "--distill-learning-rate", "0.05",
        "--distill-batchnorm", "train", "--distill-schedule", "cosine", "--distill-bf16",
        "--distill-mixup", "0.5", "--sketch-holdout", "0", "--align-text-steps", "0"]
    init = AIOModel.from_pretrained(tmp_path / "init")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["trunk_distillation"]["teacher"] == TEACHER_XML.stem
    assert summary["trunk_distillation"]["steps"] == 2 and summary["trunk_distillation"]["identities"] == 4
    assert summary["trunk_distillation"]["batchnorm"] == "train"
    assert summary["trunk_distillation"]["schedule"] == "cosine" and summary["trunk_distillation"]["bf16"] is True
    assert summary["trunk_distillation"]["mixup"] == 0.5 and summary["trunk_distillation"]["supervised"] == 0.0
    # --distill-supervised reaches the stage: with mixup it is refused there, before any step
    refused = subprocess.run(command + ["--distill-supervised", "1", "--output-dir", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "`supervised_weight` needs unblended crops" in refused.stderr
    shapes = json.loads((tmp_path / "out" / "aio-reid-trainable.json").read_text())
    assert "embeddings.image_backbone" in shapes["trained_modules"]  # the export says it holds the distilled trunk
    exported = load_file(str(tmp_path / "out" / "aio-reid-trainable.safetensors"))
    shipped = init.embeddings.image_backbone.state_dict()
    moved = [k for k, v in shipped.items() if k.endswith("weight") and
             not torch.equal(exported[f"embeddings.image_backbone.{k}"], v.half())]
    assert moved, "the exported shared trunk is still the pretrained one"


def test_evaluate_embeds_with_a_checkpoints_shared_trunk_alone(tmp_path):
    model = with_shipped_trunks(AIOModel(osnet_config(num_identities=0))).eval()
    model.save_pretrained(tmp_path / "ckpt")
    embedder = Embedder(f"osnet-trunk:{tmp_path / 'ckpt'}", 4, tmp_path / "cache")
    photos = [striped(0, 1), striped(1, 2)]
    pixels = embedder.image_processor(photos, modality="rgb", return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert torch.allclose(embedder.baseline(pixels), model.embeddings.image_backbone(pixels)[1], atol=1e-5)
    wide = AIOModel(osnet_config(num_identities=0, osnet_width=2)).eval()  # a trunk wider than 0267's is read as such
    wide.save_pretrained(tmp_path / "wide")
    embedder = Embedder(f"osnet-trunk:{tmp_path / 'wide'}", 4, tmp_path / "cache")
    with torch.no_grad():
        assert torch.allclose(embedder.baseline(pixels), wide.embeddings.image_backbone(pixels)[1], atol=1e-5)
    AIOModel(osnet_config(num_identities=0, image_tokenizer="ibn_stem", image_size=(32, 16), patch_size=8,
                          osnet_modality_trunks=[], osnet_embedding_skip=False)).save_pretrained(tmp_path / "stem")
    with pytest.raises(SystemExit, match="no shared OSNet trunk"):
        Embedder(f"osnet-trunk:{tmp_path / 'stem'}", 4, tmp_path / "cache")


def test_model_card_reproduces_the_distillation_settings_it_was_trained_with():
    from modeling_aio.evaluation import card_training as card
    shape = {}
    run = {"teacher": "person-reidentification-retail-0277", "teacher_xml": "t.xml", "steps": 1500, "batchnorm": "frozen", "schedule": "cosine", "bf16": True,
           "mixup": 0.5, "photos": 10, "identities": 5, "first_loss": 1.0, "last_loss": 0.2, "seconds": 60}
    flags = card.distill_flags(shape, {"trunk_distillation": run})
    assert flags.endswith("--distill-teacher t.xml --distill-steps 1500 --distill-schedule cosine --distill-bf16 "
                          "--distill-mixup 0.5")
    supervised = {**run, "mixup": 0.0, "supervised": 1.0}
    assert card.distill_flags(shape, {"trunk_distillation": supervised}).endswith("--distill-bf16 --distill-supervised 1")
    assert ("bf16 autocast, plus a supervised contrastive loss on the batch's identity labels (weight 1) on 10 photos"
            in card.distillation_line(shape, {"trunk_distillation": supervised}))
    plain = card.distill_flags(shape, {"trunk_distillation": {**run, "schedule": "constant", "bf16": False,
                                                               "mixup": 0.0}})
    assert plain.endswith("--distill-steps 1500")
    assert ("1500 steps, learning rate decayed to zero, bf16 autocast, 50% of crops blended with another (mixup, "
            "seen by both networks) on 10 photos") in card.distillation_line(shape, {"trunk_distillation": run})
    assert card.distill_flags(shape, {}) == card.distillation_line(shape, {"trunk_distillation": None}) == ""


def test_model_card_says_which_gallery_the_sketch_scale_was_chosen_against():
    from modeling_aio.evaluation import card_training as card
    chosen = {"modality": "sketch", "scale": 3.49, "rank1": 0.95, "rank1_unscaled": 0.75, "queries": 20,
              "photos": 1025, "identities": 20, "gallery_identities": 320}
    assert "1025 photos: theirs and those of 300 other people no head trained on" in card.skip_scale_line(
        {"skip_scale": chosen})
    older = {k: v for k, v in chosen.items() if k != "gallery_identities"} | {"photos": 40}
    assert "against their 40 photos" in card.skip_scale_line({"skip_scale": older})


def test_model_card_names_a_trunk_wider_than_0267():
    from modeling_aio.evaluation import card_training as card
    assert "2x as wide as 0267** (OSNet x1" in card.osnet_width_note({"osnet_width": 2})
    assert card.osnet_width_note({"osnet_width": 1}) == card.osnet_width_note({}) == ""
