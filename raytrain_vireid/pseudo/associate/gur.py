"""GUR IR→RGB label propagation (METHODS.md §4 lineage): RGB instances get IR-space labels.

``Y_v = W · onehot(labels_r)`` with ``W`` the softmax of RGB–IR cosine / ``temperature`` over each RGB
instance's ``k`` nearest IR instances (sparse; IR outliers carry no label and contribute nothing). With
``smooth=True`` (GUR from epoch 40) ``Y_v`` is then averaged the same way over each RGB instance's ``k``
nearest RGB instances (itself included). Cross label = argmax (-1 when no labelled neighbour).
``temperature`` defaults to 1 (a plain softmax of the cosines, as the method is described).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..backend import Backend
from ..graph import knn_pairs, pairs_to_csr
from .base import Association, as_labels, num_clusters, one_hot


def softmax_graph(
    queries: np.ndarray, database: np.ndarray, k: int, temperature: float, *, backend: Backend | None = None
) -> sparse.csr_matrix:
    """Sparse (n_q, n_db) rows = softmax of the k nearest cosines / temperature."""
    cosine, index = knn_pairs(queries, database, k, backend=backend)
    logits = cosine.astype(np.float64) / temperature
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return pairs_to_csr(weights / weights.sum(axis=1, keepdims=True), index, database.shape[0])


def gur(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, k: int = 20, temperature: float = 1.0,
    smooth: bool = False,
) -> Association:
    """IR→RGB propagation; ``cross_r`` is the IR label itself (the shared space is the IR one)."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    ir_labels = one_hot(labels_r, num_clusters(labels_r))
    scores = softmax_graph(features_v, features_r, k, temperature, backend=backend) @ ir_labels
    if smooth:
        scores = softmax_graph(features_v, features_v, k, temperature, backend=backend) @ scores
    scores = np.asarray(scores)
    cross_v = np.full(labels_v.shape[0], -1, dtype=np.int64)
    if scores.shape[1]:
        cross_v = np.where(scores.max(axis=1) > 0, np.argmax(scores, axis=1), -1).astype(np.int64)
    return Association(labels_v, labels_r, cross_v, labels_r.copy())
