"""HIL bidirectional reverse selection (BRST, METHODS.md §3).

IR prototypes = IR cluster means. Reverse step: ``max_j`` = prototype j's best cosine to any RGB instance
(a 1-NN search). Each non-outlier RGB instance takes its best prototype j only if ``cos >= rho · max_j``,
else -1. ``direction="both"`` (default) also labels IR instances with RGB prototypes symmetrically;
``"one_way"`` is the released code (its IR→RGB branch never runs), leaving ``cross_r`` all -1.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend
from ...errors import UserError
from ..graph import knn_pairs
from .base import Association, as_labels, cluster_means

DIRECTIONS = ("both", "one_way")


def reverse_select(features: np.ndarray, labels: np.ndarray, prototypes: np.ndarray, rho: float, *,
    backend: Backend | None = None,
) -> np.ndarray:
    """Best-prototype label of each non-outlier row, kept where cosine >= rho × that prototype's best cosine."""
    out = np.full(labels.shape[0], -1, dtype=np.int64)
    if prototypes.shape[0] == 0 or features.shape[0] == 0:
        return out
    best_to_any, _ = knn_pairs(prototypes, features, 1, backend=backend)
    similarity = np.asarray(features, dtype=np.float32) @ prototypes.T
    best = np.argmax(similarity, axis=1)
    keep = (labels >= 0) & (similarity[np.arange(labels.shape[0]), best] >= rho * best_to_any[best, 0])
    out[keep] = best[keep]
    return out


def brst(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, rho: float = 0.5, direction: str = "both",
) -> Association:
    """BRST cross labels (rho = 0.5 SYSU, 0.8 RegDB)."""
    if direction not in DIRECTIONS:
        raise UserError(f"association_params.direction: {direction!r} is not one of {', '.join(DIRECTIONS)}")
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    cross_v = reverse_select(features_v, labels_v, cluster_means(features_r, labels_r), rho, backend=backend)
    if direction == "both":
        cross_r = reverse_select(features_r, labels_r, cluster_means(features_v, labels_v), rho, backend=backend)
    else:
        cross_r = np.full(labels_r.shape[0], -1, dtype=np.int64)
    return Association(labels_v, labels_r, cross_v, cross_r)
