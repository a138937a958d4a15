"""Galleries that prove their own integrity (modeling_aio.search.index / storage): a manifest written last with a
checksum per file, refusal naming the file on any mismatch, resumes that never mix jobs or duplicate files, a
fingerprint of the weights rather than a folder name, and an index killed at any write never loading as whole."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modeling_aio import AIOModel
from modeling_aio.search import AIOSearcher, GalleryIndex
from modeling_aio.search.storage import json_bytes, sha256

from conftest import interrupt_embedding_at, random_image, tiny_config


@pytest.fixture
def people(tmp_path):
    folder = tmp_path / "people"
    folder.mkdir()
    for i in range(6):
        random_image(200 + i, (20, 44)).save(folder / f"{i:03d}_c1.jpg")
    return folder


def rewrite(directory, name, content: bytes) -> None:
    """Replaces a file and updates its checksum in the manifest: a consistent-looking but wrong index."""
    (directory / name).write_bytes(content)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": len(content), "sha256": sha256(content)}
    (directory / "manifest.json").write_bytes(json_bytes(manifest))


@pytest.mark.parametrize("name", ["embeddings.npy", "index.json", "faiss.index"])
@pytest.mark.parametrize("damage", ["truncated", "changed", "missing"])
def test_a_damaged_file_is_refused_by_name(searcher, people, tmp_path, name, damage):
    searcher.index(people, out_dir=tmp_path / "idx")
    path = tmp_path / "idx" / name
    if damage == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        GalleryIndex.load(tmp_path / "idx")


def test_an_index_interrupted_before_its_manifest_never_loads(searcher, people, tmp_path):
    searcher.index(people, out_dir=tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="interrupted while being written"):
        GalleryIndex.load(tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        GalleryIndex.load(tmp_path)


def test_reindexing_other_people_never_leaves_a_stale_faiss_index(searcher, people, tmp_path, monkeypatch):
    """The reported case: interrupted at the last write while re-indexing, the old faiss.index answered for the new
    paths at score 1.0. Now the old manifest goes first, so nothing loads until the new one is whole."""
    from modeling_aio.search import storage

    searcher.index(people, out_dir=tmp_path / "idx")
    others = tmp_path / "others"
    others.mkdir()
    for i in range(4):
        random_image(900 + i, (20, 44)).save(others / f"z_{i:03d}.jpg")
    real = storage.atomic_write

    def dies_at_faiss(path, data):
        if path.name == "faiss.index":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr("modeling_aio.search.index.atomic_write", dies_at_faiss)
    with pytest.raises(KeyboardInterrupt):
        searcher.index(others, out_dir=tmp_path / "idx")
    with pytest.raises(FileNotFoundError, match="not a complete aio-reid index"):
        GalleryIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("case", ["fewer paths", "more rows", "nan row", "other modality"])
def test_files_that_disagree_with_each_other_are_refused(searcher, people, tmp_path, case):
    searcher.index(people, out_dir=tmp_path / "idx")
    directory = tmp_path / "idx"
    meta = json.loads((directory / "index.json").read_text())
    embeddings = np.load(directory / "embeddings.npy")
    if case == "fewer paths":
        meta["paths"], meta["metadata"] = meta["paths"][:-2], meta["metadata"][:-2]
        rewrite(directory, "index.json", json_bytes(meta))
    elif case == "other modality":
        meta["modality"] = "sketch"
        rewrite(directory, "index.json", json_bytes(meta))
    else:
        if case == "more rows":
            embeddings = np.concatenate([embeddings, embeddings[:3]])
        else:
            embeddings[2] = np.nan
        import io

        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        rewrite(directory, "embeddings.npy", buffer.getvalue())
    with pytest.raises(ValueError, match="re-index the gallery"):
        GalleryIndex.load(directory)


def test_an_empty_index_and_a_bad_k_get_sentences(searcher, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"none of the 1 files of the gallery could be used .*notes.txt"):
        searcher.index(empty, out_dir=tmp_path / "idx")
    with pytest.raises(FileNotFoundError):
        GalleryIndex.load(tmp_path / "idx")
    with pytest.raises(ValueError, match="holds no images"):
        searcher.search(GalleryIndex(np.zeros((0, 16), np.float32), [], model_fingerprint=""), text="a man")


def test_the_fingerprint_is_the_weights_not_the_folder_name(config, processor, tmp_path):
    model = AIOModel(config).eval()
    model.save_pretrained(tmp_path / "a" / "model")
    processor.save_pretrained(tmp_path / "a" / "model")
    model.save_pretrained(tmp_path / "b" / "copy")
    processor.save_pretrained(tmp_path / "b" / "copy")
    first = AIOSearcher.from_pretrained(tmp_path / "a" / "model").fingerprint
    assert AIOSearcher.from_pretrained(tmp_path / "b" / "copy").fingerprint == first
    other = AIOModel(tiny_config()).eval()
    other.save_pretrained(tmp_path / "c" / "model")
    processor.save_pretrained(tmp_path / "c" / "model")
    assert AIOSearcher.from_pretrained(tmp_path / "c" / "model").fingerprint != first


def test_resume_with_another_model_never_mixes_rows(searcher, people, tmp_path, processor, monkeypatch):
    interrupt_embedding_at(searcher, monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        searcher.index(people, out_dir=tmp_path / "idx")
    other = AIOSearcher(AIOModel(tiny_config()).eval(), processor, batch_size=2)
    resumed = other.index(people, out_dir=tmp_path / "idx")
    clean = other.index(people)
    assert resumed.model_fingerprint == other.fingerprint != searcher.fingerprint
    assert np.allclose(resumed.embeddings, clean.embeddings, atol=1e-6)


@pytest.mark.parametrize("change", ["gallery grew", "batch size"])
def test_resume_adds_new_files_once_and_survives_a_batch_size_change(searcher, people, tmp_path, monkeypatch, change):
    original = searcher._embed_paths
    interrupt_embedding_at(searcher, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        searcher.index(people, out_dir=tmp_path / "idx")
    monkeypatch.setattr(searcher, "_embed_paths", original)
    if change == "gallery grew":
        for name in ("001_c2.jpg", "004_c2.jpg", "009_c1.jpg"):
            random_image(hash(name) % 1000, (20, 44)).save(people / name)
    else:
        searcher.batch_size = 3
    resumed = searcher.index(people, out_dir=tmp_path / "idx")
    clean = searcher.index(people)
    assert resumed.paths == clean.paths and len(set(resumed.paths)) == len(resumed.paths)
    assert np.allclose(resumed.embeddings, clean.embeddings, atol=1e-6)


KILL_SCRIPT = r"""
import sys
import faiss  # loaded before "ready", so the kill window is the indexing itself
from modeling_aio import AIOModel
from modeling_aio.search import AIOSearcher
from processing_aio import AIOProcessor

