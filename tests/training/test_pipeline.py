"""The training pipeline end to end: scripts/train.py under accelerate with two CPU processes."""

from __future__ import annotations

import pytest

from modeling_aio import AIOModel

from conftest import random_image


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
    assert summary["processes"] == 2 and summary["steps"] == summary["max_steps"] == 3
    assert summary["pretrained_trunk"] is None  # a conv-stem model has no OSNet trunk to trace
    assert (tmp_path / "out" / "aio-reid-trainable.safetensors").exists()
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").exists()
