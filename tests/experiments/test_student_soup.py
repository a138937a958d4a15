"""scripts/student_soup.py: the soup of two students is the mean of their weights, loads as a student and records
its members; members of another size or network, a lone member, a folder that is no student and integer buffers that
differ are refused by name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from modeling_aio.experiments import low_resolution_student as lrs
from modeling_aio.experiments.student_soup import average_students

from conftest import REPO


def _student(folder, seed: int, size: tuple[int, int] = (32, 16)) -> lrs.LowResolutionStudent:
    torch.manual_seed(seed)
    student = lrs.LowResolutionStudent(lrs.load_trunk("osnet-0267"), 8, size)
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))  # as a seed's distillation would move it
    student.save_pretrained(folder, {"seed": seed, "steps": 10, "teacher": "test"})
    return student


def test_the_soup_is_the_mean_of_its_members_and_loads_as_a_student(tmp_path):
    first, second = _student(tmp_path / "a", 1), _student(tmp_path / "b", 2)
    soup = average_students([tmp_path / "a", tmp_path / "b"], tmp_path / "soup")
    loaded = lrs.load_student(tmp_path / "soup")
    weights, a, b = loaded.state_dict(), first.state_dict(), second.state_dict()
    name = "to_search_space.weight"
    assert not torch.equal(a[name], b[name])
    torch.testing.assert_close(weights[name], (a[name] + b[name]) / 2)
    kernel = "osnet.conv3.0.conv1.conv.weight"
    torch.testing.assert_close(weights[kernel], (a[kernel] + b[kernel]) / 2)
    pixels = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).embeds, soup(pixels).embeds)
    config = json.loads((tmp_path / "soup" / lrs.CONFIG_NAME).read_text())
    assert [member["seed"] for member in config["averaged_from"]] == [1, 2]
    assert config["trunk"] == "osnet-0267" and config["image_size"] == [32, 16]


def test_members_that_cannot_be_averaged_are_refused_by_name(tmp_path):
    _student(tmp_path / "a", 1)
    _student(tmp_path / "wide", 2, size=(64, 32))
    with pytest.raises(ValueError, match=r"wide has image_size \[64, 32\]"):
        average_students([tmp_path / "a", tmp_path / "wide"], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two student folders, got 1"):
        average_students([tmp_path / "a"], tmp_path / "soup")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty has no student.json"):
        average_students([tmp_path / "a", tmp_path / "empty"], tmp_path / "soup")
    other = _student(tmp_path / "b", 3)
    state = other.state_dict()
    tracked = next(name for name, value in state.items() if not value.is_floating_point())
    state[tracked] += 1
    other.load_state_dict(state)
    other.save_pretrained(tmp_path / "b", {"seed": 3})
    with pytest.raises(ValueError, match=f"the members' {tracked} differ"):
        average_students([tmp_path / "a", tmp_path / "b"], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()  # nothing written by a refused soup


@pytest.mark.slow
def test_the_script_writes_a_soup(tmp_path):
    _student(tmp_path / "a", 1)
    _student(tmp_path / "b", 2)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "student_soup.py"), str(tmp_path / "soup"),
                             str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "the mean of 2 students" in result.stdout
    assert lrs.load_student(tmp_path / "soup").image_size == (32, 16)
