"""Gallery indexing and search: failures reported, resume without duplicates, sharding, faiss kinds with recall,
re-ranking, pictures, export parity, and clear errors for bad queries."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aio import AIOModel
from modeling_aio.search import GalleryIndex, k_reciprocal_rerank, merge_parts
from processing_aio import ImageInputError

from conftest import REPO, free_port, interrupt_embedding_at, random_image, tiny_config


@pytest.fixture
def gallery_dir(tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i in range(7):
        random_image(100 + i, (20 + i, 44)).save(folder / f"{i:02d}_c1.jpg")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_index_keeps_good_images_and_reports_bad_ones(searcher, gallery_dir):
    gallery = searcher.index(gallery_dir)
    assert len(gallery.paths) == 7 and gallery.embeddings.shape == (7, 16)
    reported = {p.split("/")[-1] for p, _ in gallery.failures}
    assert reported == {"zero.jpg", "corrupt.png", "notes.txt"}
    assert all(reason for _, reason in gallery.failures)


def test_rgb_query_finds_itself_first_and_save_load(searcher, gallery_dir, tmp_path):
    gallery = searcher.index(gallery_dir, out_dir=tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.paths == gallery.paths and loaded.faiss_kind == "flat" and loaded.recall_at_10 == 1.0
    target = str(gallery_dir / "03_c1.jpg")
    hits = searcher.search(loaded, k=3, rgb=target, id_pattern=r"^(\d+)_")
    assert hits[0].path == target and hits[0].person_id == "03" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    reranked = searcher.search(loaded, k=3, rgb=target, rerank=True)
    assert reranked[0].path == target
    assert searcher.search(loaded, k=3, rgb=target, exclude=[target])[0].path != target


def test_interrupted_index_resumes_without_duplicates(searcher, gallery_dir, tmp_path, monkeypatch):
    straight = searcher.index(gallery_dir)
    original = searcher._embed_paths
    interrupt_embedding_at(searcher, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        searcher.index(gallery_dir, out_dir=tmp_path / "idx")
    assert len(list((tmp_path / "idx" / "parts").glob("part-*.json"))) == 2
    monkeypatch.setattr(searcher, "_embed_paths", original)
    resumed = searcher.index(gallery_dir, out_dir=tmp_path / "idx")
    assert resumed.paths == straight.paths and len(set(resumed.paths)) == len(resumed.paths)
    assert np.allclose(resumed.embeddings, straight.embeddings, atol=1e-6)
    assert len(resumed.failures) == 3 and not (tmp_path / "idx" / "parts").exists()


def test_index_records_size_id_and_camera_by_layout(searcher, gallery_dir, tmp_path):
    with pytest.warns(UserWarning, match="matched 7 of 10 files"):  # the three unreadable files have no id
        gallery = searcher.index(gallery_dir, out_dir=tmp_path / "idx", layout=r"^(\d+)_c(\d+)")
    loaded = GalleryIndex.load(tmp_path / "idx")
    first = loaded.metadata[loaded.paths.index(str(gallery_dir / "03_c1.jpg"))]
    assert first == {"width": 23, "height": 44, "person_id": "03", "camera_id": "1"}
    assert len(loaded.metadata) == len(loaded.paths) == len(gallery.paths)
    hit = searcher.search(loaded, k=1, rgb=str(gallery_dir / "03_c1.jpg"))[0]
    assert hit.person_id == "03"  # taken from the stored metadata, no --id-pattern needed


def test_shards_of_two_processes_merge_into_the_same_index(searcher, gallery_dir, tmp_path):
    straight = searcher.index(gallery_dir)
    for rank in (1, 0):
        assert searcher.index(gallery_dir, out_dir=tmp_path / "idx", rank=rank, world_size=2) is None
    merged = merge_parts(tmp_path / "idx")
    assert merged.paths == straight.paths and np.allclose(merged.embeddings, straight.embeddings, atol=1e-6)


def test_merge_refuses_missing_shards(searcher, gallery_dir, tmp_path):
    searcher.index(gallery_dir, out_dir=tmp_path / "idx", rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="not embedded yet"):
        merge_parts(tmp_path / "idx")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_faiss_indexes_report_recall(kind):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 32))
    vectors = centers[rng.integers(0, 50, 4000)] + 0.3 * rng.standard_normal((4000, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    gallery = GalleryIndex(vectors, [f"{i}.jpg" for i in range(4000)])
    gallery.build_faiss(kind)
    assert gallery.faiss_kind == kind and 0.9 <= gallery.recall_at_10 <= 1.0
    scores, indices = gallery.top_k(vectors[17], 5)
    assert indices[0] == 17


def test_k_reciprocal_rerank_keeps_a_mutual_neighbour_first():
    rng = np.random.default_rng(1)
    query = rng.standard_normal(8)
    candidates = rng.standard_normal((30, 8))
    candidates[5] = query + 0.01 * rng.standard_normal(8)
    normalise = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    distances = k_reciprocal_rerank(normalise(query), normalise(candidates))
    assert distances.shape == (30,) and int(np.argmin(distances)) == 5


def test_pictures_are_written_and_open(searcher, gallery_dir, tmp_path):
    from modeling_aio.search.visualize import render_html, render_png

    gallery = searcher.index(gallery_dir)
    query = {"text": "a man in red", "sketch": str(gallery_dir / "01_c1.jpg")}
    hits = searcher.search(gallery, k=4, id_pattern=r"^(\d+)_", **query)
    png = render_png(query, hits, tmp_path / "out.png", query_id="01")
    with Image.open(png) as image:
        assert image.size[0] == 96 * 6 + 24 and image.size[1] > 190
        pixel = image.convert("RGB").getpixel((96 * 2 + 24 + 1, 1))  # border of the first hit
        assert pixel in ((40, 170, 60), (210, 40, 40))
    page = render_html(query, hits, tmp_path / "out.html", query_id="01").read_text()
    assert page.count("<figure>") == 5 and "a man in red" in page


def test_bad_queries_get_clear_errors(searcher, gallery_dir, tmp_path):
    gallery = searcher.index(gallery_dir)
    with pytest.raises(ImageInputError, match="missing.jpg.*does not exist"):
        searcher.search(gallery, sketch=str(tmp_path / "missing.jpg"))
    with pytest.raises(ImageInputError, match="notes.txt.*not a readable image"):
        searcher.search(gallery, ir=str(gallery_dir / "notes.txt"))
    with pytest.raises(ValueError, match="text\\[0\\] is empty"):
        searcher.search(gallery, text=" ")
    gallery.model_fingerprint = "aio:bert:osnet:512:other-model"
    with pytest.raises(ValueError, match="re-index the gallery"):
        searcher.search(gallery, text="a man")


def test_index_of_another_format_version_is_refused(searcher, gallery_dir, tmp_path):
    searcher.index(gallery_dir, out_dir=tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    manifest["format_version"] = 1
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 1"):
        GalleryIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("text_skip", [False, True], ids=["cls-only", "text-skip"])
def test_onnx_export_matches_pytorch_and_serves_single_modalities(processor, tmp_path, image_files, text_skip):
    from modeling_aio.export import MIN_COSINE, ExportedRuntime, export_onnx

    torch.manual_seed(0)
    model = AIOModel(tiny_config(text_embedding_skip=text_skip)).eval()
    cosines = export_onnx(model, tmp_path / "onnx")
    assert len(cosines) == 4 and min(cosines.values()) >= MIN_COSINE
    runtime = ExportedRuntime.for_checkpoint(model, tmp_path, "onnx")
    for query in ({"sketch": image_files}, {"text": ["a man in red", "a woman with a long black dress and bag"]}):
        batch = processor(**query)
        exported = runtime.embed(batch)
        reference = model.get_features(**batch).numpy()
        assert (exported * reference).sum(1).min() >= MIN_COSINE
    with pytest.raises(ValueError, match="one modality at a time"):
        runtime.embed(processor(text=["a man"], sketch=image_files[:1]))


@pytest.mark.slow
def test_cli_index_under_accelerate_with_two_processes(config, processor, gallery_dir, tmp_path):
    AIOModel(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", str(free_port()),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "aio_reid.cli",
               "index", str(gallery_dir), "--out", str(tmp_path / "idx"), "--model", str(tmp_path / "model"),
               "--batch-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "indexed 7 images" in result.stdout and "2 processes" in result.stdout
    assert "3 files could not be used" in result.stdout
    search = subprocess.run([sys.executable, "-m", "aio_reid.cli", "search", str(tmp_path / "idx"), "--rgb",
                             str(gallery_dir / "05_c1.jpg"), "-k", "2", "--model", str(tmp_path / "model"),
                             "--png", str(tmp_path / "q.png")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert search.returncode == 0, search.stderr[-2000:]
    assert search.stdout.splitlines()[2].endswith("05_c1.jpg") and (tmp_path / "q.png").exists()
    missing = subprocess.run([sys.executable, "-m", "aio_reid.cli", "search", str(tmp_path / "idx"), "--sketch",
                              str(tmp_path / "nope.jpg"), "--model", str(tmp_path / "model")],
                             capture_output=True, text=True, timeout=300, cwd=REPO)
    assert missing.returncode == 1 and "nope.jpg" in missing.stderr and "does not exist" in missing.stderr


@pytest.mark.slow
def test_openvino_export_matches_pytorch(config, processor, tmp_path, image_files):
    pytest.importorskip("openvino")
    from modeling_aio.export import MIN_COSINE, ExportedRuntime, export_openvino

    model = AIOModel(config).eval()
    cosines = export_openvino(model, tmp_path / "openvino")
    assert len(cosines) == 4 and min(cosines.values()) >= MIN_COSINE
    runtime = ExportedRuntime.for_checkpoint(model, tmp_path, "openvino")
    batch = processor(ir=image_files)
    assert (runtime.embed(batch) * model.get_features(**batch).numpy()).sum(1).min() >= MIN_COSINE
