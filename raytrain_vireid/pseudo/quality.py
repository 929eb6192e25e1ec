"""Pseudo-label quality against ground-truth identities: for logs and plots only, never for training.

Outliers (label -1) are counted as singleton clusters of their own for ARI/NMI and pairwise scores, so a
clustering that discards everything is not rewarded. Pairwise precision/recall/F come from the
contingency table (pairs within one cell / one predicted cluster / one identity), not pair enumeration.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def with_singletons(labels: np.ndarray) -> np.ndarray:
    """Labels where every -1 becomes a fresh label of its own."""
    labels = np.array(labels, dtype=np.int64)
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def _pairs(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    return float((counts * (counts - 1) / 2).sum())


def label_quality(labels: np.ndarray, true_pids: np.ndarray) -> dict[str, float]:
    """n_clusters, outlier_rate, ARI, NMI, pairwise precision / recall / F of one modality's labels."""
    labels = np.asarray(labels, dtype=np.int64)
    true_pids = np.asarray(true_pids, dtype=np.int64)
    if labels.shape != true_pids.shape:
        raise ValueError(f"labels {labels.shape} and true_pids {true_pids.shape} differ in shape")
    n = labels.shape[0]
    predicted = with_singletons(labels)
    table = contingency_matrix(true_pids, predicted, sparse=True)
    together = _pairs(table.data)
    predicted_pairs = _pairs(np.asarray(table.sum(axis=0)).ravel())
    true_pairs = _pairs(np.asarray(table.sum(axis=1)).ravel())
    precision = together / predicted_pairs if predicted_pairs else 0.0
    recall = together / true_pairs if true_pairs else 0.0
    return {
        "n_clusters": float(np.unique(labels[labels >= 0]).size),
        "outlier_rate": float((labels < 0).mean()) if n else 0.0,
        "ari": float(adjusted_rand_score(true_pids, predicted)) if n else 0.0,
        "nmi": float(normalized_mutual_info_score(true_pids, predicted)) if n else 0.0,
        "pair_precision": precision,
        "pair_recall": recall,
        "pair_f": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def neighbour_precision(neighbours: np.ndarray, query_pids: np.ndarray, database_pids: np.ndarray) -> float:
    """Fraction of (query, neighbour) pairs that share the true identity; ``neighbours`` holds (n_queries, k)
    database rows. Across modalities it says whether any associator can be right: at chance level, none can."""
    neighbours = np.asarray(neighbours, dtype=np.int64)
    if neighbours.size == 0:
        return 0.0
    same = np.asarray(database_pids, dtype=np.int64)[neighbours] == np.asarray(query_pids, dtype=np.int64)[:, None]
    return float(same.mean())


def majority_pid(labels: np.ndarray, true_pids: np.ndarray) -> np.ndarray:
    """(C,) the most frequent true pid of each cluster 0..max(labels) (lowest pid on ties; -1 if empty)."""
    labels = np.asarray(labels, dtype=np.int64)
    count = int(labels.max(initial=-1)) + 1
    keep = labels >= 0
    pids, codes = np.unique(np.asarray(true_pids, dtype=np.int64)[keep], return_inverse=True)
    out = np.full(count, -1, dtype=np.int64)
    if pids.size == 0:
        return out
    table = sparse.csr_matrix(
        (np.ones(int(keep.sum())), (labels[keep], codes)), shape=(count, pids.size)
    ).toarray()  # C × P cluster-by-identity counts (dense is fine: a few hundred each)
    filled = table.sum(axis=1) > 0
    out[filled] = pids[np.argmax(table[filled], axis=1)]
    return out


def _transfer_accuracy(cross: np.ndarray, true: np.ndarray, other_majority: np.ndarray) -> tuple[float, float]:
    cross = np.asarray(cross, dtype=np.int64)
    valid = (cross >= 0) & (cross < other_majority.shape[0])
    coverage = float(valid.mean()) if cross.size else 0.0
    if not valid.any():
        return 0.0, coverage
    return float((other_majority[cross[valid]] == np.asarray(true)[valid]).mean()), coverage


def association_accuracy(
    labels_v: np.ndarray, cross_v: np.ndarray, labels_r: np.ndarray, true_v: np.ndarray, true_r: np.ndarray,
    cross_r: np.ndarray | None = None,
) -> dict[str, float]:
    """How often a cross label points at a cluster of the other modality whose majority identity is the
    instance's own true identity.

    ``assoc_acc_v2r``: among visible instances with a cross label (>= 0), the fraction whose IR cluster
    ``cross_v`` has majority pid == the instance's pid; ``assoc_cov_v2r``: the fraction that has one.
    ``assoc_acc_r2v`` / ``assoc_cov_r2v`` likewise for ``cross_r`` when given.
    """
    out: dict[str, float] = {}
    out["assoc_acc_v2r"], out["assoc_cov_v2r"] = _transfer_accuracy(cross_v, true_v, majority_pid(labels_r, true_r))
    if cross_r is not None:
        out["assoc_acc_r2v"], out["assoc_cov_r2v"] = _transfer_accuracy(
            cross_r, true_r, majority_pid(labels_v, true_v)
        )
    return out
