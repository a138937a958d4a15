"""Averages the weights of low-resolution students distilled from one start with different seeds (a "model soup",
Wortsman et al. 2022). Runs that start from the same student and differ only in the order of their batches stay in
one basin (the median tensor of two such runs differs by 0.24% of its norm), so their mean is a student too; on the
cross-domain protocol it read above the mean of its members (docs/experiments.md, 2026-12-06); with a member
from another start it read no better than that mean (whether members share a start is not checked). The soup runs
exactly as fast as each member: the network is the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .low_resolution_student import CONFIG_NAME, LowResolutionStudent, export_int8, load_student

#: What every member must share for its weights to be averaged with the others'.
SHARED_SETTINGS = ("trunk", "image_size", "search_size", "skipped_blocks")
#: Per-run settings recorded for each member in the soup's `student.json`.
MEMBER_SETTINGS = ("seed", "init_from", "steps", "learning_rate", "train_from", "last_loss")


def average_students(folders: list[Path], output_dir: Path, int8: bool = False) -> LowResolutionStudent:
    """The mean of the students in `folders` (written by `scripts/low_resolution_student.py`), saved to
    `output_dir` as a student folder (with its int8 graph when `int8`, calibrated as the shipped gallery encoder
    is) and returned. Refuses fewer than two members, members of different networks or sizes, and members whose
    integer buffers differ."""
    folders = [Path(folder) for folder in folders]
    if len(folders) < 2:
        raise ValueError(f"a soup needs at least two student folders, got {len(folders)}.")
    configs = []
    for folder in folders:
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_NAME} (a low_resolution_student folder).")
        configs.append(json.loads((folder / CONFIG_NAME).read_text()))
    for folder, config in zip(folders[1:], configs[1:]):
        for key in SHARED_SETTINGS:
            if config.get(key) != configs[0].get(key):
                raise ValueError(f"{folder} has {key} {config.get(key)!r} and {folders[0]} {configs[0].get(key)!r}; "
                                 "a soup averages students of one network and size.")
    students = [load_student(folder) for folder in folders]
    states = [student.state_dict() for student in students]
    soup: dict[str, torch.Tensor] = {}
    for name, value in states[0].items():
        if value.is_floating_point():
            soup[name] = torch.stack([state[name].float() for state in states]).mean(0).to(value.dtype)
        elif all(torch.equal(state[name], value) for state in states[1:]):
            soup[name] = value
        else:
            raise ValueError(f"the members' {name} differ; only floating-point weights can be averaged.")
    student = students[0]
    student.load_state_dict(soup)
    members = [{"folder": str(folder)} | {key: config[key] for key in MEMBER_SETTINGS if key in config}
               for folder, config in zip(folders, configs)]
    metadata: dict[str, Any] = {"teacher": configs[0].get("teacher"), "averaged_from": members}
    student.save_pretrained(output_dir, metadata)
    if int8:
        from ..export import rgb_pixel_batches
        from ..training.recipe import calibration_photos

        export_int8(student, rgb_pixel_batches(calibration_photos(), student.image_size, 32), output_dir)
    return student.eval()


__all__ = ["average_students", "SHARED_SETTINGS", "MEMBER_SETTINGS"]
