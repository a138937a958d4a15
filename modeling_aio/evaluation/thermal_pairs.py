"""Real thermal person crops and the real-thermal development protocol.

`../shared/data/thermal-pairs/` holds aligned thermal (LWIR, white-hot) / visible scene pairs without person boxes.
People are found on the visible frame with OpenCV's HOG people detector and the same box is cut from the thermal
frame; the boxes, checked by eye on contact sheets (`keep`), live in `splits/thermal_pairs_boxes.csv` (boxes only, no
pixels) with a `split`: `test` frames are the development protocol and never train, `train` frames may.

The protocol is same-moment instance matching, as in the held-out set: each thermal crop is searched among every
visible crop of the test frames. Both sides are cut with independently jittered boxes (shift and scale), so that
pixel alignment is not the cue; chance Rank-1 is 1 / the number of crops.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..checkpoint.paths import REPO_ROOT

BOXES_FILE = REPO_ROOT / "splits" / "thermal_pairs_boxes.csv"
SOURCES = ("roadscene", "vifb", "tno-duine", "tno-natocamp")
FIELDS = ("source", "frame", "x", "y", "width", "height", "weight", "split", "keep")
TEST_SHARE = 0.5  # of the frames, by a hash of their name: the held-out half


@dataclass(frozen=True)
class PersonBox:
    """One detected person: the frame it is in and its box (pixels of the visible frame, the same in the thermal)."""

    source: str
    frame: str
    x: int
    y: int
    width: int
    height: int
    weight: float
    split: str
    keep: bool = True


def frame_split(source: str, frame: str) -> str:
    digest = int(hashlib.sha1(f"{source}/{frame}".encode()).hexdigest()[:8], 16)
    return "test" if digest / 0xFFFFFFFF < TEST_SHARE else "train"


def detect_people(visible: Image.Image, min_weight: float = 0.5, upscale: float = 2.0) -> list[tuple]:
    """(x, y, width, height, weight) of the people OpenCV's HOG detector finds, at `upscale`, after non-maximum
    suppression; boxes in the frame's own pixels."""
    import cv2

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    gray = np.asarray(visible.convert("L"))
    big = cv2.resize(gray, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
    rects, weights = hog.detectMultiScale(big, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return []
    weights = np.asarray(weights, dtype=float).reshape(-1)
    kept = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], weights.tolist(), min_weight, 0.3)
    return [(*(int(round(v / upscale)) for v in rects[i]), float(weights[i])) for i in np.asarray(kept).reshape(-1)]


def detect_all(root: Path) -> list[PersonBox]:
    """Every person box of every pair under `root` (`thermal-pairs/`), in source and frame order."""
    boxes = []
    for source in SOURCES:
        for frame in sorted((root / source / "visible").iterdir()):
            if not (root / source / "infrared" / frame.name).is_file():
                continue
            with Image.open(frame) as image:
                found = detect_people(image)
            boxes += [PersonBox(source, frame.name, x, y, w, h, round(weight, 3), frame_split(source, frame.name))
                      for x, y, w, h, weight in found]
    return boxes


def write_boxes(boxes: list[PersonBox], path: Path = BOXES_FILE) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for box in boxes:
            writer.writerow([box.source, box.frame, box.x, box.y, box.width, box.height, box.weight, box.split,
                             int(box.keep)])


