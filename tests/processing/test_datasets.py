"""Each loader on a tiny fixture written in the dataset's own layout and naming, and on ../shared/data when present."""

from __future__ import annotations

import json
import warnings

import pytest

from processing_aio.datasets import UnreadableImagesWarning, load_reid_dataset

from conftest import SHARED_DATA, random_image, requires_shared_data


def put(root, relative, seed=0):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(seed, (16, 32)).save(path)
    return path


def rows(dataset):
    return [(r["modality"], r["person_id"], r["camera_id"], r["split"]) for r in dataset.remove_columns("image")
            .remove_columns("captions")]


def test_market1501(tmp_path):
    put(tmp_path, "bounding_box_train/0002_c1s1_000451_03.jpg")
    put(tmp_path, "query/0005_c3s1_000551_00.jpg")
    put(tmp_path, "bounding_box_test/-1_c2s1_000001_00.jpg")
    put(tmp_path, "bounding_box_test/0000_c6s1_000002_00.jpg")
    ds = load_reid_dataset("market1501", tmp_path)
    assert sorted(rows(ds)) == sorted([("rgb", "2", "1", "train"), ("rgb", "5", "3", "query"),
                                       ("rgb", "-1", "2", "gallery"), ("rgb", "0", "6", "gallery")])
    assert ds[0]["image"].size == (16, 32)


def test_dukemtmc_and_cuhk03(tmp_path):
    put(tmp_path / "duke", "bounding_box_train/0001_c2_f0046182.jpg")
    put(tmp_path / "duke", "query/0005_c8_f0000123.jpg")
    (tmp_path / "duke" / "bounding_box_test").mkdir()
    assert sorted(rows(load_reid_dataset("dukemtmc-reid", tmp_path / "duke"))) == [
        ("rgb", "1", "2", "train"), ("rgb", "5", "8", "query")]
    for split, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        put(tmp_path / "cuhk03" / "labeled", f"{folder}/0003_c1_{split}.png")
    assert len(load_reid_dataset("cuhk03", tmp_path / "cuhk03", variant="labeled")) == 3
    with pytest.raises(ValueError, match="detected"):
        load_reid_dataset("cuhk03", tmp_path / "cuhk03", variant="both")


def test_msmt17(tmp_path):
    put(tmp_path, "train/0000/0000_000_01_0303morning_0015_0.jpg")
    put(tmp_path, "test/0003/0003_012_07_0303noon_0120_1.jpg")
    (tmp_path / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n")
    (tmp_path / "list_val.txt").write_text("")
    (tmp_path / "list_query.txt").write_text("0003/0003_012_07_0303noon_0120_1.jpg 3\n")
    (tmp_path / "list_gallery.txt").write_text("")
    assert sorted(rows(load_reid_dataset("msmt17", tmp_path))) == [("rgb", "0", "1", "train"), ("rgb", "3", "7", "query")]


def test_viper(tmp_path):
    put(tmp_path, "cam_a/000_45.bmp")
    put(tmp_path, "cam_b/000_90.bmp")
    assert sorted(rows(load_reid_dataset("viper", tmp_path))) == [("rgb", "0", "a", "test"), ("rgb", "0", "b", "test")]


def test_sysu_mm01(tmp_path):
    put(tmp_path, "cam1/0001/0001.jpg")
    put(tmp_path, "cam3/0001/0002.jpg")
    put(tmp_path, "cam6/0002/0001.jpg")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "train_id.txt").write_text("1\n")
    (tmp_path / "exp" / "val_id.txt").write_text("")
    (tmp_path / "exp" / "test_id.txt").write_text("2,3\n")
    assert sorted(rows(load_reid_dataset("sysu-mm01", tmp_path))) == [
        ("ir", "1", "3", "train"), ("ir", "2", "6", "test"), ("rgb", "1", "1", "train")]


