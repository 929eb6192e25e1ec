"""Plain dense k-reciprocal Jaccard distance: a loop-by-loop transcription of the reference semantics.

Used by the tests and by ``benchmarks/pseudo_labels.py`` as the ground truth for
:func:`raytrain_vireid.pseudo.jaccard.jaccard_distance`. Dense N×N float32 matrices; small N only.
"""

from __future__ import annotations

import numpy as np


def reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """The j in ``rank[i, :k+1]`` whose own row ``rank[j, :k+1]`` holds i (order kept)."""
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def dense_jaccard(features: np.ndarray, rank: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """Dense N×N Jaccard distance from L2-normalised ``features`` and the k1-NN ``rank``."""
    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        recip = reciprocal(rank, i, k1)
        expanded = recip
        for candidate in recip:
            cand = reciprocal(rank, candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(cand, recip)) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        if len(expanded) == 0:  # nobody reciprocal, not even i itself: the row of V stays 0
            continue
        logits = -(2 - 2 * (x[i] @ x[expanded].T))
        weights = np.exp(logits - logits.max())
        v[i, expanded] = weights / weights.sum()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    inverted = [np.where(v[:, k] != 0)[0] for k in range(n)]
    dist = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        overlap = np.zeros(n, dtype=np.float32)
        for k in np.where(v[i] != 0)[0]:
            overlap[inverted[k]] += np.minimum(v[i, k], v[inverted[k], k])
        dist[i] = 1 - overlap / (2 - overlap)
    dist[dist < 0] = 0.0
    return dist
