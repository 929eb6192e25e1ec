"""DBSCAN on a sparse precomputed distance graph, and cluster centroids.

CPU: scikit-learn ``DBSCAN(metric="precomputed")`` on the CSR graph. GPU: cuML's DBSCAN wants a dense
N×N matrix, so the GPU path runs :func:`sparse_dbscan`, the same density rule written against ``xp``
on the sparse graph (core points, connected components of core–core edges, borders). It reproduces
scikit-learn's labels exactly, numbering included: scikit-learn grows clusters one after another from
the lowest unlabelled core point, so clusters are numbered by their lowest core index and a border
point reachable from several clusters joins the lowest-numbered one.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from scipy import sparse as scipy_sparse
from sklearn.cluster import DBSCAN

from .backend import Backend, get_backend, repeat_each

OUTLIER_MODES = ("drop", "singleton")


def dbscan(
    distances: Any,
    eps: float = 0.6,
    min_samples: int = 4,
    *,
    backend: Backend | None = None,
    outliers: str = "drop",
) -> np.ndarray:
    """DBSCAN labels (int64, NumPy) from a symmetric distance matrix (CSR or dense; absent sparse = far).

    ``eps`` is inclusive and ``min_samples`` counts the point itself, as in scikit-learn. Noise is -1
    with ``outliers="drop"``; with ``"singleton"`` every noise point gets its own label after the clusters.
    """
    if outliers not in OUTLIER_MODES:
        raise ValueError(f"outliers must be one of {OUTLIER_MODES}, got {outliers!r}")
    backend = backend or get_backend("cpu")
    if backend.is_gpu:
        labels = backend.to_numpy(sparse_dbscan(_as_csr(distances, backend), eps, min_samples, backend=backend))
    else:
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(
            _as_csr(distances, backend)
        )
    labels = np.asarray(labels, dtype=np.int64)
    if outliers == "singleton":
        noise = labels < 0
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def sparse_dbscan(graph: Any, eps: float, min_samples: int, *, backend: Backend) -> Any:
    """scikit-learn's DBSCAN labels computed on a sparse CSR graph with ``xp`` (explicit zeros count).

    The point itself is always its own neighbour, whether or not the diagonal is stored.
    """
    xp = backend.xp
    n = graph.shape[0]
    if n == 0:
        return xp.zeros(0, dtype=xp.int64)
    rows = repeat_each(xp.arange(n, dtype=xp.int64), xp.diff(graph.indptr).astype(xp.int64), xp)
    cols = graph.indices.astype(xp.int64)
    near = (graph.data <= eps) & (rows != cols)
    rows, cols = rows[near], cols[near]
    is_core = xp.bincount(rows, minlength=n) + 1 >= min_samples
    core_edge = is_core[rows] & is_core[cols]
    core_graph = backend.sparse.csr_matrix(
        (xp.ones(int(core_edge.sum()), dtype=xp.float32), (rows[core_edge], cols[core_edge])), shape=(n, n)
    )
    _, component = _csgraph(backend).connected_components(core_graph, directed=False)
    component = xp.asarray(component, dtype=xp.int64)
    # Number the clusters by their lowest core index, as scikit-learn's sequential growth does.
    first_core = xp.full(int(component.max()) + 1, n, dtype=xp.int64)
    core_ids = xp.nonzero(is_core)[0]
    _scatter_min(first_core, component[core_ids], core_ids, xp)
    has_core = first_core < n
    rank = xp.full(first_core.shape[0], -1, dtype=xp.int64)
    rank[xp.argsort(xp.where(has_core, first_core, n))[: int(has_core.sum())]] = xp.arange(
        int(has_core.sum()), dtype=xp.int64
    )
    labels = xp.where(is_core, rank[component], -1)
    # Border points: the lowest cluster label among the cores that list them.
    border_edge = is_core[rows] & ~is_core[cols]
    border_label = xp.full(n, n, dtype=xp.int64)
    _scatter_min(border_label, cols[border_edge], labels[rows[border_edge]], xp)
    return xp.where(~is_core & (border_label < n), border_label, labels)


def centroids(features: Any, labels: Any, num_clusters: int | None = None) -> np.ndarray:
    """(C, D) L2-normalised cluster means (float32); label -1 is ignored, an empty cluster is a zero row."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    count = int(labels.max(initial=-1)) + 1 if num_clusters is None else int(num_clusters)
    sums = _group_sums(features, labels, count)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def _group_sums(features: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Per-label row sums as a sparse one-hot product (labels outside 0..count-1 ignored)."""
    keep = (labels >= 0) & (labels < count)
    one_hot = scipy_sparse.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (labels[keep], np.nonzero(keep)[0])),
        shape=(count, features.shape[0]),
    )
    return np.asarray(one_hot @ features)


def _scatter_min(target: Any, index: Any, values: Any, xp: Any) -> None:
    """``target[index] = min(target[index], values)`` with repeated indices (in place)."""
    if xp is np:
        np.minimum.at(target, index, values)
    else:  # CuPy has no ufunc.at for minimum; cupyx.scatter_min is its equivalent.
        import cupyx

        cupyx.scatter_min(target, index, values)


def _as_csr(distances: Any, backend: Backend) -> Any:
    """The backend's CSR matrix of ``distances``; a dense array keeps every entry (zeros included)."""
    if hasattr(distances, "tocsr"):
        return distances.tocsr()
    xp = backend.xp
    dense = backend.asarray(distances, dtype=xp.float32)
    n = dense.shape[0]
    return backend.sparse.csr_matrix(
        (dense.ravel(), xp.tile(xp.arange(n, dtype=xp.int32), n), xp.arange(0, n * n + 1, n)), shape=dense.shape
    )


def _csgraph(backend: Backend) -> Any:
    return importlib.import_module("cupyx.scipy.sparse.csgraph" if backend.is_gpu else "scipy.sparse.csgraph")
