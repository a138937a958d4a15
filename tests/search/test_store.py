"""Database galleries (modeling_aio.search.store, on a real embedded LanceDB): camera / time / source filters,
incremental adds, deletes, interrupt-and-resume, and a gallery embedded by another model refused."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest

pytest.importorskip("lancedb")

from aio_reid import cli
from modeling_aio import AIOModel
from modeling_aio.search import AIOSearcher, GalleryFilter, GalleryStore

from conftest import interrupt_embedding_at, random_image, tiny_config

LAYOUT = r"(?P<id>\d+)_c(?P<camera>\d+)_(?P<time>\d{8}T\d{6})\.jpg"


@pytest.fixture
def footage(tmp_path):
    """Six people seen by cameras 1-3 at 14:00, 14:30 and 15:00 on 2026-12-01 (from the file names)."""
    folder = tmp_path / "footage"
    folder.mkdir()
    for person in range(6):
        camera, minute = person % 3 + 1, (person % 3) * 30
        moment = dt.datetime(2026, 12, 1, 14) + dt.timedelta(minutes=minute)
        random_image(400 + person, (20, 44)).save(folder / f"{person:03d}_c{camera}_{moment:%Y%m%dT%H%M%S}.jpg")
    return folder


def test_filters_keep_only_the_cameras_times_and_sources_asked_for(searcher, footage, tmp_path):
    store, added, failures = searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT, source="street")
    assert (added, failures, len(store)) == (6, [], 6)
    query = str(footage / "000_c1_20261201T140000.jpg")
    everything = searcher.search(store, k=10, rgb=query)
    assert len(everything) == 6 and everything[0].path.endswith("000_c1_20261201T140000.jpg")
    assert everything[0].score == pytest.approx(1.0, abs=1e-4)
    cameras = searcher.search(store, k=10, rgb=query, filters=GalleryFilter(cameras=["2", "3"]))
    assert sorted(h.camera for h in cameras) == ["2", "2", "3", "3"]
    window = GalleryFilter(after=dt.datetime(2026, 12, 1, 14, 15), before=dt.datetime(2026, 12, 1, 14, 45))
    assert {h.timestamp for h in searcher.search(store, k=10, rgb=query, filters=window)} == {
        dt.datetime(2026, 12, 1, 14, 30)}
    assert searcher.search(store, k=10, rgb=query, filters=GalleryFilter(sources=["elsewhere"])) == []
    exact = [h.path for h in everything if h.camera in ("2", "3")]
    assert [h.path for h in cameras] == exact  # the filtered ranking is the full ranking, filtered


def test_incremental_add_stores_new_files_once(searcher, footage, tmp_path):
    searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT)
    random_image(999, (20, 44)).save(footage / "010_c2_20261201T160000.jpg")
    store, added, _ = searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT)
    assert added == 1 and len(store) == 7 and len(store.paths()) == 7


def test_delete_by_time_and_source(searcher, footage, tmp_path):
    store, _, _ = searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT, source="street")
    assert store.delete(GalleryFilter(before=dt.datetime(2026, 12, 1, 14, 30))) == 2
    assert len(store) == 4
    assert store.delete(GalleryFilter(sources=["street"])) == 4 and len(store) == 0
    with pytest.raises(ValueError, match="delete needs a selection"):
        store.delete(GalleryFilter())


def test_an_interrupted_index_resumes_to_what_a_clean_run_stores(searcher, footage, tmp_path, monkeypatch):
    clean, _, _ = searcher.index_into_store(footage, tmp_path / "clean", layout=LAYOUT)
    interrupt_embedding_at(searcher, monkeypatch, call=2)
    with pytest.raises(KeyboardInterrupt):
        searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT)
    assert len(GalleryStore.open(tmp_path / "db")) == 2  # the first chunk's commit, nothing half-written
    monkeypatch.undo()
    resumed, added, _ = searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT)
    assert added == 4 and resumed.paths() == clean.paths()
    query = np.ones(16, np.float32) / 4
    assert [r["path"] for r in resumed.search(query, 6)] == [r["path"] for r in clean.search(query, 6)]


def test_a_gallery_of_another_model_is_refused(searcher, footage, processor, tmp_path):
    searcher.index_into_store(footage, tmp_path / "db", layout=LAYOUT)
    other = AIOSearcher(AIOModel(tiny_config()).eval(), processor, batch_size=2)
    with pytest.raises(ValueError, match="was embedded by model"):
        other.index_into_store(footage, tmp_path / "db")
    with pytest.raises(ValueError, match="was embedded by model"):
        other.search(GalleryStore.open(tmp_path / "db"), k=3, text="a man in red")


def test_timestamps_come_from_a_sidecar_csv_or_the_file_time(searcher, footage, tmp_path):
    (tmp_path / "times.csv").write_text("path,timestamp,camera\n000_c1_20261201T140000.jpg,2026-11-30T08:00,9\n")
    os.utime(footage / "001_c2_20261201T143000.jpg", (0, 1_764_000_000))
    store, _, _ = searcher.index_into_store(footage, tmp_path / "db", timestamps=tmp_path / "times.csv")
    rows = {r["path"].rsplit("/", 1)[1]: r for r in store.search(np.ones(16, np.float32) / 4, 6)}
    assert rows["000_c1_20261201T140000.jpg"]["timestamp"] == dt.datetime(2026, 11, 30, 8)
    assert rows["000_c1_20261201T140000.jpg"]["camera"] == "9"
    assert rows["001_c2_20261201T143000.jpg"]["timestamp"] == dt.datetime.fromtimestamp(1_764_000_000, dt.timezone.utc
                                                                                        ).replace(tzinfo=None)
    (tmp_path / "bad.csv").write_text("file,when\n")
    with pytest.raises(ValueError, match="bad.csv needs a header with columns path,timestamp"):
        searcher.index_into_store(footage, tmp_path / "db2", timestamps=tmp_path / "bad.csv")


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line_indexes_filters_and_deletes(capsys, model_dir, footage, tmp_path):
    db = tmp_path / "db"
    code, out, err = run(capsys, "index", footage, "--db", db, "--model", model_dir, "--layout", LAYOUT)
    assert code == 0 and "added 6 images" in out, err
    code, out, err = run(capsys, "search", db, "--rgb", footage / "000_c1_20261201T140000.jpg", "--camera", "2,3",
                         "--after", "2026-12-01T14:15", "--model", model_dir)
    assert code == 0, err
    results = [line for line in out.splitlines() if "camera" in line and line.strip()[0].isdigit()]
    assert len(results) == 4 and all("camera 2 at 2026-12-01T14:30" in r or "camera 3 at 2026-12-01T15:00" in r
                                     for r in results)
    code, out, err = run(capsys, "delete", db, "--before", "2026-12-01T14:30")
    assert code == 0 and "deleted 2 entries" in out and "it holds 4" in out, err
    code, _, err = run(capsys, "search", tmp_path / "idx-none", "--text", "a man", "--camera", "1", "--model", model_dir)
    assert code == 1 and "not a complete aio-reid index" in err
    code, _, err = run(capsys, "search", db, "--text", "a man", "--after", "yesterday", "--model", model_dir)
    assert code == 1 and "--after 'yesterday' is not an ISO 8601" in err
    code, _, err = run(capsys, "delete", db)
    assert code == 2 and "give at least one of --before" in err


@pytest.mark.slow
def test_the_same_commands_run_against_an_s3_uri(capsys, model_dir, footage, monkeypatch):
    """Scale-out storage: the README's commands with `--db s3://...`, against moto's S3 server on this machine."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    from conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        credentials = dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket="galleries")
        for name, value in {**credentials, "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}.items():
            monkeypatch.setenv(name, value)
        uri = "s3://galleries/lobby"
        code, out, err = run(capsys, "index", footage, "--db", uri, "--model", model_dir, "--layout", LAYOUT)
        assert code == 0 and "added 6 images" in out, err
        code, out, err = run(capsys, "index", footage, "--db", uri, "--model", model_dir, "--layout", LAYOUT)
        assert code == 0 and "added 0 images" in out and "it holds 6" in out, err
        code, out, err = run(capsys, "search", uri, "--rgb", footage / "000_c1_20261201T140000.jpg", "--camera", "1",
                             "--model", model_dir)
        assert code == 0 and len([line for line in out.splitlines() if "camera 1 at" in line]) == 2, err
        code, out, err = run(capsys, "delete", uri, "--camera", "1")
        assert code == 0 and "deleted 2 entries" in out and "it holds 4" in out, err
    finally:
        server.stop()
