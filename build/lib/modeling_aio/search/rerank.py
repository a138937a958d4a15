"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), applied to one query's candidate list."""

from __future__ import annotations

import numpy as np


def k_reciprocal_rerank(query: np.ndarray, candidates: np.ndarray, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of one query's candidate list; returns final distances.

    Works on the (1 + K) x (1 + K) problem of the query and its top-K candidates, which is how it is applied to
    galleries too large for the full gallery-gallery matrix."""
    features = np.concatenate([query[None], candidates]).astype(np.float32)
    distance = np.clip(2.0 - 2.0 * features @ features.T, 0.0, None)
    distance = distance / distance.max(axis=0, keepdims=True).clip(min=1e-12)
    size = len(features)
    k1, k2 = min(k1, size - 1), min(k2, size - 1)
    ranks = np.argsort(distance, axis=1)
    weights = np.zeros((size, size), dtype=np.float32)
    for i in range(size):
        forward = ranks[i, : k1 + 1]
        reciprocal = forward[np.any(ranks[forward, : k1 + 1] == i, axis=1)]
        expansion = reciprocal
        for candidate in reciprocal:
            c_forward = ranks[candidate, : int(np.around(k1 / 2)) + 1]
            c_reciprocal = c_forward[np.any(ranks[c_forward, : int(np.around(k1 / 2)) + 1] == candidate, axis=1)]
            if len(np.intersect1d(c_reciprocal, reciprocal)) > 2 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-distance[i, expansion])
        weights[i, expansion] = weight / weight.sum()
    if k2 > 1:
        weights = np.stack([weights[ranks[i, :k2]].mean(axis=0) for i in range(size)])
    minimum = np.minimum(weights[0][None], weights[1:]).sum(axis=1)
    jaccard = 1.0 - minimum / (2.0 - minimum)
    return jaccard * (1 - lambda_value) + distance[0, 1:] * lambda_value


__all__ = ["k_reciprocal_rerank"]