def test_regdb(tmp_path):
    put(tmp_path, "Visible/1/female_front_v_00001_1.bmp")
    put(tmp_path, "Thermal/1/female_front_t_00001_1.bmp")
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train_visible_2.txt").write_text("")
    (tmp_path / "idx" / "train_thermal_2.txt").write_text("")
    (tmp_path / "idx" / "test_visible_2.txt").write_text("Visible/1/female_front_v_00001_1.bmp 0\n")
    (tmp_path / "idx" / "test_thermal_2.txt").write_text("Thermal/1/female_front_t_00001_1.bmp 0\n")
    assert sorted(rows(load_reid_dataset("regdb", tmp_path, trial=2))) == [
        ("ir", "0", "thermal", "test"), ("rgb", "0", "visible", "test")]


def test_llcm(tmp_path):
    put(tmp_path, "test_vis/cam1/0001/0001_c01_s1_f1_vis.jpg")
    put(tmp_path, "test_nir/cam4/0001/0001_c04_s1_f1_nir.jpg")
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "test_vis.txt").write_text("test_vis/cam1/0001/0001_c01_s1_f1_vis.jpg 1\n")
    (tmp_path / "idx" / "test_nir.txt").write_text("test_nir/cam4/0001/0001_c04_s1_f1_nir.jpg 1\n")
    assert sorted(rows(load_reid_dataset("llcm", tmp_path, splits=("test",)))) == [
        ("ir", "1", "4", "test"), ("rgb", "1", "1", "test")]


def test_paired_visible_infrared(tmp_path):
    put(tmp_path, "visible/17_a.png")
    put(tmp_path, "infrared/17_a.png")
    assert sorted(rows(load_reid_dataset("paired-visible-infrared", tmp_path))) == [
        ("ir", "17", "infrared", "test"), ("rgb", "17", "visible", "test")]


def test_pku_sketch_and_market_sketch(tmp_path):
    put(tmp_path / "pku", "photo/1_05_356.jpg")
    put(tmp_path / "pku", "sketch/1.jpg")
    assert sorted(rows(load_reid_dataset("pku-sketch", tmp_path / "pku"))) == [
        ("rgb", "1", "05", "test"), ("sketch", "1", "sketch", "test")]
    put(tmp_path / "msk", "sketch/query/0002_A.jpg")
    put(tmp_path / "msk", "sketch/train/0004_C.jpg")
    put(tmp_path / "msk", "photo/gallery/0002_c2s1_000301_01.jpg")
    assert sorted(rows(load_reid_dataset("market-sketch-1k", tmp_path / "msk"))) == [
        ("rgb", "2", "2", "gallery"), ("sketch", "2", "A", "query"), ("sketch", "4", "C", "train")]


@pytest.mark.parametrize("name,annotation,path_key", [("cuhk-pedes", "reid_raw.json", "file_path"),
                                                       ("icfg-pedes", "ICFG-PEDES.json", "file_path"),
                                                       ("rstpreid", "data_captions.json", "img_path")])
def test_caption_datasets(tmp_path, name, annotation, path_key):
    put(tmp_path, "imgs/test/p1.jpg")
    put(tmp_path, "imgs/train/p2.jpg")
    entries = [{"split": "test", "captions": ["a man in red", "red shirt"], path_key: "test/p1.jpg", "id": 11},
               {"split": "train", "captions": ["a woman"], path_key: "train/p2.jpg", "id": 12}]
    (tmp_path / annotation).write_text(json.dumps(entries))
    ds = load_reid_dataset(name, tmp_path, splits=("test",))
    assert len(ds) == 1 and ds[0]["captions"] == ["a man in red", "red shirt"] and ds[0]["person_id"] == "11"


def test_pooled_index_and_two_camera(tmp_path):
    put(tmp_path / "pool", "imgs/Market/0002_c1s1_000451_03.jpg")
    (tmp_path / "pool" / "index.csv").write_text(
        "image,source,person_id,camera,pedes_split,pedes_id,captions\n"
        'imgs/Market/0002_c1s1_000451_03.jpg,market1501,market1501:0002,c1,val,5,"[""a man""]"\n')
    ds = load_reid_dataset("pooled", tmp_path / "pool")
    assert rows(ds) == [("rgb", "market1501:0002", "c1", "val")] and ds[0]["captions"] == ["a man"]
    put(tmp_path / "two", "images/train/003/02_5.jpg")
    assert rows(load_reid_dataset("two-camera", tmp_path / "two", splits=("train",))) == [("rgb", "003", "02", "train")]


