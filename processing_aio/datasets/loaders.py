"""Loaders that read ReID datasets from their own on-disk layouts into `datasets.Dataset`.

Every loader returns the same columns: `image` (`datasets.Image`, decoded lazily), `modality` (rgb / ir / sketch),
`person_id` (string, prefixed by nothing: the dataset's own id), `camera_id` (string, "" where unknown), `captions`
(list of strings, empty where the dataset has none) and `split` (train / query / gallery / test / val).
Files that cannot be opened as images are reported (a warning listing them, or an error with `on_error="raise"`),
never silently dropped.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import datasets
from PIL import Image, UnidentifiedImageError

FEATURES = datasets.Features({
    "image": datasets.Image(),
    "modality": datasets.Value("string"),
    "person_id": datasets.Value("string"),
    "camera_id": datasets.Value("string"),
    "captions": datasets.Sequence(datasets.Value("string")),
    "split": datasets.Value("string"),
})
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class UnreadableImagesWarning(UserWarning):
    pass


def _record(path: Path, modality: str, person_id, camera_id="", split="", captions=()) -> dict:
    return {"image": str(path), "modality": modality, "person_id": str(person_id), "camera_id": str(camera_id),
            "captions": list(captions), "split": split}


MIN_SIDE = 8  # the smallest image AIOProcessor takes (`image_processing_aio.load_image`)


def _readable(path: Path) -> str | None:
    """None if `path` decodes as an image of at least MIN_SIDE pixels a side, else the reason. A file whose JPEG / PNG end marker is missing (a cut
    short file passes `verify()`) is decoded in full to decide; others are verified."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as handle, Image.open(handle) as image:
            if min(image.size) < MIN_SIDE:
                return f"{image.size[0]}x{image.size[1]} px is too small (each side must be >= {MIN_SIDE} px)"
            if _has_end_marker(handle, image.format):
                image.verify()
            else:
                handle.seek(0)
                Image.open(handle).load()
        return None
    except FileNotFoundError:
        return "file does not exist"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error})"


def _has_end_marker(handle, image_format: str | None) -> bool:
    """Whether a JPEG ends with its EOI marker or a PNG with its IEND chunk (other formats: True); leaves the
    file where it was."""
    position = handle.tell()
    size = handle.seek(0, 2)
    handle.seek(max(0, size - 16))
    tail = handle.read()
    handle.seek(position)
    if image_format == "JPEG":
        return tail.rstrip(b"\x00").endswith(b"\xff\xd9")
    if image_format == "PNG":
        return b"IEND" in tail
    return True


def records_to_dataset(records: list[dict], name: str, on_error: str = "report") -> datasets.Dataset:
    """Checks every file, reports the unreadable ones and builds the Dataset from the rest."""
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}.")
    good, bad = [], []
    for record in records:
        reason = _readable(Path(record["image"]))
        (bad.append((record["image"], reason)) if reason else good.append(record))
    if bad:
        listing = "\n".join(f"  {path}: {reason}" for path, reason in bad[:50])
        message = f"{name}: {len(bad)} of {len(records)} files are unreadable and left out:\n{listing}"
        if on_error == "raise":
            raise ValueError(message)
        warnings.warn(message, UnreadableImagesWarning, stacklevel=3)
    if not good:
        raise ValueError(f"{name}: no readable images found.")
    dataset = datasets.Dataset.from_list(good, features=FEATURES)
    dataset.info.description = json.dumps({"dataset": name, "unreadable": bad})
    return dataset


def image_paths(dataset: datasets.Dataset) -> list[str]:
    """The file path of every row, without decoding any image."""
    return [record["path"] for record in dataset.cast_column("image", datasets.Image(decode=False))["image"]]


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"expected folder {folder} is missing; is the dataset root right?")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require(root: Path, name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name} root {root} does not exist.")
    return root


# --- Market-1501 family ------------------------------------------------------------------------------------------

MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _market_style(root: Path, name: str, pattern: str, splits: Iterable[str], on_error: str) -> datasets.Dataset:
    regex = re.compile(pattern)
    records = []
    unknown = [split for split in splits if split not in MARKET_SPLITS]
    if unknown:
        raise ValueError(f"{name}: unknown splits {unknown}; this dataset has {sorted(MARKET_SPLITS)}.")
    for split in splits:
        for path in _images(root / MARKET_SPLITS[split]):
            match = regex.match(path.name)
            if not match:
                raise ValueError(f"{name}: file name {path.name} does not follow the dataset's naming.")
            records.append(_record(path, "rgb", int(match.group(1)), int(match.group(2)), split))
    return records_to_dataset(records, name, on_error)


