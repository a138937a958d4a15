"""The `aio-reid` command line (aio_reid.cli) as a user meets it on their own folders: ids read from folder names,
patterns that match nothing refused, the query left out of its results on request, scores that always rank higher
first with their kind named, help on every option, a clear answer for a missing extra, and a start without torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from aio_reid import cli
from modeling_aio import AIOModel
from modeling_aio.search import GalleryIndex

from conftest import random_image


@pytest.fixture
def nested_gallery(tmp_path):
    """`val/PERSON/CAMERA_SHOT.jpg`: the person id is the folder, the file name starts with the camera."""
    for person in ("018", "032"):
        for camera, shot in (("01", 1), ("02", 3)):
            folder = tmp_path / "gallery" / "val" / person
            folder.mkdir(parents=True, exist_ok=True)
            random_image(int(person) * 10 + shot, (20, 44)).save(folder / f"{camera}_{shot}.jpg")
    return tmp_path / "gallery"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layout_reads_ids_from_folder_names(capsys, model_dir, nested_gallery, tmp_path):
    code, out, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir,
                         "--layout", r"(\d+)/(\d+)_\d+\.jpg")
    assert code == 0, err
    assert "person ids for 4" in out
    gallery = GalleryIndex.load(tmp_path / "idx")
    assert {(m["person_id"], m["camera_id"]) for m in gallery.metadata} == {
        ("018", "01"), ("018", "02"), ("032", "01"), ("032", "02")}


def test_named_groups_and_named_layouts_work_at_any_depth(capsys, model_dir, nested_gallery, tmp_path):
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir,
                       "--layout", r"(?P<id>\d{3})/(?P<camera>\d+)_")
    assert code == 0, err
    assert {(m["person_id"], m["camera_id"]) for m in GalleryIndex.load(tmp_path / "idx").metadata} == {
        ("018", "01"), ("018", "02"), ("032", "01"), ("032", "02")}
    market = nested_gallery / "market"
    market.mkdir()
    random_image(7, (20, 44)).save(market / "0042_c3s1_000151_00.jpg")
    code, _, err = run(capsys, "index", market, "--out", tmp_path / "m", "--model", model_dir, "--layout", "market1501")
    assert code == 0, err
    assert GalleryIndex.load(tmp_path / "m").metadata[0] | {"width": 0, "height": 0} == {
        "person_id": "0042", "camera_id": "3", "width": 0, "height": 0}


def test_a_layout_that_matches_nothing_is_refused_before_embedding(capsys, model_dir, nested_gallery, tmp_path,
                                                                    monkeypatch):
    from modeling_aio.search import AIOSearcher

    monkeypatch.setattr(AIOSearcher, "embed", lambda *a, **k: pytest.fail("embedded before checking the layout"))
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir,
                       "--layout", r"^(\d+)_c(\d)")
    assert code == 1 and "matched none of the 4 paths" in err and "'val/018/01_1.jpg'" in err
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir,
                       "--layout", "(unclosed")
    assert code == 1 and "--layout '(unclosed' is not a valid regular expression" in err


def test_database_labels_on_an_out_index_are_refused_before_loading(capsys, model_dir, nested_gallery, tmp_path,
                                                                      monkeypatch):
    from modeling_aio.search import AIOSearcher

    monkeypatch.setattr(AIOSearcher, "from_pretrained", lambda *a, **k: pytest.fail("loaded before checking flags"))
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir,
                       "--source", "cam-7", "--timestamps", tmp_path / "t.csv")
    assert code == 2 and "--timestamps and --source label a database gallery (--db DB_URI)" in err
    assert not (tmp_path / "idx").exists()


def test_a_layout_that_misses_some_files_warns(model_dir, nested_gallery, tmp_path, config, processor):
    from modeling_aio.search import AIOSearcher

    searcher = AIOSearcher(AIOModel(config).eval(), processor, batch_size=2)
    with pytest.warns(UserWarning, match="matched 2 of 4 files"):
        searcher.index(nested_gallery, layout=r"(018)/")


def test_id_pattern_reads_relative_paths_and_refuses_one_that_matches_nothing(capsys, model_dir, nested_gallery,
                                                                              tmp_path):
    assert run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir)[0] == 0
    query = nested_gallery / "val" / "032" / "01_1.jpg"
    code, _, err = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "-k", "4",
                       "--id-pattern", r"^(\d+)_", "--query-id", "032")
    assert code == 1 and "--id-pattern '^(\\\\d+)_' matched none" in err and "val/" in err
    code, out, err = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "-k", "4",
                         "--id-pattern", r"(\d+)/\d+_\d+\.jpg", "--query-id", "032")
    assert code == 0, err
    verdicts = [line.split()[-1] for line in out.splitlines() if line.endswith(("match", "other"))]
    assert sorted(verdicts) == ["match", "match", "other", "other"]
    code, _, err = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "--query-id", "032")
    assert code == 2 and "--query-id needs person ids" in err


def test_exclude_query_leaves_the_query_image_out(capsys, model_dir, nested_gallery, tmp_path):
    assert run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir)[0] == 0
    query = nested_gallery / "val" / "018" / "02_3.jpg"
    code, out, _ = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "-k", "4")
    assert code == 0 and out.splitlines()[2].endswith("02_3.jpg")
    code, out, _ = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "-k", "4",
                       "--exclude-query")
    results = out.splitlines()[2:]
    assert code == 0 and len(results) == 3 and not any(line.endswith("018/02_3.jpg") for line in results)


def test_scores_rank_higher_first_and_name_their_kind_with_and_without_rerank(capsys, model_dir, nested_gallery,
                                                                              tmp_path):
    assert run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir)[0] == 0
    query = nested_gallery / "val" / "032" / "02_3.jpg"
    for flags, kind in (([], "cosine similarity"), (["--rerank"], "1 - re-ranked distance")):
        code, out, err = run(capsys, "search", tmp_path / "idx", "--rgb", query, "--model", model_dir, "-k", "4",
                             *flags)
        assert code == 0, err
        header, *rows = out.splitlines()[1:]
        assert f"({kind}, higher is better)" in header
        scores = [float(row.split()[1]) for row in rows]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0 and rows[0].endswith("032/02_3.jpg")


@pytest.mark.parametrize("k", ["0", "-1"])
def test_k_below_one_is_refused(capsys, tmp_path, k):
    code, _, err = run(capsys, "search", tmp_path / "idx", "--text", "a man", "-k", k)
    assert code == 2 and "-k must be at least 1" in err


def test_a_negative_rescore_depth_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, "search", tmp_path / "idx", "--text", "a man", "--rescore", "-1")
    assert code == 2 and "--rescore must be 0 or more" in err


def test_every_option_has_help_text():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"aio-reid {name} {action.option_strings or action.dest} has no help"


def test_a_missing_extra_is_named_at_once(capsys, model_dir, nested_gallery, tmp_path, monkeypatch):
    import importlib.util

    from modeling_aio.search import AIOSearcher

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    monkeypatch.setattr(AIOSearcher, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model first"))
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir)
    assert code == 2 and "pip install 'aio-reid[search]'" in err


def test_the_command_line_starts_without_torch_transformers_or_faiss():
    """What `aio-reid --help` imports (the figure is benchmarks/bench_cli_startup.py's, not a timed test)."""
    script = ("import sys; from aio_reid.cli import build_parser; build_parser().format_help(); "
              "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'modeling_aio', 'processing_aio') "
              "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_an_interrupted_index_says_how_to_resume(capsys, model_dir, nested_gallery, tmp_path, monkeypatch):
    from modeling_aio.search import AIOSearcher

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(AIOSearcher, "index", interrupted)
    code, _, err = run(capsys, "index", nested_gallery, "--out", tmp_path / "idx", "--model", model_dir)
    assert code == 130 and "run the same command again to resume" in err


def test_the_backends_offered_are_the_runtimes_the_package_has():
    from aio_reid.cli import BACKENDS
    from modeling_aio.export import BACKENDS as RUNTIMES

    assert BACKENDS == RUNTIMES


def test_an_int8_export_without_calibration_photos_or_a_gallery_encoder_is_refused(capsys, model_dir, tmp_path):
    pytest.importorskip("nncf")
    code, _, err = run(capsys, "export", "--model", model_dir, "--backend", "openvino-int8")
    assert code == 2 and "needs --calibration-images FOLDER" in err
    (tmp_path / "no-photos").mkdir()
    (tmp_path / "no-photos" / "notes.txt").write_text("not a photo")
    code, _, err = run(capsys, "export", "--model", model_dir, "--backend", "openvino-int8",
                       "--calibration-images", tmp_path / "no-photos")
    assert code == 1 and "no-photos holds no images" in err
    random_image(0).save(tmp_path / "no-photos" / "a.jpg")
    code, _, err = run(capsys, "export", "--model", model_dir, "--backend", "openvino-int8",
                       "--calibration-images", tmp_path / "no-photos")
    assert code == 1 and "has no RGB gallery encoder" in err
