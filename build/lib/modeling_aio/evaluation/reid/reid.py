"""ReID retrieval metric for 🤗 evaluate: CMC Rank-k, mAP and mINP.

    import evaluate
    from modeling_aio.evaluation import REID_METRIC_PATH

    reid = evaluate.load(REID_METRIC_PATH)
    reid.compute(predictions=query_embeddings, references=query_person_ids,
                 gallery_features=gallery_embeddings, gallery_ids=gallery_person_ids,
                 query_cameras=..., gallery_cameras=..., remove_same_camera=True)

`predictions` are the query embeddings and `references` their person ids; the gallery is passed as keyword
arguments (it is not a per-example quantity). The computation is `modeling_aio.evaluation.metrics.compute_reid_metrics`.
"""

import datasets
import evaluate

from modeling_aio.evaluation.metrics import compute_reid_metrics

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: query embeddings, one float list per query.
    references: query person ids (strings).
    gallery_features: (G, D) gallery embeddings.
    gallery_ids: G gallery person ids.
    query_cameras, gallery_cameras: optional camera ids, for the same-identity same-camera removal.
    remove_same_camera: apply that removal (Market-1501 rule); default True when cameras are given.
    junk_gallery_ids: gallery ids removed for every query (Market-1501 uses -1).
    ranks: CMC ranks to report, default (1, 5, 10).
Returns:
    rank-k for each k, mAP, mINP (percentages) and num_valid_queries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ReID(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Zheng et al., Scalable Person Re-identification: A Benchmark, ICCV 2015; "
                     "Ye et al., Deep Learning for Person Re-identification: A Survey and Outlook, TPAMI 2021 (mINP).",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("float32")),
                "references": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, references, gallery_features=None, gallery_ids=None, query_cameras=None,
                 gallery_cameras=None, remove_same_camera=True, junk_gallery_ids=(), ranks=(1, 5, 10)):
        if gallery_features is None or gallery_ids is None:
            raise ValueError("reid metric needs `gallery_features` and `gallery_ids`.")
        return compute_reid_metrics(
            references, [str(i) for i in gallery_ids], query_features=predictions, gallery_features=gallery_features,
            query_cameras=query_cameras, gallery_cameras=gallery_cameras, remove_same_camera=remove_same_camera,
            junk_gallery_ids=[str(i) for i in junk_gallery_ids], ranks=ranks)
