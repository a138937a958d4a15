#!/usr/bin/env python
"""Evaluate a checkpoint (or a peer) on a ReID dataset with that benchmark's protocol; print a table, write JSON and
the model-index block of a model card.

    python scripts/evaluate_reid.py --model aio-reid --dataset pku-sketch --root ../shared/data/PKUSketchRE-ID_V1
    python scripts/evaluate_reid.py --model aio-reid --dataset cuhk-pedes --root ../shared/data/CUHK-PEDES \
        --query-modalities text,sketch --split-file splits/dev_split.json
    python scripts/evaluate_reid.py --model frozen-dinov2 --dataset pooled --root ../shared/data/CUHK-PEDES ...

Peers: frozen-dinov2, osnet-0267, osnet-trunk:CHECKPOINT, openvino:PATH.xml, low-res-student:FOLDER,
low-res-student-int8:FOLDER (see modeling_aio.evaluation.embedder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modeling_aio.checkpoint.paths import REPO_ROOT
from modeling_aio.evaluation.runner import run
from modeling_aio.export import BACKENDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "aio-reid"),
                        help="checkpoint folder, frozen-dinov2, osnet-0267, osnet-trunk:CHECKPOINT, openvino:PATH.xml, "
                             "low-res-student:FOLDER or low-res-student-int8:FOLDER")
    parser.add_argument("--rgb-model", default=None,
                        help="another model that embeds the RGB photos (gallery and RGB queries), e.g. a fast "
                             "low-res-student:FOLDER indexing the gallery that --model's text and sketch queries search")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--query-modalities", default=None, help="comma-separated subset of rgb,ir,sketch,text")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--split-file", type=Path, default=None, help="evaluate only the held-out ids of this split")
    parser.add_argument("--exclude-anchor", action="store_true",
                        help="remove each query's anchor image (the captioned photo) from its gallery, as composed "
                             "queries with synthetic sketch/IR do, so single and composed queries compare fairly")
    parser.add_argument("--sysu-mode", choices=("all", "indoor"), default="all")
    parser.add_argument("--direction", default=None, help="regdb / llcm direction, e.g. visible->thermal")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs an AIO checkpoint: PyTorch (float32, bfloat16 autocast, compiled), or its exported "
                             "ONNX / OpenVINO graphs (one modality per query)")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "cache" / "embeddings")
    parser.add_argument("--output", type=Path, default=None, help="JSON result file (default: outputs/...)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
