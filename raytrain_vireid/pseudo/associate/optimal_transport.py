"""Bidirectional instance→centroid optimal transport (SALCR ``part_ot`` step 5 / MULT's initial cross labels).

Each non-outlier visible instance goes to the infrared centroid chosen by the row-wise argmax of the
Sinkhorn plan on squared-Euclidean cost (uniform marginals over the non-outlier instances and the
clusters), and symmetrically. Outliers keep cross label -1 (SALCR drops them before transport).
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend
from ..sinkhorn import transport_argmax
from .base import Association, as_labels, cluster_means, sq_distances


def cross_by_transport(
    features: np.ndarray, labels: np.ndarray, other_centres: np.ndarray, lam: float, max_iter: int, tol: float
) -> np.ndarray:
    """Cross label of every non-outlier row by Sinkhorn argmax to ``other_centres``; -1 for outliers."""
    cross = np.full(labels.shape[0], -1, dtype=np.int64)
    rows = np.nonzero(labels >= 0)[0]
    if rows.size and other_centres.shape[0]:
        cost = sq_distances(np.asarray(features)[rows], other_centres)
        cross[rows] = transport_argmax(cost, lam, max_iter=max_iter, tol=tol)
    return cross


def sinkhorn(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, lam: float = 5.0, max_iter: int = 500,
    tol: float = 0.1,
) -> Association:
    """Cross labels by bidirectional Sinkhorn transport (λ=5 SALCR, 25 MULT)."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    centres_v, centres_r = cluster_means(features_v, labels_v), cluster_means(features_r, labels_r)
    return Association(
        labels_v,
        labels_r,
        cross_by_transport(features_v, labels_v, centres_r, lam, max_iter, tol),
        cross_by_transport(features_r, labels_r, centres_v, lam, max_iter, tol),
    )
