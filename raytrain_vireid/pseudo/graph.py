"""Sparse kNN affinity graphs (no dense N×M matrix is ever built)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from .backend import Backend, get_backend
from .knn import knn_search


def knn_pairs(
    queries: np.ndarray, database: np.ndarray, k: int, *, backend: Backend | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(cosine (n,k) float32, index (n,k) int64)`` of each query's k nearest database rows.

    Rows are L2-normalised, so cosine = 1 - squared distance / 2; sorted by decreasing cosine.
    """
    backend = backend or get_backend("cpu")
    sq_dist, index = knn_search(queries, k, database=database, backend=backend)
    return (1.0 - backend.to_numpy(sq_dist) / 2.0).astype(np.float32), backend.to_numpy(index)


def pairs_to_csr(values: np.ndarray, index: np.ndarray, n_cols: int) -> sparse.csr_matrix:
    """CSR matrix with row i holding ``values[i]`` at columns ``index[i]`` (fixed k per row)."""
    n, k = index.shape
    return sparse.csr_matrix(
        (values.ravel(), index.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_cols)
    )


def row_normalize(matrix: Any) -> sparse.csr_matrix:
    """Rows scaled to sum 1 (rows summing to 0 stay 0)."""
    csr = sparse.csr_matrix(matrix, dtype=np.float64)
    sums = np.asarray(csr.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sparse.diags(scale) @ csr


def knn_affinity(
    queries: np.ndarray, database: np.ndarray, k: int, *, backend: Backend | None = None
) -> sparse.csr_matrix:
    """Row-normalised kNN graph of cosine similarities clamped at 0 (CMFP's block)."""
    cosine, index = knn_pairs(queries, database, k, backend=backend)
    return row_normalize(pairs_to_csr(np.maximum(cosine, 0.0), index, database.shape[0]))