def read_boxes(path: Path = BOXES_FILE, split: str | None = None, kept_only: bool = True) -> list[PersonBox]:
    """The boxes of `path` (of one `split` if given; those marked keep unless `kept_only` is off); errors name the
    file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"thermal box file {path} does not exist (scripts/detect_thermal_people.py writes it).")
    boxes = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise ValueError(f"{path} must have the columns {','.join(FIELDS)}, got {reader.fieldnames}.")
        for line, row in enumerate(reader, 2):
            try:
                box = PersonBox(row["source"], row["frame"], int(row["x"]), int(row["y"]), int(row["width"]),
                                int(row["height"]), float(row["weight"]), row["split"], row["keep"] == "1")
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line}: {error}") from None
            if box.source not in SOURCES or box.split not in ("train", "test") or box.width < 8 or box.height < 8:
                raise ValueError(f"{path}:{line}: unknown source or split, or a box under 8 px: {row}.")
            if (split is None or box.split == split) and (box.keep or not kept_only):
                boxes.append(box)
    return boxes


def jittered(box: PersonBox, rng: random.Random, jitter: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box shifted by up to `jitter` of its size and rescaled by up to 1 ± `jitter`, kept inside the frame."""
    scale = 1.0 + rng.uniform(-jitter, jitter)
    width, height = box.width * scale, box.height * scale
    cx = box.x + box.width / 2 + rng.uniform(-jitter, jitter) * box.width
    cy = box.y + box.height / 2 + rng.uniform(-jitter, jitter) * box.height
    left, top = max(0, int(cx - width / 2)), max(0, int(cy - height / 2))
    return left, top, min(size[0], int(cx + width / 2)), min(size[1], int(cy + height / 2))


def cut_pair(root: Path, box: PersonBox, rng: random.Random | None = None, jitter: float = 0.0
             ) -> tuple[Image.Image, Image.Image]:
    """(visible crop, thermal crop) of `box`, each with its own jitter when `rng` is given."""
    rng = rng or random.Random(0)
    crops = []
    for side in ("visible", "infrared"):
        with Image.open(root / box.source / side / box.frame) as frame:
            frame = frame.convert("RGB")
            crops.append(frame.crop(jittered(box, rng, jitter, frame.size)))
    return crops[0], crops[1]


