"""Cluster matching by cross-modality neighbour votes (SciPy ``linear_sum_assignment`` on the vote shares).

Every clustered row votes for the cluster of each of its ``k`` nearest clustered rows of the other modality, in
both directions; a pair of clusters scores its votes divided by ``sqrt(|c_v|·|c_r|)`` (so large clusters do not win
by size), and the clusters are matched one-to-one on those scores. Centroid matching (:mod:`.hungarian`) compares
cluster means, where a few stray members move the mean; votes count how many members agree, which holds up
better when features are noisy or clusters impure (on the synthetic persons, with the hand-crafted prior: 2–3×
the association accuracy of centroid matching on the same clusters, benchmarks/README.md "Hand-crafted prior").
Clusters with no vote stay unmatched (cross label -1).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..backend import Backend
from ..graph import knn_pairs
from .base import Association, as_labels, matched, num_clusters


def _votes(queries: np.ndarray, query_labels: np.ndarray, database: np.ndarray, database_labels: np.ndarray, k: int,
           backend: Backend | None) -> sparse.csr_matrix:
    """(C_query, C_database) counts of (query row, one of its k nearest database rows) pairs by their clusters."""
    counts = (num_clusters(query_labels), num_clusters(database_labels))
    query_rows, database_rows = np.nonzero(query_labels >= 0)[0], np.nonzero(database_labels >= 0)[0]
    if not (query_rows.size and database_rows.size):
        return sparse.csr_matrix(counts)
    index = knn_pairs(queries[query_rows], database[database_rows], min(k, database_rows.size), backend=backend)[1]
    mine = np.repeat(query_labels[query_rows], index.shape[1])
    theirs = database_labels[database_rows][index.ravel()]
    return sparse.csr_matrix((np.ones(mine.size), (mine, theirs)), shape=counts)


def knn_votes(features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
              backend: Backend | None = None, k: int = 5) -> Association:
    """Match visible and infrared clusters one-to-one by size-normalised cross-modality neighbour votes."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    votes = (_votes(features_v, labels_v, features_r, labels_r, k, backend)
             + _votes(features_r, labels_r, features_v, labels_v, k, backend).T).toarray()
    sizes_v = np.bincount(labels_v[labels_v >= 0], minlength=votes.shape[0])
    sizes_r = np.bincount(labels_r[labels_r >= 0], minlength=votes.shape[1])
    scores = votes / np.sqrt(np.maximum(np.outer(sizes_v, sizes_r), 1))
    return matched(labels_v, labels_r, -scores, allowed=scores > 0)
