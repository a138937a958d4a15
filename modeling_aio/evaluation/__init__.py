"""Evaluation: the ReID metrics, the benchmarks' protocols, the embedder that runs a model (or a peer) over a
dataset, the run behind `scripts/evaluate_reid.py`, the model card, and the `evaluate` metric module (`reid/`).

`metrics` and `protocols` import only numpy and torch; the rest load on first use.
"""

from pathlib import Path

from .metrics import compute_reid_metrics, rank_metrics, similarity_from
from .protocols import (
    composed_query_protocol, cross_modality_trials_protocol, llcm_protocol, market1501_protocol, pku_sketch_protocol,
    regdb_protocol, sample_one_per_identity_camera, sysu_mm01_protocol, text_to_image_protocol,
)

#: The folder to pass to `evaluate.load` for the packaged ReID metric (CMC Rank-k, mAP, mINP).
REID_METRIC_PATH: str = str(Path(__file__).resolve().parent / "reid")

__all__ = [
    "rank_metrics", "compute_reid_metrics", "similarity_from", "market1501_protocol", "sysu_mm01_protocol",
    "regdb_protocol", "llcm_protocol", "pku_sketch_protocol", "text_to_image_protocol", "composed_query_protocol",
    "cross_modality_trials_protocol", "sample_one_per_identity_camera", "REID_METRIC_PATH",
]