def load_market1501(root, splits=("train", "query", "gallery"), on_error="report") -> datasets.Dataset:
    """Market-1501: `bounding_box_train/`, `query/`, `bounding_box_test/`, files `PPPP_cCsS_FFFFFF_BB.jpg`
    (person id -1 = junk, 0000 = distractor)."""
    return _market_style(_require(root, "Market-1501"), "Market-1501", r"(-?\d+)_c(\d)s\d_", splits, on_error)


def load_dukemtmc_reid(root, splits=("train", "query", "gallery"), on_error="report") -> datasets.Dataset:
    """DukeMTMC-reID: Market layout, files `PPPP_cC_fFFFFFFF.jpg`."""
    return _market_style(_require(root, "DukeMTMC-reID"), "DukeMTMC-reID", r"(\d+)_c(\d+)_", splits, on_error)


def load_cuhk03(root, variant="detected", splits=("train", "query", "gallery"), on_error="report") -> datasets.Dataset:
    """CUHK03, new protocol (CUHK03-NP, Zhong et al. 2017): `detected/` or `labeled/` each in the Market layout,
    files `PPPP_cC_N.png`."""
    if variant not in ("detected", "labeled"):
        raise ValueError(f"CUHK03 variant must be 'detected' or 'labeled', got {variant!r}.")
    return _market_style(_require(Path(root) / variant, f"CUHK03-{variant}"), f"CUHK03-{variant}",
                         r"(\d+)_c(\d)_", splits, on_error)


def load_msmt17(root, splits=("train", "query", "gallery"), on_error="report") -> datasets.Dataset:
    """MSMT17 (V1): `list_{train,val,query,gallery}.txt` with lines `PPPP/PPPP_SSS_CC_....jpg LABEL`, images under
    `train/` (train, val) and `test/` (query, gallery); the camera is the third field of the file name."""
    root = _require(root, "MSMT17")
    lists = {"train": ("list_train.txt", "train"), "val": ("list_val.txt", "train"),
             "query": ("list_query.txt", "test"), "gallery": ("list_gallery.txt", "test")}
    records = []
    for split in splits:
        list_name, folder = lists[split]
        for line in (root / list_name).read_text().splitlines():
            if not line.strip():
                continue
            relative, label = line.split()
            camera = Path(relative).name.split("_")[2]
            records.append(_record(root / folder / relative, "rgb", int(label), int(camera), split))
    return records_to_dataset(records, "MSMT17", on_error)


def load_viper(root, on_error="report") -> datasets.Dataset:
    """VIPeR: `cam_a/` and `cam_b/`, files `III_AAA.bmp` where III is the person (632 people, one image per
    camera); every image is `test` (the protocol draws random halves)."""
    root = _require(root, "VIPeR")
    records = [_record(path, "rgb", int(path.stem.split("_")[0]), camera, "test")
               for camera in ("a", "b") for path in _images(root / f"cam_{camera}")]
    return records_to_dataset(records, "VIPeR", on_error)


# --- Visible-infrared ---------------------------------------------------------------------------------------------

SYSU_IR_CAMERAS = (3, 6)


def load_sysu_mm01(root, splits=("train", "val", "test"), on_error="report") -> datasets.Dataset:
    """SYSU-MM01: `cam1/..cam6/PPPP/NNNN.jpg`, cameras 3 and 6 infrared; `exp/{train,val,test}_id.txt` hold
    comma-separated person ids of each split."""
    root = _require(root, "SYSU-MM01")
    records = []
    for split in splits:
        ids = [int(x) for x in re.split(r"[,\s]+", (root / "exp" / f"{split}_id.txt").read_text().strip()) if x]
        for camera in range(1, 7):
            modality = "ir" if camera in SYSU_IR_CAMERAS else "rgb"
            for pid in ids:
                folder = root / f"cam{camera}" / f"{pid:04d}"
                if folder.is_dir():
                    records += [_record(p, modality, pid, camera, split) for p in _images(folder)]
    return records_to_dataset(records, "SYSU-MM01", on_error)


