"""Exact k-nearest-neighbour search by squared Euclidean distance.

faiss (``IndexFlatL2``, CPU or GPU build) when installed; otherwise a blocked matrix product with
``argpartition`` written against ``xp``. The fallback is hand-written rather than torch's ``topk``
because :mod:`raytrain_vireid.pseudo` stays free of torch (the rules of the house in DESIGN.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, faiss_module, get_backend

# Rows of the query block in the fallback: block × database floats must stay small (64 MiB at 16k).
_BLOCK_ELEMENTS = 1 << 24


def knn_search(
    queries: Any,
    k: int,
    database: Any = None,
    backend: Backend | None = None,
    use_faiss: bool = True,
) -> tuple[Any, Any]:
    """Return ``(sq_dist, index)`` of the ``k`` nearest database rows of every query row.

    Both are ``(n_queries, k)`` arrays of the backend (float32, int64), sorted by distance.
    ``database`` defaults to ``queries`` (so each point normally finds itself first).
    """
    backend = backend or get_backend("cpu")
    xp = backend.xp
    queries = xp.ascontiguousarray(backend.asarray(queries, dtype=xp.float32))
    database = queries if database is None else xp.ascontiguousarray(backend.asarray(database, dtype=xp.float32))
    k = min(int(k), database.shape[0])
    if k < 1:
        raise ValueError("knn_search needs k >= 1 and a non-empty database")
    faiss = faiss_module(backend.is_gpu) if use_faiss else None
    if faiss is not None:
        return _faiss_search(faiss, backend, queries, database, k)
    return _blocked_search(xp, queries, database, k)


def _faiss_search(faiss: Any, backend: Backend, queries: Any, database: Any, k: int) -> tuple[Any, Any]:
    dim = database.shape[1]
    if backend.is_gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatL2(resources, dim)
    else:
        index = faiss.IndexFlatL2(dim)
    index.add(backend.to_numpy(database))
    dist, idx = index.search(backend.to_numpy(queries), k)
    return backend.asarray(dist, dtype=backend.xp.float32), backend.asarray(idx, dtype=backend.xp.int64)


def _blocked_search(xp: Any, queries: Any, database: Any, k: int) -> tuple[Any, Any]:
    n_query, n_db = queries.shape[0], database.shape[0]
    db_sq = (database * database).sum(axis=1)
    block = max(1, _BLOCK_ELEMENTS // max(n_db, 1))
    out_dist = xp.empty((n_query, k), dtype=xp.float32)
    out_idx = xp.empty((n_query, k), dtype=xp.int64)
    for start in range(0, n_query, block):
        q = queries[start : start + block]
        dist = (q * q).sum(axis=1)[:, None] + db_sq[None, :] - 2.0 * (q @ database.T)
        if k < n_db:
            part = xp.argpartition(dist, k - 1, axis=1)[:, :k]
        else:
            part = xp.broadcast_to(xp.arange(n_db), dist.shape)
        part_dist = xp.take_along_axis(dist, part, axis=1)
        # Sort by distance, ties by database index, so the order is deterministic.
        order = xp.lexsort(xp.stack([part, part_dist]), axis=-1) if xp is np else xp.argsort(part_dist, axis=1)
        out_idx[start : start + block] = xp.take_along_axis(part, order, axis=1)
        out_dist[start : start + block] = xp.maximum(xp.take_along_axis(part_dist, order, axis=1), 0)
    return out_dist, out_idx


def l2_normalize(features: Any, xp: Any = np, eps: float = 1e-12) -> Any:
    """Rows scaled to unit L2 norm (float32)."""
    features = xp.asarray(features, dtype=xp.float32)
    norms = xp.sqrt((features * features).sum(axis=1, keepdims=True))
    return features / xp.maximum(norms, eps)