model = AIOModel.from_pretrained(sys.argv[1]).eval()
processor = AIOProcessor.from_pretrained(sys.argv[1])
print("ready", flush=True)
AIOSearcher(model, processor, batch_size=2).index(sys.argv[2], out_dir=sys.argv[3])
print("done", flush=True)
"""


def killed_run(model_dir, gallery, out, delay: float | None) -> float:
    """Runs `index` in a process and SIGKILLs it `delay` seconds after the model is loaded (None: lets it finish);
    returns the seconds from loaded to the manifest's appearance (or to the kill)."""
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(model_dir), str(gallery), str(out)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    if delay is None:
        while not (Path(out) / "manifest.json").exists() and process.poll() is None:
            time.sleep(0.005)
        written = time.monotonic() - started
        assert process.stdout.readline().strip() == "done" and process.wait(timeout=300) == 0
        return written
    else:
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return time.monotonic() - started


@pytest.mark.slow
def test_index_killed_at_random_points_resumes_to_a_clean_runs_index(config, processor, tmp_path):
    """`index` SIGKILLed at 12 random points of its run (embedding, part writes, merge, manifest), each followed by a
    rerun that resumes; after every kill the index either refuses to load or equals a clean run's, and every rerun
    ends equal to it. (tests/reliability kills it at every write in turn; these points fall between writes too.)"""
    model_dir = tmp_path / "model"
    AIOModel(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i in range(40):
        random_image(300 + i, (20, 44)).save(gallery / f"{i:03d}_c1.jpg")
    searcher = AIOSearcher.from_pretrained(model_dir, batch_size=2)
    clean = searcher.index(gallery, out_dir=tmp_path / "clean")
    killed_run(model_dir, gallery, tmp_path / "warm-up", None)
    duration = killed_run(model_dir, gallery, tmp_path / "timed", None)  # the window the kills fall in
    rng, refused, whole = random.Random(0), 0, 0
    kills = 12
    for attempt in range(kills):
        out = tmp_path / f"idx{attempt}"
        if attempt % 2:  # every other kill hits a rerun over a complete index (its rewrite)
            searcher.index(gallery, out_dir=out)
        killed_run(model_dir, gallery, out, rng.uniform(0.0, duration))
        try:
            state = GalleryIndex.load(out)
            whole += 1
            assert state.paths == clean.paths and np.allclose(state.embeddings, clean.embeddings, atol=1e-6)
        except (FileNotFoundError, ValueError):
            refused += 1
        resumed = searcher.index(gallery, out_dir=out)
        assert resumed.paths == clean.paths and np.allclose(resumed.embeddings, clean.embeddings, atol=1e-6)
        loaded = GalleryIndex.load(out)
        assert loaded.paths == clean.paths and np.allclose(loaded.embeddings, clean.embeddings, atol=1e-6)
    print(f"run {duration:.2f} s; of {kills} kills {refused} left an index that refused to load and {whole} a whole one "
          "equal to a clean run's; every rerun equalled it")


def test_a_run_killed_while_deleting_its_parts_leaves_nothing_to_resume_from(searcher, people, tmp_path, monkeypatch):
    """Killed inside the parts folder's deletion (after the manifest): the next run neither reads a half-deleted
    part nor keeps the leftovers."""
    import shutil

    from modeling_aio.search import index as index_module

    rmtree = shutil.rmtree

    def killed(path, *args, **kwargs):
        next(iter(sorted(Path(path).glob("*.npy")))).unlink()  # part of the folder gone, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        searcher.index(people, out_dir=tmp_path / "idx")
    monkeypatch.setattr(index_module.shutil, "rmtree", rmtree)
    assert not (tmp_path / "idx" / "parts").exists() and list((tmp_path / "idx").glob(".parts-removed-*"))
    resumed = searcher.index(people, out_dir=tmp_path / "idx")
    assert resumed.paths == searcher.index(people).paths
    assert not list((tmp_path / "idx").glob(".parts-removed-*"))
