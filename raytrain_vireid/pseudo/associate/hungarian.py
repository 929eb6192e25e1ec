"""Cluster-level one-to-one matching (SciPy ``linear_sum_assignment`` on 1 - centroid cosine).

The PGM/Hungarian alternative shipped in the MULT/SALCR repositories; one assignment is one-to-one in
both directions. Instances of unmatched clusters (the surplus side when C_v != C_r) get cross label -1.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..backend import Backend
from .base import Association, as_labels, cluster_means, lookup


def hungarian(features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None) -> Association:
    """Match visible and infrared clusters one-to-one by centroid cosine."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    centres_v, centres_r = cluster_means(features_v, labels_v), cluster_means(features_r, labels_r)
    v_to_r = np.full(centres_v.shape[0], -1, dtype=np.int64)
    r_to_v = np.full(centres_r.shape[0], -1, dtype=np.int64)
    if centres_v.shape[0] and centres_r.shape[0]:
        rows, cols = linear_sum_assignment(1.0 - centres_v @ centres_r.T)
        v_to_r[rows], r_to_v[cols] = cols, rows
    return Association(
        labels_v, labels_r, lookup(v_to_r, labels_v), lookup(r_to_v, labels_r),
        info={"matches": np.stack([np.nonzero(v_to_r >= 0)[0], v_to_r[v_to_r >= 0]], axis=1)},
    )
