"""The bad-input sweep, checkpoints: folders a user may point `from_pretrained`, `AIOSearcher.from_pretrained` or
`aio-reid --model` at. Every case is an error naming the folder or file and what is wrong (`test_error_*`) or a
checked recovery (`test_recovery_*`); none unpickles anything and none loads a model with random or cast parts."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_aio import AIOModel
from modeling_aio.search import AIOSearcher


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def edit_weights(folder: Path, change) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    save_file(change(weights), str(folder / "model.safetensors"))


class Exploding:
    """Unpickling this would write a file: the proof that a pickle was (or was not) loaded."""

    def __reduce__(self):
        return (Path.touch, (Path("/tmp/aio-reid-pickle-was-loaded"),))


def write_pickle(folder: Path, name: str) -> None:
    (folder / "model.safetensors").unlink()
    (folder / name).write_bytes(pickle.dumps({"weights": Exploding()}))


DAMAGES = {
    "only config.json": lambda f: (f / "model.safetensors").unlink(),
    "pickle pytorch_model.bin instead of safetensors": lambda f: write_pickle(f, "pytorch_model.bin"),
    "pickle model.pt instead of safetensors": lambda f: write_pickle(f, "model.pt"),
    "0-byte model.safetensors": lambda f: (f / "model.safetensors").write_bytes(b""),
    "truncated model.safetensors": lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:-100]),
    "random bytes as model.safetensors": lambda f: (f / "model.safetensors").write_bytes(
        np.random.default_rng(0).bytes(5000)),
    "weights of another model": lambda f: save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 4)},
                                                    str(f / "model.safetensors")),
    "no encoder weights": lambda f: edit_weights(f, lambda w: {k: v for k, v in w.items()
                                                              if not k.startswith("encoder.")}),
    "no projection.weight": lambda f: edit_weights(f, lambda w: {k: v for k, v in w.items()
                                                                if k != "projection.weight"}),
    "an unknown extra weight": lambda f: edit_weights(f, lambda w: {**w, "surprise.weight": torch.zeros(2)}),
    "a weight of the wrong shape": lambda f: edit_weights(f, lambda w: {**w, "projection.weight":
                                                                       torch.zeros(3, 3)}),
    "int32 weights": lambda f: edit_weights(f, lambda w: {k: v.to(torch.int32) if k == "projection.weight" else v
                                                         for k, v in w.items()}),
    "no config.json": lambda f: (f / "config.json").unlink(),
    "config.json not JSON": lambda f: (f / "config.json").write_text("{model_type: aio"),
    "0-byte config.json": lambda f: (f / "config.json").write_text(""),
    "config.json of another model type": lambda f: edit_config(f, model_type="bert"),
    "config.json without encoder_config": lambda f: edit_config(f, encoder_config=None),
    "config.json with the skip flags switched on": lambda f: edit_config(f, text_embedding_skip=True),
    "config.json with a negative size": lambda f: edit_config(f, embedding_size=-16),
}

MESSAGES = {
    "only config.json": r"has no model.safetensors; AIO loads safetensors checkpoints only",
    "pickle pytorch_model.bin instead of safetensors": r"found pickled weights \['pytorch_model.bin'\]",
    "pickle model.pt instead of safetensors": r"found pickled weights \['model.pt'\]",
    "0-byte model.safetensors": r"model.safetensors is not a complete safetensors file",
    "truncated model.safetensors": r"model.safetensors is not a complete safetensors file",
    "random bytes as model.safetensors": r"model.safetensors is not a complete safetensors file",
    "weights of another model": r"do not fit AIOModel: missing keys \d+",
    "no encoder weights": r"do not fit AIOModel: missing keys \d+ \(e.g. \['encoder\.",
    "no projection.weight": r"missing keys 1 \(e.g. \['projection.weight'\]\)",
    "an unknown extra weight": r"unexpected keys 1 \(e.g. \['surprise.weight'\]\)",
    "a weight of the wrong shape": r"weight shapes differ from what config.json builds",
    "int32 weights": r"holds non-float weights, e.g. projection.weight \(I32\)",
    "no config.json": r"config.json",
    "config.json not JSON": r"config.json is not valid JSON",
    "0-byte config.json": r"config.json is not valid JSON",
    "config.json of another model type": r"config.json is for model type 'bert', not an AIO checkpoint",
    "config.json without encoder_config": r"encoder_config missing",
    "config.json with the skip flags switched on": r"missing keys",
    "config.json with a negative size": r"embedding_size",
}


@pytest.fixture
def checkpoint(config, processor, tmp_path) -> Path:
    folder = tmp_path / "checkpoint"
    AIOModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_error_broken_checkpoint(checkpoint, damage):
    """error naming the folder or file and what is wrong, from AIOModel and from AIOSearcher (what the CLI loads)"""
    DAMAGES[damage](checkpoint)
    marker = Path("/tmp/aio-reid-pickle-was-loaded")
    marker.unlink(missing_ok=True)
    for load in (AIOModel.from_pretrained, AIOSearcher.from_pretrained):
        with pytest.raises((OSError, ValueError)) as caught:
            load(checkpoint)
        assert str(checkpoint) in str(caught.value), f"{load.__qualname__}: {caught.value}"
        assert __import__("re").search(MESSAGES[damage], str(caught.value)), f"{load.__qualname__}: {caught.value}"
    assert not marker.exists(), "a pickle was unpickled"


PLACES = {
    "a missing folder": (lambda f: f.parent / "nowhere", r"no folder .*nowhere"),
    "a file instead of a folder": (lambda f: f / "model.safetensors", r"pass a checkpoint folder"),
    "an empty folder": (lambda f: (f.parent / "empty").mkdir() or f.parent / "empty", r"empty has no model.safetensors"),
    "a Hub-style name while offline": (lambda f: "someone/not-cached-model", r"someone/not-cached-model"),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_error_checkpoint_place(checkpoint, place):
    """error naming the path or Hub name and what to pass instead"""
    where, message = PLACES[place]
    with pytest.raises((OSError, ValueError), match=message):
        AIOSearcher.from_pretrained(where(checkpoint))


def test_error_use_safetensors_false(checkpoint):
    """error: AIO loads safetensors checkpoints only"""
    with pytest.raises(ValueError, match="use_safetensors=False is not supported"):
        AIOModel.from_pretrained(checkpoint, use_safetensors=False)


PROCESSOR_DAMAGES = {
    "no processor_config.json": lambda f: (f / "processor_config.json").unlink(),
    "processor_config.json not JSON": lambda f: (f / "processor_config.json").write_text("{"),
    "no tokenizer vocabulary": lambda f: [p.unlink() for p in f.glob("vocab.txt")] + [
        p.unlink() for p in f.glob("tokenizer*.json")],
}


@pytest.mark.parametrize("damage", list(PROCESSOR_DAMAGES))
def test_error_broken_processor_files(checkpoint, damage):
    """error naming the checkpoint folder and the processor file"""
    PROCESSOR_DAMAGES[damage](checkpoint)
    with pytest.raises((OSError, ValueError)) as caught:
        AIOSearcher.from_pretrained(checkpoint)
    assert str(checkpoint) in str(caught.value), caught.value


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_recovery_half_precision_weights(checkpoint, config, dtype):
    """loaded (the shipped weights are fp16) and embedding like the float32 model"""
    edit_weights(checkpoint, lambda w: {k: v.to(dtype) if v.is_floating_point() else v for k, v in w.items()})
    model = AIOModel.from_pretrained(checkpoint).float().eval()
    reference = AIOModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    pixels = torch.randn(2, 3, *config.image_size)
    assert torch.allclose(model.get_features(pixel_values_rgb=pixels), reference.get_features(pixel_values_rgb=pixels),
                          atol=1e-5)
