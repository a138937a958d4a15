"""The Trainer run: `AIOTrainer` (P x K sampler, one logged loss per head), its callbacks, what trains
(`set_trainable`) and the trained weights that ship (`trainable_state_dict`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import Trainer, TrainerCallback

from .data import IdentityBalancedSampler, MultimodalReIdDataset


class AIOTrainer(Trainer):
    """Trainer with the identity-balanced sampler and one logged loss per head (every `*_loss` field of the
    model's output)."""

    def __init__(self, *args, sampler_kwargs: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler_kwargs = sampler_kwargs or {}
        self._head_sums: dict[str, float] = {}
        self._head_counts: dict[str, int] = {}

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return IdentityBalancedSampler(dataset.labels, dataset.has_caption, seed=self.args.seed, **self.sampler_kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        for name, value in outputs.items():  # every `*_loss` the model returns (ModelOutput skips None)
            if name.endswith("_loss") and value is not None:
                self._head_sums[name] = self._head_sums.get(name, 0.0) + float(value.detach())
                self._head_counts[name] = self._head_counts.get(name, 0) + 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            for name, total in self._head_sums.items():
                logs[name] = round(total / max(1, self._head_counts[name]), 4)
            self._head_sums, self._head_counts = {}, {}
        super().log(logs, *args, **kwargs)


class EpochAndScheduleCallback(TrainerCallback):
    """Keeps the dataset's augmentation epoch in step with training, and switches from synthetic to real sketches
    after `real_after` of the run (progressive training: synthetic modalities first, then real pairs)."""

    def __init__(self, dataset: MultimodalReIdDataset, real_after: float):
        self.dataset, self.real_after = dataset, real_after

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)

    def on_step_begin(self, args, state, control, **kwargs):
        progress = state.global_step / max(1, state.max_steps)
        self.dataset.use_real_sketches = progress >= self.real_after


class StopAfterStepCallback(TrainerCallback):
    """Ends a run at `step` while keeping the learning-rate schedule of the full `max_steps`, so two runs compared
    at equal steps (e.g. one per frozen encoder) also had equal learning rates on the way."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True


#: Parameters that a stage of their own sets, shipped whenever the model has them: the skip weights (chosen after
#: training) and the per-modality trunks (bound before it).
STAGE_PARAMETERS: tuple[str, ...] = ("aio.skip_log_weights", "aio.skip_log_scales", "aio.embeddings.modality_backbones.",
                                     "aio.text_alignment_image.", "aio.text_alignment_text.")
#: The shared OSNet trunk: `scripts/train.py` ships it always (distilled, or a pretrained trunk other than 0267).
SHARED_TRUNK = "aio.embeddings.image_backbone."


def trained_parameters(model, shared_trunk: bool = False) -> list[str]:
    """The explicit list of the parameters a run trained: everything that trains now, the `STAGE_PARAMETERS`, and
    the shared trunk when `shared_trunk`. What `trainable_state_dict` exports."""
    return sorted(name for name, parameter in model.named_parameters()
                  if parameter.requires_grad or name.startswith(STAGE_PARAMETERS)
                  or (shared_trunk and name.startswith(SHARED_TRUNK)))


def trainable_state_dict(model, trained: Iterable[str] | None = None,
                         include_identity_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The weights to ship: the `trained` parameters (default: `trained_parameters(model)`) with their modules'
    buffers, never the frozen encoder and (by default) not the dataset-specific identity classifier; keys are those
    of `AIOModel` (prefix `aio.` removed)."""
    names = set(trained_parameters(model) if trained is None else trained)
    modules = {n.rsplit(".", 1)[0] for n in names}
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("aio.encoder."):
            continue
        if not include_identity_classifier and name.startswith("identity_classifier."):
            continue
        if name in names or name.rsplit(".", 1)[0] in modules:
            state[name[len("aio."):] if name.startswith("aio.") else name] = tensor.detach().clone()
    return state


def set_trainable(model, mode: str, freeze_text_tokenizer: bool = True) -> None:
    """`all`: tokenizers, embeddings, projection and heads; `heads`: only the projection and heads (a light
    adaptation to a user's data that leaves the tokenizers as they are). The encoder is always frozen, and by
    default so is the text tokenizer: it starts as MiniLM's own embedding layer, which a few hundred captioned
    identities would only pull away from what the frozen layers expect. Per-modality OSNet trunks are bound in a
    stage of their own (`trunk_binding`) and stay frozen here, as do the text-alignment heads (`text_alignment`)."""
    if mode not in ("all", "heads"):
        raise ValueError(f"--train must be 'all' or 'heads', got {mode!r}.")
    frozen_backbone = not model.config.train_image_backbone
    for name, parameter in model.named_parameters():
        if name.startswith(("aio.encoder.", "aio.embeddings.modality_backbones.", "aio.text_alignment_")) or (
                frozen_backbone and name.startswith("aio.embeddings.image_backbone.")):
            parameter.requires_grad_(False)
        elif mode == "heads":
            parameter.requires_grad_(not name.startswith("aio.embeddings."))
        else:
            parameter.requires_grad_(True)
    if freeze_text_tokenizer:
        model.aio.embeddings.text_tokenizer.requires_grad_(False)
    for name in ("skip_log_weights", "skip_log_scales"):  # chosen after training, on identities it never saw
        if hasattr(model.aio, name):
            getattr(model.aio, name).requires_grad_(False)
    if getattr(model, "bnneck", None) is not None:
        model.bnneck.bias.requires_grad_(False)


__all__ = ["AIOTrainer", "EpochAndScheduleCallback", "StopAfterStepCallback", "trained_parameters", "trainable_state_dict",
           "set_trainable", "STAGE_PARAMETERS", "SHARED_TRUNK"]
