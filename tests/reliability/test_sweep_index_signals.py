"""The bad-input sweep, interruptions: `aio-reid index` sent SIGINT (Ctrl-C) or SIGKILL at every one of its writes,
on a fresh folder and over a complete index of other people, each followed by a rerun (`signal_driver.py` forks
the runs). Recovery, every time: nothing half-written loads as whole, and the rerun ends equal to a clean run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_aio import AIOModel

from conftest import random_image

DRIVER = Path(__file__).with_name("signal_driver.py")


@pytest.fixture
def setting(config, processor, tmp_path):
    AIOModel(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    for name, seeds in (("gallery", range(4)), ("old-gallery", range(50, 53))):
        (tmp_path / name).mkdir()
        for seed in seeds:
            random_image(seed, (20, 44)).save(tmp_path / name / f"{seed:03d}_c1.jpg")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["fresh folder", "over an index of other people"])
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_recovery_signal_at_every_write_of_index(setting, signal_name, scenario):
    """recovery at every write (mid-write and after it): the index refuses to load, equals a clean run's or is the
    previous index unchanged (never a mix); Ctrl-C says how to resume (exit 130); the rerun ends equal to a clean run"""
    work = setting / "work"
    work.mkdir()
    spec = {"work": str(work), "signal": signal_name, "model": str(setting / "model"),
            "gallery": str(setting / "gallery"),
            "old_gallery": str(setting / "old-gallery") if scenario != "fresh folder" else None,
            "results": str(setting / "results.json")}
    (setting / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(DRIVER), str(setting / "spec.json")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((setting / "results.json").read_text())
    results = report["results"]
    assert len(results) >= 2 * report["writes"].count("atomic_write") >= 16
    for result in results:
        where = f"{signal_name} {result['phase']} write {result['write']} ({result['name']}): {result}"
        if signal_name == "SIGKILL":
            assert result["exit"] == -9, where
        else:
            assert result["exit"] == 130 and "run the same command again to resume" in result["said"], where
        assert result["state"] in ("whole and equal", "the previous index, unchanged") or result["state"].startswith(
            "refused"), where
        assert result["rerun_exit"] == 0 and result["rerun_equal"], where
    states = {kind: sum(r["state"].startswith(kind) for r in results)
              for kind in ("refused", "whole and equal", "the previous index")}
    print(f"{signal_name}, {scenario}: {len(results)} kill points over {len(report['writes'])} writes; {states}")
