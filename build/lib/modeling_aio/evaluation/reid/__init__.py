"""The `evaluate` metric module: `evaluate.load(modeling_aio.evaluation.REID_METRIC_PATH)` loads `reid.py`."""
