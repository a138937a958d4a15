"""The bad-input sweep, dataset folders and the evaluation script: what `processing_aio.datasets` loaders and
`scripts/evaluate_reid.py` (`modeling_aio.evaluation.runner.run`) do with broken dataset folders, annotation files and
arguments. Errors name the file, entry, field or option (`test_error_*`); a bad image is reported and left out, and
evaluation goes on without it (`test_recovery_*`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from modeling_aio.evaluation.runner import run
from processing_aio.datasets import UnreadableImagesWarning, load_reid_dataset

from conftest import foreign_checkpoint, random_image, write

MARKET = [("bounding_box_train", "0002_c1s1_000451_03.jpg"), ("query", "0005_c1s1_000551_00.jpg"),
          ("query", "0006_c1s1_000551_00.jpg"), ("bounding_box_test", "0005_c2s1_000001_00.jpg"),
          ("bounding_box_test", "0006_c2s1_000002_00.jpg"), ("bounding_box_test", "0007_c2s1_000003_00.jpg")]


def market(root: Path) -> Path:
    for number, (folder, name) in enumerate(MARKET):
        (root / folder).mkdir(parents=True, exist_ok=True)
        random_image(number, (20, 44)).save(root / folder / name)
    return root


def pedes(root: Path, entries) -> Path:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    random_image(0, (20, 44)).save(root / "imgs" / "a.jpg")
    (root / "reid_raw.json").write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return root


GOOD_ENTRY = {"file_path": "a.jpg", "id": 1, "split": "train", "captions": ["a man in red"]}

LOADER_ERRORS = {
    "root missing": (lambda r: ("market1501", r / "nowhere", {}), r"Market-1501 root .*nowhere does not exist"),
    "root is a file": (lambda r: ("market1501", market(r) / "query" / "0005_c1s1_000551_00.jpg", {}),
                       r"0005_c1s1_000551_00.jpg"),
    "unknown dataset": (lambda r: ("market-1502", r, {}), r"Unknown dataset 'market-1502'; known:"),
    "a split folder missing": (lambda r: ("market1501", rm(market(r) / "query"), {}), r"expected folder .*query is missing"),
    "an unknown split": (lambda r: ("market1501", market(r), {"splits": ("val",)}), r"unknown splits \['val'\]"),
    "a file name off the dataset's naming": (lambda r: ("market1501", put(market(r), "query/holiday.jpg"), {}),
                                             r"holiday.jpg does not follow"),
    "an empty dataset folder": (lambda r: ("market1501", empty_market(r), {}), r"no readable images found"),
    "caption file not JSON": (lambda r: ("cuhk-pedes", pedes(r, "[{"), {}), r"reid_raw.json is not valid JSON"),
    "caption file not a list": (lambda r: ("cuhk-pedes", pedes(r, {"a": 1}), {}), r"reid_raw.json must hold a list"),
    "caption entry without file_path": (lambda r: ("cuhk-pedes", pedes(r, [{"id": 1, "captions": ["x"]}]), {}),
                                        r"reid_raw.json: entry 0 lacks \[.*'file_path'"),
    "caption path absolute": (lambda r: ("cuhk-pedes", pedes(r, [{**GOOD_ENTRY, "file_path": "/etc/passwd"}]), {}),
                              r"entry 0 file_path '/etc/passwd' points outside"),
    "caption path with ..": (lambda r: ("cuhk-pedes", pedes(r, [{**GOOD_ENTRY, "file_path": "../../x.jpg"}]), {}),
                             r"entry 0 file_path '../../x.jpg' points outside"),
    "RegDB trial 11": (lambda r: ("regdb", r, {"trial": 11}), r"RegDB trial must be 1..10, got 11"),
    "CUHK03 variant unknown": (lambda r: ("cuhk03", r, {"variant": "raw"}), r"variant must be 'detected' or 'labeled'"),
    "on_error unknown": (lambda r: ("market1501", market(r), {"on_error": "ignore"}), r"on_error must be 'report' or"),
}


def rm(path: Path) -> Path:
    import shutil

    shutil.rmtree(path)
    return path.parent


def put(root: Path, relative: str) -> Path:
    random_image(99, (20, 44)).save(root / relative)
    return root


def empty_market(root: Path) -> Path:
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    return root


@pytest.mark.parametrize("case", list(LOADER_ERRORS))
def test_error_dataset_folder(tmp_path, case):
    """error naming the root, folder, file, entry or option"""
    make, message = LOADER_ERRORS[case]
    name, root, kwargs = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError, NotADirectoryError), match=message):
        load_reid_dataset(name, root, **kwargs)


BAD_FILES = {
    "truncated JPEG": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "0-byte file": lambda p: p.write_bytes(b""),
    "text named .jpg": lambda p: p.write_text("not an image"),
    "1x1 image": lambda p: random_image(1, (1, 1)).save(p, format="JPEG"),
}


@pytest.mark.parametrize("damage", list(BAD_FILES))
def test_recovery_bad_image_in_a_dataset(tmp_path, damage):
    """reported by name (a warning) and left out; the other images load; on_error='raise' makes it an error"""
    root = market(tmp_path)
    bad = root / "bounding_box_test" / "0007_c2s1_000003_00.jpg"
    BAD_FILES[damage](bad)
    with pytest.warns(UnreadableImagesWarning, match="0007_c2s1_000003_00.jpg"):
        dataset = load_reid_dataset("market1501", root)
    assert len(dataset) == len(MARKET) - 1
    with pytest.raises(ValueError, match="0007_c2s1_000003_00.jpg"):
        load_reid_dataset("market1501", root, on_error="raise")


def arguments(tmp_path: Path, checkpoint: Path, **changes) -> argparse.Namespace:
    values = dict(model=str(checkpoint), dataset="market1501", root=market(tmp_path / "market"), query_modalities=None,
                  trials=1, split_file=None, exclude_anchor=False, sysu_mode="all", direction=None, batch_size=4,
                  cache_dir=tmp_path / "cache", output=tmp_path / "out" / "result.json")
    values.update(changes)
    return argparse.Namespace(**values)


EVALUATION_ERRORS = {
    "--model missing": (lambda t, m: {"model": str(t / "no-model")}, r"no-model"),
    "--model of another model type": (lambda t, m: {"model": str(foreign_checkpoint(t, m))}, r"config.json is for model type"),
    "--root missing": (lambda t, m: {"root": t / "nowhere"}, r"nowhere does not exist"),
    "--dataset unknown": (lambda t, m: {"dataset": "market-1502"}, r"Unknown dataset 'market-1502'"),
    "--query-modalities unknown": (lambda t, m: {"query_modalities": "thermal"}, r"unknown query modalities"),
    "--split-file missing": (lambda t, m: {"split_file": t / "split.json"}, r"split.json"),
    "--split-file not JSON": (lambda t, m: {"split_file": write(t / "split.json", "{ids: [1")},
                              r"split.json is not valid JSON"),
    "--split-file for another dataset": (lambda t, m: {"split_file": write(t / "split.json", "{}")},
                                         r"--split-file applies to"),
    "--split-file without the ids it needs": (lambda t, m: {"dataset": "pku-sketch", "root": pku(t),
                                                            "split_file": write(t / "split.json", "{}")},
                                              r"split.json lacks 'pku_sketch_test_ids'"),
    "--trials 0": (lambda t, m: {"trials": 0}, r"--trials must be at least 1"),
    "--batch-size 0": (lambda t, m: {"batch_size": 0}, r"--batch-size must be at least 1"),
}


def pku(tmp_path: Path) -> Path:
    root = tmp_path / "pku"
    for folder, name in (("photo", "1_1.jpg"), ("sketch", "1.jpg")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        random_image(3, (20, 44)).save(root / folder / name)
    return root


@pytest.mark.parametrize("case", list(EVALUATION_ERRORS))
def test_error_evaluation_arguments(tmp_path, model_dir, case):
    """refused before embedding anything: `error:` naming the option or file, exit 1, no result written"""
    change, message = EVALUATION_ERRORS[case]
    with pytest.raises(SystemExit) as caught:
        run(arguments(tmp_path, model_dir, **change(tmp_path, model_dir)))
    assert str(caught.value).startswith("error:"), caught.value
    assert __import__("re").search(message, str(caught.value)), caught.value
    assert not (tmp_path / "out" / "result.json").exists()


def test_recovery_evaluation_with_a_bad_gallery_image(tmp_path, model_dir):
    """the bad image is reported by name and left out; the evaluation finishes and writes its result"""
    args = arguments(tmp_path, model_dir)
    (args.root / "bounding_box_test" / "0007_c2s1_000003_00.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    with pytest.warns(UnreadableImagesWarning, match="0007_c2s1_000003_00.jpg"):
        result = run(args)
    assert json.loads(args.output.read_text())["metrics"] == result["metrics"]
    assert 0 <= result["metrics"]["mAP"] <= 100
