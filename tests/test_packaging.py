"""The wheel as users install it: `pip install` of the built wheel (not editable) into a fresh virtual environment,
then, from a directory outside the repository, the packaged `evaluate` metric, the CLI and remote-code loading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = r"""
import sys
from pathlib import Path

import evaluate
import numpy as np
from transformers import AutoModel

import modeling_aio
from modeling_aio.evaluation import REID_METRIC_PATH

fresh = Path(sys.prefix).resolve()
assert Path(modeling_aio.__file__).resolve().is_relative_to(fresh), modeling_aio.__file__
assert Path(REID_METRIC_PATH).resolve().is_relative_to(fresh), REID_METRIC_PATH
reid = evaluate.load(REID_METRIC_PATH)
result = reid.compute(predictions=np.eye(2).tolist(), references=["a", "b"], gallery_features=np.eye(2),
                      gallery_ids=["a", "b"])
assert result["rank-1"] == 100.0, result
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
print("ok", type(model).__name__, result["rank-1"])
"""


@pytest.mark.slow
def test_the_installed_wheel_works_outside_the_repository(config, processor, tmp_path):
    from modeling_aio import AIOModel

    AIOModel(config).save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    source = tmp_path / "source"  # a copy: an in-tree build would leave build/ in the repository
    for package in ("aio_reid", "modeling_aio", "processing_aio"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("aio_reid-*.whl"))
    fresh = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    python = fresh / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment (no network here); the package itself only from the wheel.
    Path(purelib, "aio_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([python, "-c", SCRIPT, str(tmp_path / "ckpt")], cwd=outside, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok AIOModel 100.0")
    cli = subprocess.run([fresh / "bin" / "aio-reid", "--help"], cwd=outside, env=env, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0 and "index" in cli.stdout and "search" in cli.stdout, cli.stderr[-2000:]


def test_project_metadata_installs_without_deprecation_and_lists_dependencies_once():
    """`project.license` is an SPDX string (a TOML table is deprecated and warned twice per install); pyproject.toml
    is the one list of dependencies, with an extra per job."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert not (REPO / "requirements.txt").exists()
    assert {"search", "train", "export", "all", "test"} <= set(project["optional-dependencies"])
    assert any(d.startswith("datasets>=5.2") for d in project["optional-dependencies"]["train"])


def test_make_test_has_a_quick_subset_and_per_file_progress():
    import tomllib

    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(marker.startswith("slow:") for marker in markers)
    makefile = (REPO / "Makefile").read_text()
    assert '-m "not slow"' in makefile.split("test-fast:")[1].splitlines()[1]
    test_command = makefile.split("\ntest:")[1].splitlines()[1]
    assert "pytest tests" in test_command and " -q" not in test_command  # pytest's per-file progress lines
