"""The result every associator returns, and the small helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..cluster import centroids


@dataclass
class Association:
    """Cross-modality labels. ``cross_v``: visible rows in the INFRARED label space; ``cross_r``: infrared
    rows in the VISIBLE space (-1 = none). ``labels_v/labels_r`` are the (possibly re-assigned) own labels.
    ``soft`` holds per-modality (N_m, C) float32 targets keyed ``own_v``, ``cross_v``, ``own_r``, ``cross_r``.
    """

    labels_v: np.ndarray
    labels_r: np.ndarray
    cross_v: np.ndarray
    cross_r: np.ndarray
    soft: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def num_clusters(labels: np.ndarray) -> int:
    """``max(labels) + 1`` (0 when every label is -1 or there are none)."""
    return int(np.max(labels, initial=-1)) + 1


def cluster_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, D) L2-normalised means of the non-outlier rows."""
    return centroids(features, labels, num_clusters(labels))


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[label]`` per row, -1 where the label is -1."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, np.asarray(table, dtype=np.int64)[np.maximum(labels, 0)], -1).astype(np.int64)


def one_hot(labels: np.ndarray, count: int) -> np.ndarray:
    """(N, count) float32 one-hot rows (a row of zeros where the label is -1)."""
    out = np.zeros((labels.shape[0], count), dtype=np.float32)
    keep = labels >= 0
    out[np.nonzero(keep)[0], labels[keep]] = 1.0
    return out


def sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Dense squared Euclidean distances (use only for N×C shapes)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T, 0.0)


def as_labels(labels: Any) -> np.ndarray:
    """Labels as an int64 copy."""
    return np.array(labels, dtype=np.int64)


def matched(labels_v: np.ndarray, labels_r: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None = None) -> Association:
    """One-to-one cluster matching of least total ``cost`` (C_v, C_r) (SciPy ``linear_sum_assignment``); pairs that
    are not ``allowed`` are dropped from it. Instances of unmatched clusters get cross label -1; ``info["matches"]``
    lists the (visible, infrared) cluster pairs."""
    v_to_r = np.full(cost.shape[0], -1, dtype=np.int64)
    r_to_v = np.full(cost.shape[1], -1, dtype=np.int64)
    if cost.size:
        rows, cols = linear_sum_assignment(cost)
        if allowed is not None:
            keep = allowed[rows, cols]
            rows, cols = rows[keep], cols[keep]
        v_to_r[rows], r_to_v[cols] = cols, rows
    return Association(
        labels_v, labels_r, lookup(v_to_r, labels_v), lookup(r_to_v, labels_r),
        info={"matches": np.stack([np.nonzero(v_to_r >= 0)[0], v_to_r[v_to_r >= 0]], axis=1)},
    )
