"""The Trainer run (modeling_aio.training.trainer) on tiny configs: loss goes down, heads-only mode, resume, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import TrainingArguments

from modeling_aio import AIOForReIdentification, AIOModel
from modeling_aio.training.data import AIOTrainingCollator, MultimodalReIdDataset
from modeling_aio.training.trainer import AIOTrainer, StopAfterStepCallback, set_trainable, trainable_state_dict


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


def test_stop_after_ends_early_and_saves_that_step(config, processor, training_items, tmp_path):
    config.num_identities = 4
    trainer = make_trainer(tiny_reid(config), processor, training_items, tmp_path, max_steps=8, save_steps=100)
    trainer.add_callback(StopAfterStepCallback(3))
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.state.max_steps == 8
    assert (tmp_path / "checkpoint-3").is_dir()