def test_unreadable_files_are_reported_not_dropped_silently(tmp_path):
    put(tmp_path, "photo/1_05_356.jpg")
    (tmp_path / "photo" / "2_05_1.jpg").write_bytes(b"")
    (tmp_path / "sketch").mkdir()
    (tmp_path / "sketch" / "1.jpg").write_bytes(b"garbage that is not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_reid_dataset("pku-sketch", tmp_path)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadableImagesWarning)]
    assert len(ds) == 1 and messages and "2 of 3" in messages[0]
    assert "2_05_1.jpg: empty file" in messages[0] and "1.jpg: not a readable image" in messages[0]
    assert len(json.loads(ds.info.description)["unreadable"]) == 2
    with pytest.raises(ValueError, match="unreadable"):
        load_reid_dataset("pku-sketch", tmp_path, on_error="raise")


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'mars'"):
        load_reid_dataset("mars", tmp_path)
    with pytest.raises(FileNotFoundError, match="Market-1501 root"):
        load_reid_dataset("market1501", tmp_path / "nowhere")


@pytest.mark.slow
@requires_shared_data
def test_real_folders_in_shared_data():
    pku = load_reid_dataset("pku-sketch", SHARED_DATA / "PKUSketchRE-ID_V1")
    modalities = pku["modality"]
    assert modalities.count("sketch") == 148 and modalities.count("rgb") == 300
    pedes = load_reid_dataset("cuhk-pedes", SHARED_DATA / "CUHK-PEDES")
    assert len(pedes) == 2968 and sum(len(c) for c in pedes["captions"]) == 5938
    two = load_reid_dataset("two-camera", SHARED_DATA / "pku_reid")
    assert len(two) == 1184 and len(set(two["person_id"])) == 74
    pooled = load_reid_dataset("pooled", SHARED_DATA / "CUHK-PEDES", splits=("val",))
    assert len(pooled) == 2968


def test_a_truncated_jpeg_or_png_is_reported_not_loaded(tmp_path):
    """A cut-short JPEG passes `PIL.verify()`; the loader decodes files without their end marker."""
    for name in ("0001_c1s1_000001_00.jpg", "0002_c1s1_000001_00.jpg", "0003_c2s1_000001_00.png"):
        put(tmp_path, f"bounding_box_train/{name}")
    for name in ("0002_c1s1_000001_00.jpg", "0003_c2s1_000001_00.png"):
        path = tmp_path / "bounding_box_train" / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.warns(UnreadableImagesWarning, match="2 of 3 files"):
        ds = load_reid_dataset("market1501", tmp_path, splits=("train",))
    assert len(ds) == 1


@pytest.mark.parametrize("entries, message", [
    ("{not json", "is not valid JSON"),
    ('[{"split": "test", "captions": ["a man"], "id": 1}]', r"entry 0 lacks \['file_path'\]"),
    ('[{"split": "test", "captions": ["a man"], "file_path": "/etc/passwd", "id": 1}]', "points outside"),
    ('[{"split": "test", "captions": ["a man"], "file_path": "../../x.jpg", "id": 1}]', "points outside"),
])
def test_malformed_caption_files_name_the_file_and_field(tmp_path, entries, message):
    put(tmp_path, "imgs/test/p1.jpg")
    (tmp_path / "reid_raw.json").write_text(entries)
    with pytest.raises(ValueError, match=message):
        load_reid_dataset("cuhk-pedes", tmp_path)


def test_an_unknown_split_is_named(tmp_path):
    put(tmp_path, "bounding_box_train/0001_c1s1_000001_00.jpg")
    with pytest.raises(ValueError, match=r"unknown splits \['val'\]"):
        load_reid_dataset("market1501", tmp_path, splits=("val",))
