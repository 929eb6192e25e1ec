"""ADCA cross-modality memory aggregation matching (CMA, METHODS.md §4 lineage).

Every RGB–IR instance pair with cosine >= ``threshold`` (both instances clustered) is one co-occurrence
of (RGB cluster, IR cluster); the counts are accumulated over blocks of RGB rows (block size from
``block_bytes``), so the N_v×N_r matrix is never held. Clusters are then matched greedily one-to-one,
most frequent pair first (ties: lower RGB cluster, then lower IR cluster). The greedy order is computed
as rounds of "locally dominant" pairs (a pair ranked first in both its row and its column), which gives
exactly the greedy matching for a strict order, without a Python loop over pairs.
ADCA then sets both memories of a matched pair to ``0.1·own + 0.9·IR centre``: that blend is the
trainer's business; the matches are returned in ``info["matches"]`` as (RGB cluster, IR cluster) rows.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend
from .base import Association, as_labels, lookup, num_clusters


def cooccurrence(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, threshold: float,
    block_bytes: int = 1 << 28,
) -> np.ndarray:
    """(C_v, C_r) int64 counts of clustered RGB–IR pairs with cosine >= threshold (blocked over RGB rows)."""
    c_v, c_r = num_clusters(labels_v), num_clusters(labels_r)
    keep_v, keep_r = np.nonzero(labels_v >= 0)[0], np.nonzero(labels_r >= 0)[0]
    fv = np.asarray(features_v, dtype=np.float32)[keep_v]
    fr = np.asarray(features_r, dtype=np.float32)[keep_r]
    lv, lr = labels_v[keep_v], labels_r[keep_r]
    counts = np.zeros(c_v * c_r, dtype=np.int64)
    block = max(1, block_bytes // max(4 * fr.shape[0], 1))
    for start in range(0, fv.shape[0], block):
        rows, cols = np.nonzero(fv[start : start + block] @ fr.T >= threshold)
        counts += np.bincount(lv[start + rows] * c_r + lr[cols], minlength=c_v * c_r)
    return counts.reshape(c_v, c_r)


def greedy_matching(counts: np.ndarray) -> np.ndarray:
    """(M, 2) one-to-one (row, col) matches of positive counts, most frequent first."""
    rows, cols = np.nonzero(counts > 0)
    order = np.lexsort((cols, rows, -counts[rows, cols]))  # descending count, then row, then col
    rows, cols = rows[order], cols[order]
    rank = np.arange(rows.shape[0])
    unranked = rows.shape[0]  # larger than every rank
    matched = []
    while rows.size:
        row_best = np.full(counts.shape[0], unranked)
        col_best = np.full(counts.shape[1], unranked)
        np.minimum.at(row_best, rows, rank)
        np.minimum.at(col_best, cols, rank)
        dominant = (row_best[rows] == rank) & (col_best[cols] == rank)
        matched.append(np.stack([rows[dominant], cols[dominant]], axis=1))
        free = ~np.isin(rows, rows[dominant]) & ~np.isin(cols, cols[dominant])
        rows, cols, rank = rows[free], cols[free], rank[free]
    return np.concatenate(matched) if matched else np.zeros((0, 2), dtype=np.int64)


def cma(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, threshold: float = 0.5,
    block_bytes: int = 1 << 28,
) -> Association:
    """Greedy co-occurrence matching; instances of matched clusters get the partner's label."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    counts = cooccurrence(features_v, labels_v, features_r, labels_r, threshold, block_bytes)
    matches = greedy_matching(counts).astype(np.int64)
    v_to_r = np.full(counts.shape[0], -1, dtype=np.int64)
    r_to_v = np.full(counts.shape[1], -1, dtype=np.int64)
    v_to_r[matches[:, 0]], r_to_v[matches[:, 1]] = matches[:, 1], matches[:, 0]
    return Association(
        labels_v, labels_r, lookup(v_to_r, labels_v), lookup(r_to_v, labels_r),
        info={"matches": matches, "counts": counts},
    )
