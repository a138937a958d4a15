"""Runs `aio-reid index` in forked children killed at every write (`python signal_driver.py SPEC.json`).

The driver imports everything once and forks a child per run, so each kill costs a fraction of a second instead of
an interpreter start. A child counts the index's writes (each atomic file write, each removal) and, at the chosen
one, sends itself the signal: "mid" leaves the write's temporary file half written, "after" follows the completed
write. After each kill the driver checks what a user would meet (the index refuses to load, or loads equal to a
clean run's, or, when re-indexing over an older index, loads as that older index unchanged) and reruns `index` to completion, which must equal the clean run. Results go to SPEC's `results` file.
The parent never runs torch itself, so the children inherit no OpenMP state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np

from aio_reid import cli
from modeling_aio.search import GalleryIndex
from modeling_aio.search import index as index_module
from modeling_aio.search import searcher as searcher_module

WRITES = {index_module: ("atomic_write", "remove", "remove_parts"), searcher_module: ("remove_stale_parts",)}


def instrument(kill_at: tuple[int, str] | None, signal_number: int, log: list) -> None:
    """Wraps every write of `index`; at write number `kill_at[0]` (phase `kill_at[1]`) the process signals itself."""
    count = {"n": 0}

    def wrap(name, original):
        def wrapper(*args, **kwargs):
            count["n"] += 1
            number = count["n"]
            log.append(name)
            if kill_at == (number, "mid") and name == "atomic_write":
                path, data = Path(args[0]), args[1]
                path.with_name(f".{path.name}.tmp-{os.getpid()}").write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal_number)
            result = original(*args, **kwargs)
            if kill_at == (number, "after"):
                os.kill(os.getpid(), signal_number)
            return result
        return wrapper

    for module, names in WRITES.items():
        for name in names:
            setattr(module, name, wrap(name, getattr(module, name)))


def in_child(argv: list[str], log_file: Path, kill_at=None, signal_number: int = signal.SIGKILL,
             writes_file: Path | None = None) -> int:
    """Runs `aio-reid index` in a forked child; its exit code, or minus the signal that killed it."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            descriptor = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(descriptor, 1)
            os.dup2(descriptor, 2)
            # Ctrl-C's handler even when this test runs in the background, where the shell starts processes with
            # SIGINT ignored (and Python keeps it ignored).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            log: list = []
            instrument(kill_at, signal_number, log)
            code = cli.main(argv)
            if writes_file is not None:
                writes_file.write_text(json.dumps(log))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def same(index: GalleryIndex, clean: GalleryIndex) -> bool:
    return index.paths == clean.paths and np.allclose(index.embeddings, clean.embeddings, atol=1e-6)


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    work = Path(spec["work"])
    signal_number = getattr(signal, spec["signal"])

    def argv(out: Path, gallery: str = spec["gallery"]) -> list[str]:
        return ["index", gallery, "--out", str(out), "--model", spec["model"], "--batch-size", "2"]

    assert in_child(argv(work / "clean"), work / "clean.log", writes_file=work / "writes.json") == 0
    clean = GalleryIndex.load(work / "clean")
    writes = json.loads((work / "writes.json").read_text())
    old = None
    if spec["old_gallery"]:
        assert in_child(argv(work / "old", spec["old_gallery"]), work / "old.log") == 0
        old = GalleryIndex.load(work / "old")
    results = []
    points = [(n, phase) for n, name in enumerate(writes, 1)
              for phase in (("mid", "after") if name == "atomic_write" else ("after",))]
    for number, phase in points:
        out = work / f"run-{number}-{phase}"
        if spec["old_gallery"]:
            shutil.copytree(work / "old", out)
        log = work / f"run-{number}-{phase}.log"
        exit_code = in_child(argv(out), log, (number, phase), signal_number)
        try:
            loaded = GalleryIndex.load(out)
            state = ("whole and equal" if same(loaded, clean) else
                     "the previous index, unchanged" if old is not None and same(loaded, old) else "whole but WRONG")
        except (FileNotFoundError, ValueError) as error:
            state = f"refused: {str(error)[:80]}"
        rerun = in_child(argv(out), work / f"rerun-{number}-{phase}.log")
        results.append({"write": number, "name": writes[number - 1], "phase": phase, "exit": exit_code,
                        "said": log.read_text()[-300:], "state": state,
                        "rerun_exit": rerun, "rerun_equal": rerun == 0 and same(GalleryIndex.load(out), clean)})
        shutil.rmtree(out)
    Path(spec["results"]).write_text(json.dumps({"writes": writes, "results": results}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