def load_regdb(root, trial: int = 1, on_error="report") -> datasets.Dataset:
    """RegDB: `Visible/PID/*.bmp`, `Thermal/PID/*.bmp` and the official trial lists
    `idx/{train,test}_{visible,thermal}_{trial}.txt` (lines `Visible/PID/NAME.bmp LABEL`), trials 1..10."""
    root = _require(root, "RegDB")
    if not 1 <= trial <= 10:
        raise ValueError(f"RegDB trial must be 1..10, got {trial}.")
    records = []
    for split in ("train", "test"):
        for spectrum, modality, camera in (("visible", "rgb", "visible"), ("thermal", "ir", "thermal")):
            for line in (root / "idx" / f"{split}_{spectrum}_{trial}.txt").read_text().splitlines():
                if line.strip():
                    relative, label = line.split()
                    records.append(_record(root / relative, modality, int(label), camera, split))
    return records_to_dataset(records, f"RegDB-trial{trial}", on_error)


def load_llcm(root, splits=("train", "test"), on_error="report") -> datasets.Dataset:
    """LLCM: `idx/{train,test}_{vis,nir}.txt` with lines `PATH LABEL`, PATH relative to the root and containing
    a `camN` folder (e.g. `test_nir/cam4/0001/0001_c04_....jpg`); `nir` lists are infrared."""
    root = _require(root, "LLCM")
    records = []
    for split in splits:
        for spectrum, modality in (("vis", "rgb"), ("nir", "ir")):
            for line in (root / "idx" / f"{split}_{spectrum}.txt").read_text().splitlines():
                if not line.strip():
                    continue
                relative, label = line.split()
                camera = re.search(r"cam(\d+)", relative)
                records.append(_record(root / relative, modality, int(label), camera.group(1) if camera else "", split))
    return records_to_dataset(records, "LLCM", on_error)


def load_paired_visible_infrared(root, on_error="report") -> datasets.Dataset:
    """A generic paired folder: `visible/NAME` and `infrared/NAME` show the same person; the person id is the part
    of NAME before the first `_` (or the whole stem). Unpaired files are still loaded."""
    root = _require(root, "paired visible/infrared folder")
    records = []
    for folder, modality in (("visible", "rgb"), ("infrared", "ir")):
        for path in _images(root / folder):
            records.append(_record(path, modality, path.stem.split("_")[0], folder, "test"))
    return records_to_dataset(records, "paired-visible-infrared", on_error)


# --- Sketch --------------------------------------------------------------------------------------------------------


def load_pku_sketch(root, on_error="report") -> datasets.Dataset:
    """PKU-Sketch: `photo/PID_CAM_FRAME.jpg` (two cameras per person) and `sketch/PID.jpg`."""
    root = _require(root, "PKU-Sketch")
    records = []
    for path in _images(root / "photo"):
        pid, camera = path.stem.split("_")[:2]
        records.append(_record(path, "rgb", int(pid), camera, "test"))
    for path in _images(root / "sketch"):
        records.append(_record(path, "sketch", int(path.stem), "sketch", "test"))
    return records_to_dataset(records, "PKU-Sketch", on_error)


def load_market_sketch_1k(root, splits=("train", "query"), on_error="report") -> datasets.Dataset:
    """Market-Sketch-1K (Lin et al., ACM MM 2023): `sketch/{train,query}/PPPP_ARTIST.jpg` (several artists per
    person; the artist is stored as the camera) and the Market-1501 photos under `photo/{train,query,gallery}/`
    with Market naming."""
    root = _require(root, "Market-Sketch-1K")
    records = []
    for split in splits:
        for path in _images(root / "sketch" / split):
            pid, artist = path.stem.split("_")[:2]
            records.append(_record(path, "sketch", int(pid), artist, split))
    for split in ("train", "query", "gallery"):
        folder = root / "photo" / split
        if folder.is_dir():
            for path in _images(folder):
                match = re.match(r"(-?\d+)_c(\d)", path.name)
                if not match:
                    raise ValueError(f"Market-Sketch-1K: photo {path.name} does not follow Market-1501 naming.")
                records.append(_record(path, "rgb", int(match.group(1)), int(match.group(2)), split))
    return records_to_dataset(records, "Market-Sketch-1K", on_error)


# --- Text ----------------------------------------------------------------------------------------------------------


