"""The bad-input sweep, galleries: `aio-reid index`, `search` and `export` run as a hostile user would, in-process
through `aio_reid.cli.main`. Every case ends in a one-line `error:` naming the input and a non-zero exit, never a
traceback (`test_error_*`), or in a checked recovery (`test_recovery_*`). SIGINT and SIGKILL at every write of `index`
are in `test_sweep_index_signals.py`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from aio_reid import cli
from modeling_aio import AIOModel
from modeling_aio.search import GalleryIndex

from conftest import foreign_checkpoint, random_image, tiny_config, write


@pytest.fixture
def gallery(tmp_path):
    folder = tmp_path / "gallery"
    for person in ("001", "002", "003"):
        (folder / person).mkdir(parents=True)
        for camera in (1, 2):
            random_image(int(person) * 10 + camera, (20, 44)).save(folder / person / f"c{camera}_1.jpg")
    return folder


@pytest.fixture
def index_dir(model_dir, gallery, tmp_path, capsys):
    code, _, err = run(capsys, "index", gallery, "--out", tmp_path / "index", "--model", model_dir)
    assert code == 0, err
    return tmp_path / "index"


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's own refusals
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(code: int, err: str, *names: str) -> None:
    """A clear error: non-zero exit, one `error:` sentence naming every one of `names`, no traceback."""
    assert code not in (0, None) and "Traceback" not in err, err
    assert "error" in err.lower(), err
    for name in names:
        assert str(name) in err, f"{name!r} not named in: {err}"


def other_model(tmp_path, processor) -> Path:
    AIOModel(tiny_config(embedding_size=16)).save_pretrained(tmp_path / "other")
    processor.save_pretrained(tmp_path / "other")
    return tmp_path / "other"


# ---- aio-reid index -------------------------------------------------------------------------------------------------

INDEX_ERRORS = {
    # case: (extra arguments or a gallery change, what the error names)
    "gallery folder missing": (lambda t, g: (["index", t / "nowhere"], ["nowhere", "does not exist"])),
    "gallery is a file": (lambda t, g: (["index", g / "001" / "c1_1.jpg"], ["c1_1.jpg", "not a directory"])),
    "empty gallery folder": (lambda t, g: ((t / "empty").mkdir() or ["index", t / "empty"], ["empty", "holds no files"])),
    "gallery of only unreadable files": (lambda t, g: (unreadable_only(t), ["junk", "none of the 2 files"])),
    "--batch-size 0": (lambda t, g: (["index", g, "--batch-size", "0"], ["--batch-size", "at least 1"])),
    "--batch-size -3": (lambda t, g: (["index", g, "--batch-size", "-3"], ["--batch-size", "at least 1"])),
    "--batch-size abc": (lambda t, g: (["index", g, "--batch-size", "abc"], ["--batch-size", "abc"])),
    "--out is a file": (lambda t, g: (["index", g, "--out", g / "001" / "c1_1.jpg"], ["c1_1.jpg", "not a folder"])),
    "--model missing": (lambda t, g: (["index", g, "--model", t / "no-model"], ["no-model"])),
    "--modality thermal": (lambda t, g: (["index", g, "--modality", "thermal"], ["--modality", "thermal"])),
    "--faiss unknown": (lambda t, g: (["index", g, "--faiss", "lsh"], ["--faiss", "lsh"])),
    "--layout not a regex": (lambda t, g: (["index", g, "--layout", "(\\d+"], ["--layout", "not a valid regular"])),
    "--layout matching nothing": (lambda t, g: (["index", g, "--layout", r"(\d+)_x(\d+)"], ["--layout",
                                                                                          "matched none"])),
    "--layout without an id group": (lambda t, g: (["index", g, "--layout", r"\d+"], ["--layout", "group"])),
}


def unreadable_only(tmp_path: Path) -> list:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not an image")
    (tmp_path / "junk" / "b.jpg").write_bytes(b"")
    return ["index", tmp_path / "junk"]


@pytest.mark.parametrize("case", list(INDEX_ERRORS))
def test_error_index_command(capsys, model_dir, gallery, tmp_path, case):
    """`error:` naming the folder, file or option; exit 1 or 2; nothing written that loads"""
    argv, names = INDEX_ERRORS[case](tmp_path, gallery)
    argv = [*argv, *([] if "--out" in argv else ["--out", tmp_path / "out"]),
            *([] if "--model" in argv else ["--model", model_dir])]
    code, _, err = run(capsys, *argv)
    refused(code, err, *names)
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        GalleryIndex.load(tmp_path / "out")


def test_recovery_unreadable_files_among_good_ones(capsys, model_dir, gallery, tmp_path):
    """indexed: the good images; each unreadable file listed by name with its reason, exit 0"""
    (gallery / "001" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    (gallery / "notes.txt").write_text("camera log")
    (gallery / "empty.png").write_bytes(b"")
    code, out, err = run(capsys, "index", gallery, "--out", tmp_path / "idx", "--model", model_dir)
    assert code == 0, err
    assert "3 files could not be used" in out and all(n in out for n in ("broken.jpg", "notes.txt", "empty.png"))
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert len(loaded.paths) == 6 and len(loaded.failures) == 3


def test_recovery_reindex_into_an_index_of_another_model(capsys, model_dir, processor, gallery, tmp_path, index_dir):
    """rewritten whole by the new model: no row of the old one kept"""
    other = other_model(tmp_path, processor)
    code, _, err = run(capsys, "index", gallery, "--out", index_dir, "--model", other)
    assert code == 0, err
    code, out, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg", "--model", other, "-k", "1")
    assert code == 0 and "001/c1_1.jpg" in out.splitlines()[-1] and "1.0000" in out.splitlines()[-1], err
    code, _, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg", "--model", model_dir)
    refused(code, err, "index was built by model")


# ---- aio-reid search ------------------------------------------------------------------------------------------------

FILES = ("manifest.json", "embeddings.npy", "index.json", "faiss.index")
DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "garbage": lambda p: p.write_bytes(np.random.default_rng(1).bytes(256)),
    "missing": lambda p: p.unlink(),
    "0 bytes": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_error_damaged_index_file(capsys, model_dir, gallery, index_dir, name, damage):
    """`error:` naming the index file and saying to re-index; exit 1"""
    DAMAGE[damage](index_dir / name)
    code, _, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg", "--model", model_dir)
    expected = index_dir if name == "manifest.json" and damage == "missing" else name
    refused(code, err, expected)
    assert "aio-reid index" in err or "re-index" in err


def manifest_edit(index_dir: Path, **changes) -> None:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    manifest.update(changes)
    (index_dir / "manifest.json").write_text(json.dumps(manifest))


SEARCH_ERRORS = {
    "index folder missing": (lambda t, i, g: [t / "nowhere", "--rgb", g / "001" / "c1_1.jpg"], ["nowhere"]),
    "index folder empty": (lambda t, i, g: [(t / "void").mkdir() or t / "void", "--rgb", g / "001" / "c1_1.jpg"],
                           ["void", "not a complete aio-reid index"]),
    "a gallery folder instead of an index": (lambda t, i, g: [g, "--rgb", g / "001" / "c1_1.jpg"],
                                             ["gallery", "not a complete aio-reid index"]),
    "index of another format version": (lambda t, i, g: manifest_edit(i, format_version=1) or
                                        [i, "--rgb", g / "001" / "c1_1.jpg"], ["format 1", "re-index"]),
    "manifest with other row count": (lambda t, i, g: manifest_edit(i, rows=99) or [i, "--rgb", g / "001" / "c1_1.jpg"],
                                      ["99 rows", "re-index"]),
    "-k 0": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "-k", "0"], ["-k must be at least 1"]),
    "-k -1": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "-k", "-1"], ["-k must be at least 1"]),
    "-k abc": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "-k", "abc"], ["-k", "abc"]),
    "no query": (lambda t, i, g: [i], ["at least one of --text"]),
    "query file missing": (lambda t, i, g: [i, "--rgb", t / "nobody.jpg"], ["nobody.jpg", "does not exist"]),
    "query file corrupt": (lambda t, i, g: [i, "--sketch", write(t / "bad.jpg", b"GIF89a\x00")],
                           ["bad.jpg", "not a readable image"]),
    "query is a directory": (lambda t, i, g: [i, "--ir", g], ["gallery", "not a file"]),
    "query is a URL": (lambda t, i, g: [i, "--rgb", "http://cam/1.jpg"], ["http://cam/1.jpg", "URL"]),
    "empty text query": (lambda t, i, g: [i, "--text", ""], ["text[0] is empty"]),
    "zero-width text query": (lambda t, i, g: [i, "--text", "\u200b\u200b"], ["text[0] is empty"]),
    "--query-id without person ids": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "--query-id", "001"],
                                      ["--query-id needs person ids"]),
    "--id-pattern not a regex": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "--id-pattern", "(["],
                                 ["--id-pattern", "(["]),
    "--id-pattern matching nothing": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "--id-pattern", "zz(\\d)"],
                                      ["--id-pattern", "matched none"]),
    "--backend unknown": (lambda t, i, g: [i, "--rgb", g / "001" / "c1_1.jpg", "--backend", "tensorrt"],
                          ["--backend", "tensorrt"]),
}


@pytest.mark.parametrize("case", list(SEARCH_ERRORS))
def test_error_search_command(capsys, model_dir, gallery, index_dir, tmp_path, case):
    """`error:` naming the index, query or option; exit 1 or 2"""
    make, names = SEARCH_ERRORS[case]
    argv = make(tmp_path, index_dir, gallery)
    argv = ["search", *argv, *([] if "--model" in argv else ["--model", model_dir])]
    code, _, err = run(capsys, *argv)
    refused(code, err, *names)


def test_error_index_from_another_model(capsys, processor, gallery, index_dir, tmp_path):
    """`error:` the index's model and the searcher's differ (by weights), re-index; exit 1"""
    code, _, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg",
                       "--model", other_model(tmp_path, processor))
    refused(code, err, "index was built by model", "re-index")


def test_recovery_png_into_a_missing_folder(capsys, model_dir, gallery, index_dir, tmp_path):
    """the folders are made and the picture written"""
    out = tmp_path / "no" / "such" / "dir" / "r.png"
    code, _, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg", "--png", out,
                       "--model", model_dir)
    assert code == 0 and out.stat().st_size > 0, err


def test_recovery_k_larger_than_the_gallery(capsys, model_dir, gallery, index_dir):
    """every gallery image once, best first, exit 0"""
    code, out, err = run(capsys, "search", index_dir, "--rgb", gallery / "001" / "c1_1.jpg", "-k", "1000",
                         "--model", model_dir)
    assert code == 0, err
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+[-+]?\d", line)]
    scores = [float(line.split()[1]) for line in rows]
    assert len(rows) == 6 and scores == sorted(scores, reverse=True)


def test_recovery_index_moved_to_another_folder(capsys, model_dir, gallery, index_dir, tmp_path):
    """a moved index still loads whole and finds the query itself first"""
    moved = tmp_path / "moved-index"
    shutil.move(index_dir, moved)
    code, out, err = run(capsys, "search", moved, "--rgb", gallery / "002" / "c2_1.jpg", "-k", "1", "--model", model_dir)
    assert code == 0 and "002/c2_1.jpg" in out, err


# ---- aio-reid export ------------------------------------------------------------------------------------------------

EXPORT_ERRORS = {
    "--model missing": (lambda t, m: ["--model", t / "no-model"], ["no-model"]),
    "--model of another model type": (lambda t, m: ["--model", foreign_checkpoint(t, m)], ["config.json", "bert"]),
    "--model with truncated weights": (lambda t, m: ["--model", truncated(t, m)], ["model.safetensors",
                                                                                  "not a complete"]),
    "--backend unknown": (lambda t, m: ["--model", m, "--backend", "tflite"], ["--backend", "tflite"]),
}


def truncated(tmp_path: Path, model_dir: Path) -> Path:
    folder = tmp_path / "truncated"
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    return folder


@pytest.mark.parametrize("case", list(EXPORT_ERRORS))
def test_error_export_command(capsys, model_dir, tmp_path, case):
    """`error:` naming the checkpoint file or option; nothing exported"""
    make, names = EXPORT_ERRORS[case]
    code, _, err = run(capsys, "export", *make(tmp_path, model_dir))
    refused(code, err, *names)
    assert not list(tmp_path.rglob("*.onnx"))
