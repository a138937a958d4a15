"""Training path on tiny configs: synthesis transforms, sampler, collator, loss goes down, heads-only mode, resume."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from modeling_aio import AIOForReIdentification, AIOImageProcessor, AIOModel, AIOProcessor
from modeling_aio.training.calibration import align_text_skip
from modeling_aio.training.data import (
    AIOTrainingCollator, IdentityBalancedSampler, MultimodalReIdDataset, TrainingItem, hold_out_captions,
)
from modeling_aio.training.trainer import AIOTrainer, StopAfterStepCallback, set_trainable, trainable_state_dict
from processing_aio.synthesis import channel_augment_ir, grayscale_ir, random_sketch, xdog_sketch

from conftest import random_image, tiny_config


@pytest.mark.parametrize("transform", [channel_augment_ir, random_sketch])
def test_random_synthesis_is_deterministic_under_a_seed_and_keeps_size(transform):
    image = random_image(3, (40, 90))
    a, b = transform(image, 7), transform(image, random.Random(7))
    assert a.size == image.size and np.array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(transform(image, s))) for s in range(8, 12))


@pytest.mark.parametrize("transform", [grayscale_ir, xdog_sketch])
def test_fixed_synthesis_keeps_size_and_drops_colour(transform):
    image = random_image(4, (40, 90))
    out = np.asarray(transform(image))
    assert out.shape == (90, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_sampler_gives_p_identities_times_k_from_one_pool():
    labels = [i // 3 for i in range(30)]
    pools = [label < 4 for label in labels]
    sampler = IdentityBalancedSampler(labels, pools, identities_per_batch=2, instances_per_identity=2, seed=1)
    order = list(sampler)
    assert len(order) == len(sampler) and len(order) % 4 == 0
    for start in range(0, len(order), 4):
        batch = order[start:start + 4]
        batch_labels = [labels[i] for i in batch]
        assert sorted(set(batch_labels)) and all(batch_labels.count(x) == 2 for x in set(batch_labels))
        assert len({pools[i] for i in batch}) == 1
    assert order == list(IdentityBalancedSampler(labels, pools, 2, 2, seed=1))


@pytest.fixture
def training_items(tmp_path):
    items = []
    for person in range(4):
        for shot in range(2):
            path = tmp_path / f"{person}_{shot}.jpg"
            random_image(person * 10 + shot, (20, 40)).save(path)
            captions = ["a man in red shirt and black pants", "woman with long hair and a blue bag"] if person < 2 else []
            items.append(TrainingItem(str(path), person, captions[person % 2:person % 2 + 1] if captions else []))
    return items


def test_collator_masks_attribute_words(processor, training_items, config):
    collator = AIOTrainingCollator(processor, config.attribute_words)
    dataset = MultimodalReIdDataset(training_items)
    batch = collator([dataset[0], dataset[1], dataset[2]])
    assert batch["pixel_values_sketch"].shape == (3, 3, 32, 16) and "input_ids" in batch
    masked = batch["attribute_labels"] >= 0
    assert masked.any()
    assert (batch["masked_input_ids"][masked] == processor.tokenizer.mask_token_id).all()
    words = [config.attribute_words[i] for i in batch["attribute_labels"][masked].tolist()]
    assert set(words) <= {"man", "red", "shirt", "black", "pants", "woman", "long", "hair", "blue", "bag"}
    assert not set(words) & {"a", "in", "and", "with"}
    no_text = collator([dataset[4], dataset[5]])
    assert "input_ids" not in no_text and no_text["labels"].tolist() == [2, 2]


def make_trainer(model, processor, items, out_dir, max_steps, save_steps=100):
    args = TrainingArguments(output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=3e-3, logging_steps=1, save_strategy="steps", save_steps=save_steps,
                             seed=0, data_seed=0, report_to=[], use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0, remove_unused_columns=False, lr_scheduler_type="constant")
    return AIOTrainer(model=model, args=args, train_dataset=MultimodalReIdDataset(items), processing_class=None,
                      data_collator=AIOTrainingCollator(processor, model.config.attribute_words),
                      sampler_kwargs={"identities_per_batch": 2, "instances_per_identity": 2})


def tiny_reid(config, seed=0):
    torch.manual_seed(seed)
    model = AIOForReIdentification(config)
    set_trainable(model, "all", freeze_text_tokenizer=False)
    return model


def test_a_few_steps_lower_the_loss_and_log_each_head(config, processor, training_items, tmp_path):
    config.num_identities = 4
    model = tiny_reid(config)
    trainer = make_trainer(model, processor, training_items, tmp_path, max_steps=30)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    logged = set().union(*[entry.keys() for entry in trainer.state.log_history])
    assert {"identity_loss", "binding_loss"} <= logged


def test_train_heads_leaves_tokenizers_unchanged(config, processor, training_items, tmp_path):
    config.num_identities = 4
    model = AIOForReIdentification(config)
    set_trainable(model, "heads")
    tokenizers = {k: v.clone() for k, v in model.aio.embeddings.state_dict().items()}
    classifier = model.identity_classifier.weight.detach().clone()
    make_trainer(model, processor, training_items, tmp_path, max_steps=3).train()
    for key, value in model.aio.embeddings.state_dict().items():
        assert torch.equal(value, tokenizers[key]), key
    assert not torch.equal(classifier, model.identity_classifier.weight)


def test_resume_continues_from_the_same_step(config, processor, training_items, tmp_path):
    config.num_identities = 4
    straight = tiny_reid(config)
    straight_trainer = make_trainer(straight, processor, training_items, tmp_path / "straight", max_steps=6)
    straight_trainer.train()
    interrupted = tiny_reid(config)
    make_trainer(interrupted, processor, training_items, tmp_path / "resumed", max_steps=3, save_steps=3).train()
    resumed = tiny_reid(config, seed=123)  # different init: everything must come from the checkpoint
    trainer = make_trainer(resumed, processor, training_items, tmp_path / "resumed", max_steps=6, save_steps=3)
    trainer.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    assert trainer.state.global_step == 6
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    straight_losses = {e["step"]: e["loss"] for e in straight_trainer.state.log_history if "loss" in e}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # the resumed steps see the same batches and give the same losses
        assert losses[step] == pytest.approx(straight_losses[step], rel=1e-4), step
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_exported_weights_merge_into_an_aio_model(config):
    config.num_identities = 4
    model = tiny_reid(config)
    state = trainable_state_dict(model)
    assert not any(k.startswith("encoder.") or k.startswith("identity_classifier") for k in state)
    base = AIOModel(config)
    missing, unexpected = base.load_state_dict(state, strict=False)
    assert all(k.startswith("encoder.") for k in missing)
    assert set(unexpected) <= {k for k in state if k.startswith(("attribute_head", "bnneck"))}


@pytest.mark.slow
def test_accelerate_launch_trains_data_parallel_with_two_cpu_processes(config, processor, tmp_path):
    """`accelerate launch --num_processes 2 --cpu scripts/train.py` on a tiny checkpoint and a PKU-Sketch fixture."""
    import json
    import subprocess
    import sys

    from conftest import REPO, free_port

    config.num_identities = 0
    AIOModel(config).save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    for pid in range(1, 7):
        for camera in ("04", "06"):
            path = tmp_path / "pku" / "photo" / f"{pid}_{camera}_1.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            random_image(pid * 7 + int(camera)).save(path)
        (tmp_path / "pku" / "sketch").mkdir(exist_ok=True)
        random_image(pid).save(tmp_path / "pku" / "sketch" / f"{pid}.jpg")
    # `--multi_gpu` selects the torchrun launcher; with no GPU, Trainer runs each process on the CPU with gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(free_port()), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(REPO / "scripts" / "train.py"),
               "--init", str(tmp_path / "init"), "--output-dir", str(tmp_path / "out"), "--dataset", "pku-sketch",
               "--root", str(tmp_path / "pku"), "--max-steps", "3", "--identities-per-batch", "2",
               "--instances-per-identity", "2", "--save-steps", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert (tmp_path / "out" / "aio-reid-trainable.safetensors").exists()
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").exists()


@pytest.mark.parametrize("companions", [(), ("ir", "sketch")])
def test_text_alignment_fits_the_text_skip_then_the_fusion_weights(tokenizer, captioned_items, companions):
    torch.manual_seed(0)
    # Fusion weights matter where a composed query has two skips: the OSNet tokenizer's image skip and the text one.
    osnet = dict(image_tokenizer="osnet", image_size=(256, 128), patch_size=16, embedding_size=256,
                 osnet_embedding_skip=True) if companions else {}
    model = AIOModel(tiny_config(text_embedding_skip=True, **osnet))
    height, width = model.config.image_size
    processor = AIOProcessor(AIOImageProcessor(size={"height": height, "width": width}), tokenizer, max_text_length=16)
    model.skip_log_weights.requires_grad_(False)  # as `set_trainable` leaves it for the Trainer stage
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = align_text_skip(model, processor, captioned_items, steps=40, batch_size=8, learning_rate=1e-2,
                              companions=companions, fusion_fraction=0.5, log_every=10)
    assert not model.skip_log_weights.requires_grad
    text_stage = [h for h in history if h["stage"] == "text"]
    assert text_stage[-1]["loss"] < text_stage[0]["loss"]
    assert set(text_stage[0]) == {"stage", "step", "loss", "text", *(f"text+{m}" for m in companions)}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    fitted = {"text_skip.weight", "text_skip.bias"} | ({"skip_log_weights"} if companions else set())
    assert {"text_skip.weight", "text_skip.bias"} <= changed <= fitted  # the chosen weights may be the initial ones
    if companions:  # the weights are chosen on the identities held back from the text skip's fit
        fusion = [h for h in history if h["stage"] == "fusion"]
        assert [h["kind"] for h in fusion] == ["text+ir", "text+sketch"]
        assert all(0.0 <= h["rank1"] <= 1.0 and h["rank1"] >= h["rank1_equal_weights"] for h in fusion)
        grid = {round(math.exp(x / 4), 4) for x in range(-12, 5)}
        assert all(h["text_over_image_weight"] in grid for h in fusion)
        assert model.skip_log_weights[3] == 0 and model.skip_log_weights[0] == 0  # text is the reference; rgb unused
        for h, image in zip(fusion, (1, 2)):
            assert math.isclose(math.exp(-float(model.skip_log_weights[image])), h["text_over_image_weight"], rel_tol=1e-3)


def test_fusion_weights_are_left_alone_without_an_image_skip(tokenizer, captioned_items):
    model = AIOModel(tiny_config(text_embedding_skip=True))  # conv-stem images: text is a composed query's only skip
    height, width = model.config.image_size
    processor = AIOProcessor(AIOImageProcessor(size={"height": height, "width": width}), tokenizer, max_text_length=16)
    history = align_text_skip(model, processor, captioned_items, steps=2, batch_size=8, companions=("ir",),
                              fusion_fraction=0.5)
    assert {h["stage"] for h in history} == {"text"} and not model.skip_log_weights.any()


def test_text_alignment_needs_a_text_skip(config, processor, training_items):
    with pytest.raises(ValueError, match="text_embedding_skip"):
        align_text_skip(AIOModel(config), processor, training_items, steps=1)


def test_stop_after_ends_early_and_saves_that_step(config, processor, training_items, tmp_path):
    config.num_identities = 4
    trainer = make_trainer(tiny_reid(config), processor, training_items, tmp_path, max_steps=8, save_steps=100)
    trainer.add_callback(StopAfterStepCallback(3))
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.state.max_steps == 8
    assert (tmp_path / "checkpoint-3").is_dir()


def test_hold_out_captions_keeps_photos_and_returns_the_held_identities(captioned_items):
    kept, held = hold_out_captions(captioned_items, 0.25, seed=0)
    held_ids = {item.label for item in held}
    assert len(held_ids) == 2 and len(held) == 4  # 2 of 8 identities, both of their photos
    assert [i.image for i in kept] == [i.image for i in captioned_items]  # every photo still trains the image paths
    assert all(not i.captions for i in kept if i.label in held_ids)
    assert all(i.captions for i in kept if i.label not in held_ids)
    assert hold_out_captions(captioned_items, 0.25, seed=0)[1] == held  # seeded


def test_text_alignment_refuses_fusion_identities_it_fits_text_on(processor, captioned_items):
    model = AIOModel(tiny_config(text_embedding_skip=True))
    with pytest.raises(ValueError, match="fusion_items"):
        align_text_skip(model, processor, captioned_items, steps=1, fusion_items=captioned_items[:2])