def contact_sheets(root: Path, boxes: list[PersonBox], out_dir: Path, per_sheet: int = 60) -> list[Path]:
    """Numbered sheets of (visible | thermal) crop pairs, 64x128 each, to accept or reject boxes by eye."""
    from PIL import ImageDraw

    out_dir.mkdir(parents=True, exist_ok=True)
    sheets = []
    for first in range(0, len(boxes), per_sheet):
        chunk = boxes[first:first + per_sheet]
        columns = 10
        sheet = Image.new("RGB", (columns * 136, ((len(chunk) + columns - 1) // columns) * 146), "white")
        draw = ImageDraw.Draw(sheet)
        for offset, box in enumerate(chunk):
            visible, thermal = cut_pair(root, box)
            left, top = (offset % columns) * 136, (offset // columns) * 146
            sheet.paste(visible.resize((64, 128)), (left, top + 16))
            sheet.paste(thermal.resize((64, 128)), (left + 66, top + 16))
            draw.text((left + 2, top + 2), f"{first + offset} {box.source[:5]} {box.weight:.1f}", fill="black")
        sheets.append(out_dir / f"sheet-{first // per_sheet:02d}.png")
        sheet.save(sheets[-1])
    return sheets


def detect_and_review(root: Path, out: Path, sheets_dir: Path, reject: list[int]) -> None:
    """Detects (or, when `out` exists, re-reads) every box, marks the `reject` rows keep=0, writes `out` and the
    contact sheets, and prints what it kept."""
    boxes = read_boxes(out, kept_only=False) if out.is_file() else detect_all(root)
    boxes = [PersonBox(**{**box.__dict__, "keep": box.keep and number not in reject})
             for number, box in enumerate(boxes)]
    write_boxes(boxes, out)
    sheets = contact_sheets(root, boxes, sheets_dir)
    kept = [box for box in boxes if box.keep]
    print(f"{len(boxes)} boxes in {out}; {len(kept)} kept ({sum(b.split == 'test' for b in kept)} test, "
          f"{sum(b.split == 'train' for b in kept)} train); sheets: {', '.join(map(str, sheets))}")


def protocol_crops(root: Path, boxes: list[PersonBox], out_dir: Path, jitter: float = 0.1, seed: int = 0
                   ) -> tuple[list[str], list[str]]:
    """Writes the jittered visible and thermal crops of `boxes` to `out_dir` (a cache) and returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    visible_paths, thermal_paths = [], []
    for number, box in enumerate(boxes):
        visible, thermal = cut_pair(root, box, rng, jitter)
        stem = f"{number:04d}-{box.source}-{Path(box.frame).stem}-{box.x}-{box.y}-j{jitter}-s{seed}"
        visible_paths.append(str(out_dir / f"{stem}-visible.png"))
        thermal_paths.append(str(out_dir / f"{stem}-thermal.png"))
        visible.save(visible_paths[-1])
        thermal.save(thermal_paths[-1])
    return visible_paths, thermal_paths


def real_thermal_metrics(embedder, root: Path, boxes: list[PersonBox], cache_dir: Path, jitter: float = 0.1,
                         seed: int = 0) -> dict[str, float]:
    """Thermal → visible instance matching over `boxes` for an `evaluation.embedder.Embedder`: thermal crops embedded
    as IR queries, visible crops as the RGB gallery; Rank-k, mAP, mINP, and the chance Rank-1 for this many crops."""
    from .metrics import compute_reid_metrics

    visible, thermal = protocol_crops(root, boxes, cache_dir / f"thermal-crops-j{jitter}-s{seed}", jitter, seed)
    gallery = embedder.embed({"rgb": visible}, f"real-thermal-visible-j{jitter}-s{seed}")
    queries = embedder.embed({"ir": thermal}, f"real-thermal-thermal-j{jitter}-s{seed}")
    ids = np.arange(len(boxes))
    metrics = compute_reid_metrics(ids, ids, queries, gallery)
    return {**metrics, "pairs": len(boxes), "chance_rank1": 100.0 / len(boxes)}


def synthesis_fidelity(root: Path, boxes: list[PersonBox], synthesize, size: tuple[int, int] = (64, 128)) -> dict:
    """How much a synthetic IR view of each visible crop looks like the real thermal crop of the same moment: the
    mean per-pair Pearson correlation of their pixels (at `size`), and the mean gap of their intensity means and
    standard deviations (0-255). `synthesize(visible_crop, seed)` returns the synthetic view."""
    correlations, mean_gaps, std_gaps = [], [], []
    for number, box in enumerate(boxes):
        visible, thermal = cut_pair(root, box)
        real = np.asarray(thermal.convert("L").resize(size), dtype=np.float32)
        fake = np.asarray(synthesize(visible, number).convert("L").resize(size), dtype=np.float32)
        if real.std() > 0 and fake.std() > 0:
            correlations.append(float(np.corrcoef(real.ravel(), fake.ravel())[0, 1]))
        mean_gaps.append(abs(float(real.mean() - fake.mean())))
        std_gaps.append(abs(float(real.std() - fake.std())))
    return {"correlation": float(np.mean(correlations)), "mean_gap": float(np.mean(mean_gaps)),
            "std_gap": float(np.mean(std_gaps)), "pairs": len(boxes)}


def real_vs_synthetic_sheet(root: Path, boxes: list[PersonBox], syntheses: dict, out: Path, count: int = 12,
                            per_row: int = 3) -> Path:
    """A picture: for `count` pairs, `per_row` to a row, the visible crop, the real thermal crop and each synthetic
    view of the visible one (`syntheses`: label -> synthesize(visible_crop, seed)), side by side (96x192 each)."""
    from PIL import ImageDraw

    width, height = 96, 192
    columns = 2 + len(syntheses)
    rows = -(-min(count, len(boxes)) // per_row)
    sheet = Image.new("RGB", (per_row * (columns * width + 12), rows * (height + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for number, box in enumerate(boxes[:count]):
        visible, thermal = cut_pair(root, box)
        column, top = number % per_row, (number // per_row) * (height + 18)
        left = column * (columns * width + 12)
        views = [(visible, "visible"), (thermal, "real LWIR")]
        views += [(synthesize(visible, number), label) for label, synthesize in syntheses.items()]
        for offset, (image, label) in enumerate(views):
            sheet.paste(image.convert("RGB").resize((width, height)), (left + offset * width, top + 18))
            draw.text((left + offset * width + 2, top + 3), label, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def compare_syntheses(root: Path, out: Path) -> dict[str, dict]:
    """`synthesis_fidelity` of grayscale, CAJ and thermal synthesis (each of `THERMAL_STYLES`, white-hot) on the
    train-frame pairs, printed, and the real-vs-synthetic picture of the thermal ones written to `out`."""
    from processing_aio.synthesis import THERMAL_STYLES, channel_augment_ir, grayscale_ir, thermal_ir

    boxes = read_boxes(BOXES_FILE, split="train")
    syntheses = {"grayscale (evaluation IR)": lambda image, seed: grayscale_ir(image),
                 "CAJ channel augmentation": lambda image, seed: channel_augment_ir(image, seed),
                 **{f"thermal_ir, {style}": (lambda image, seed, style=style: thermal_ir(
                     image, seed, black_hot=0.0, **THERMAL_STYLES[style])) for style in THERMAL_STYLES}}
    results = {name: synthesis_fidelity(root, boxes, synthesize) for name, synthesize in syntheses.items()}
    print(f"synthetic IR of the visible crop against the real thermal crop, {len(boxes)} train-frame pairs")
    for name, figures in results.items():
        print(f"  {name:28s} correlation {figures['correlation']:+.3f}  mean gap {figures['mean_gap']:5.1f}  "
              f"std gap {figures['std_gap']:5.1f}")
    thermal = {f"{style} style": syntheses[f"thermal_ir, {style}"] for style in THERMAL_STYLES}
    print(f"wrote {real_vs_synthetic_sheet(root, boxes, thermal, out)}")
    return results


def evaluate_models(args) -> dict[str, dict[str, float]]:
    """`real_thermal_metrics` of every `args.model` on the same crops (averaged over `args.seeds` jitter draws),
    printed as a table and written to `args.output`."""
    import json

    from .embedder import make_embedder

    if not args.root.is_dir():
        raise SystemExit(f"error: --root {args.root} does not exist (../shared/data/thermal-pairs).")
    try:
        boxes = read_boxes(args.boxes, split=args.split)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    results = {}
    for model in args.model:
        embedder = make_embedder(model, 32, args.cache_dir)
        runs = [real_thermal_metrics(embedder, args.root, boxes, args.cache_dir, args.jitter, seed)
                for seed in range(args.seeds)]
        results[model] = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    first = next(iter(results.values()))
    print(f"real thermal -> visible, {int(first['pairs'])} pairs of the {args.split} frames, jitter {args.jitter}, "
          f"{args.seeds} draws; chance Rank-1 {first['chance_rank1']:.2f}")
    print(f"  {'model':40s} {'Rank-1':>7s} {'Rank-5':>7s} {'mAP':>7s}")
    for model, metrics in results.items():
        print(f"  {Path(model).name:40s} {metrics['rank-1']:7.2f} {metrics['rank-5']:7.2f} {metrics['mAP']:7.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({  # "metrics": the first model's, as scripts/make_model_card.py reads them
        "model": args.model[0], "dataset": "thermal-pairs", "task": "thermal->visible (real)", "split": args.split,
        "jitter": args.jitter, "seeds": args.seeds, "metrics": results[args.model[0]], "results": results},
        indent=1) + "\n")
    return results


__all__ = ["evaluate_models", "compare_syntheses", "synthesis_fidelity", "real_vs_synthetic_sheet", "PersonBox", "BOXES_FILE", "detect_people", "detect_all", "write_boxes", "read_boxes", "cut_pair",
           "contact_sheets", "detect_and_review",
           "protocol_crops", "real_thermal_metrics", "frame_split"]
