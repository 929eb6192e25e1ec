"""Cluster-level one-to-one matching (SciPy ``linear_sum_assignment`` on 1 - centroid cosine).

The PGM/Hungarian alternative shipped in the MULT/SALCR repositories; one assignment is one-to-one in
both directions. Instances of unmatched clusters (the surplus side when C_v != C_r) get cross label -1.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend
from .base import Association, as_labels, cluster_means, matched


def hungarian(features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None) -> Association:
    """Match visible and infrared clusters one-to-one by centroid cosine."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    centres_v, centres_r = cluster_means(features_v, labels_v), cluster_means(features_r, labels_r)
    return matched(labels_v, labels_r, 1.0 - centres_v @ centres_r.T)