def _caption_json(root: Path, annotation: str, name: str, path_key: str, image_folder: str, splits,
                  on_error: str) -> datasets.Dataset:
    file = root / annotation
    try:
        entries = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error}).") from None
    if not isinstance(entries, list):
        raise ValueError(f"{file} must hold a list of entries, got {type(entries).__name__}.")
    images = (root / image_folder).resolve()
    records = []
    for number, entry in enumerate(entries):
        missing = [key for key in ("split", "captions", path_key, "id") if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise ValueError(f"{file}: entry {number} lacks {missing}.")
        if splits is not None and entry["split"] not in splits:
            continue
        captions = entry["captions"]
        if isinstance(captions, str):
            captions = [captions]
        path = root / image_folder / entry[path_key]
        if not path.resolve().is_relative_to(images):
            raise ValueError(f"{file}: entry {number} {path_key} {entry[path_key]!r} points outside {images}.")
        records.append(_record(path, "rgb", entry["id"], "", entry["split"], captions))
    return records_to_dataset(records, name, on_error)


def load_cuhk_pedes(root, splits=None, on_error="report") -> datasets.Dataset:
    """CUHK-PEDES: `reid_raw.json` (a list of {split, captions, file_path, id}) with images under `imgs/`."""
    return _caption_json(_require(root, "CUHK-PEDES"), "reid_raw.json", "CUHK-PEDES", "file_path", "imgs", splits,
                         on_error)


def load_icfg_pedes(root, splits=None, on_error="report") -> datasets.Dataset:
    """ICFG-PEDES: `ICFG-PEDES.json` (the CUHK-PEDES fields) with images under `imgs/`."""
    return _caption_json(_require(root, "ICFG-PEDES"), "ICFG-PEDES.json", "ICFG-PEDES", "file_path", "imgs", splits,
                         on_error)


def load_rstpreid(root, splits=None, on_error="report") -> datasets.Dataset:
    """RSTPReid: `data_captions.json` (a list of {id, img_path, captions, split}) with images under `imgs/`."""
    return _caption_json(_require(root, "RSTPReid"), "data_captions.json", "RSTPReid", "img_path", "imgs", splits,
                         on_error)


# --- The pooled set and the two-camera set in ../shared ------------------------------------------------------------


def load_pooled_index(root, splits=None, on_error="report") -> datasets.Dataset:
    """The pooled person set of `../shared/data/CUHK-PEDES`: `index.csv` with columns image, source, person_id
    (`source:id`), camera, pedes_split, pedes_id, captions (JSON list); `split` is the CUHK-PEDES split."""
    root = _require(root, "pooled CUHK-PEDES index")
    records = []
    with open(root / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if splits is not None and row["pedes_split"] not in splits:
                continue
            records.append(_record(root / row["image"], "rgb", row["person_id"], row["camera"], row["pedes_split"],
                                   json.loads(row["captions"] or "[]")))
    return records_to_dataset(records, "pooled", on_error)


def load_two_camera_folder(root, splits=("train", "val"), on_error="report") -> datasets.Dataset:
    """`images/{split}/PID/CAM_ANGLE.jpg` (the small two-camera set of `../shared/data/pku_reid`)."""
    root = _require(root, "two-camera set")
    records = []
    for split in splits:
        for person in sorted(p for p in (root / "images" / split).iterdir() if p.is_dir()):
            records += [_record(p, "rgb", person.name, p.stem.split("_")[0], split) for p in _images(person)]
    return records_to_dataset(records, "two-camera", on_error)


LOADERS: dict[str, Callable[..., datasets.Dataset]] = {
    "market1501": load_market1501,
    "dukemtmc-reid": load_dukemtmc_reid,
    "msmt17": load_msmt17,
    "cuhk03": load_cuhk03,
    "viper": load_viper,
    "sysu-mm01": load_sysu_mm01,
    "regdb": load_regdb,
    "llcm": load_llcm,
    "paired-visible-infrared": load_paired_visible_infrared,
    "pku-sketch": load_pku_sketch,
    "market-sketch-1k": load_market_sketch_1k,
    "cuhk-pedes": load_cuhk_pedes,
    "icfg-pedes": load_icfg_pedes,
    "rstpreid": load_rstpreid,
    "pooled": load_pooled_index,
    "two-camera": load_two_camera_folder,
}


def load_reid_dataset(name: str, root, **kwargs) -> datasets.Dataset:
    """Loads a dataset by name (see `LOADERS`) from `root`."""
    key = name.lower()
    if key not in LOADERS:
        raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(sorted(LOADERS))}.")
    return LOADERS[key](root, **kwargs)


__all__ = ["FEATURES", "LOADERS", "load_reid_dataset", "records_to_dataset", "image_paths", "UnreadableImagesWarning"] + [
    loader.__name__ for loader in LOADERS.values()]
