"""MULT label transfer (METHODS.md §2, steps 1–5): bidirectional propagation over homogeneous and
heterogeneous affinities, outliers kept and labelled by propagation.

The one approximation: MULT's heterogeneous affinity is a Sinkhorn plan over ALL N_v×N_r instance pairs;
here the plan is computed on the union of each visible row's ``cross_k`` nearest infrared instances and
each infrared row's ``cross_k`` nearest visible instances (absent pairs = zero transport). With
``cross_k >= max(N_v, N_r)`` it equals the dense version. The homogeneous affinity ``rownorm(1 - d)`` from
the sparse Jaccard graph is exact (absent pairs have d = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from ..backend import Backend
from ..graph import knn_pairs, pairs_to_csr, row_normalize
from ..jaccard import jaccard_distance
from ..sinkhorn import sparse_sinkhorn_plan, transport_argmax
from .base import Association, as_labels, cluster_means, num_clusters, one_hot, sq_distances

OWN_TEMPERATURE = 0.05


def homogeneous_affinity(jaccard: Any) -> sparse.csr_matrix:
    """``rownorm(1 - d)`` over the stored pairs of a sparse Jaccard distance graph."""
    csr = sparse.csr_matrix(jaccard, dtype=np.float64)
    return row_normalize(sparse.csr_matrix((1.0 - csr.data, csr.indices, csr.indptr), shape=csr.shape))


def heterogeneous_plan(
    features_v: np.ndarray, features_r: np.ndarray, cross_k: int, lam: float, *, backend: Backend | None = None,
    max_iter: int = 500,
    tol: float = 0.1,
) -> sparse.csr_matrix:
    """Sinkhorn plan (N_v, N_r) on squared distances, restricted to the mutual top-``cross_k`` support."""
    cos_vr, idx_vr = knn_pairs(features_v, features_r, cross_k, backend=backend)
    cos_rv, idx_rv = knn_pairs(features_r, features_v, cross_k, backend=backend)
    forward = pairs_to_csr(2.0 - 2.0 * cos_vr.astype(np.float64), idx_vr, features_r.shape[0])
    backward = pairs_to_csr(2.0 - 2.0 * cos_rv.astype(np.float64), idx_rv, features_v.shape[0]).T.tocsr()
    # Union of both supports; the +1 offset keeps zero-cost pairs stored, maximum() de-duplicates.
    union = _shifted(forward).maximum(_shifted(backward))
    union.data = np.maximum(union.data - 1.0, 0.0)
    return sparse_sinkhorn_plan(union, lam, max_iter=max_iter, tol=tol)


def _shifted(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """A copy with 1 added to every stored value."""
    out = matrix.copy()
    out.data = out.data + 1.0
    return out


def transfer(
    hom_own: sparse.csr_matrix, hom_other: sparse.csr_matrix, to_own: sparse.csr_matrix,
    to_other: sparse.csr_matrix, y_own: np.ndarray, y_other: np.ndarray, alpha: float, tol: float, max_iter: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One label space: own-modality rows ``y_own`` and other-modality rows ``y_other`` (both in this space).

    ``to_own`` maps other-modality labels onto own rows (rows = own instances), ``to_other`` the reverse.
    Iterates MULT's update until the larger relative L1 change is <= ``tol`` or ``max_iter`` steps.
    """
    own, other = y_own.astype(np.float64), y_other.astype(np.float64)
    steps = 0
    for steps in range(1, max_iter + 1):
        new_own = (1 - alpha) * (to_own @ other) + alpha * y_own
        new_other = (1 - alpha) * (to_other @ new_own) + alpha * y_other
        new_own = 0.5 * (hom_own @ new_own) + 0.5 * new_own
        new_other = 0.5 * (hom_other @ new_other) + 0.5 * new_other
        change = max(
            np.abs(new_own - own).sum() / max(own.sum(), 1e-12),
            np.abs(new_other - other).sum() / max(other.sum(), 1e-12),
        )
        own, other = new_own, new_other
        if change <= tol:
            break
    return own, other, steps


def softmax_to_centres(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``softmax(f · Cᵀ / 0.05)`` (N, C)."""
    logits = np.asarray(features, dtype=np.float64) @ centres.T.astype(np.float64) / OWN_TEMPERATURE
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def mixed_targets(y: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Hard labels ``argmax y`` and soft targets ``beta·onehot + (1-beta)·y`` (float32)."""
    hard = np.argmax(y, axis=1).astype(np.int64) if y.shape[1] else np.full(y.shape[0], -1, dtype=np.int64)
    return hard, (beta * one_hot(hard, y.shape[1]) + (1 - beta) * y).astype(np.float32)


def propagation(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, jaccard_v=None, jaccard_r=None,
    alpha: float = 0.2, beta: float = 0.7, lam: float = 25.0, cross_k: int = 50, tol: float = 1e-2,
    max_iter: int = 20, k1: int = 30, k2: int = 6,
) -> Association:
    """MULT label transfer. ``jaccard_v/_r``: the per-modality sparse Jaccard graphs (computed with k1, k2
    when not given). Every instance, outliers included, gets an own and a cross label."""
    fv = np.asarray(features_v, dtype=np.float32)
    fr = np.asarray(features_r, dtype=np.float32)
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    jaccard_v = jaccard_distance(fv, k1, k2, backend=backend) if jaccard_v is None else jaccard_v
    jaccard_r = jaccard_distance(fr, k1, k2, backend=backend) if jaccard_r is None else jaccard_r
    if backend is not None and backend.is_gpu:
        jaccard_v, jaccard_r = backend.sparse_to_scipy(jaccard_v), backend.sparse_to_scipy(jaccard_r)
    centres_v, centres_r = cluster_means(fv, labels_v), cluster_means(fr, labels_r)
    c_v, c_r = num_clusters(labels_v), num_clusters(labels_r)
    y_v, y_r = softmax_to_centres(fv, centres_v), softmax_to_centres(fr, centres_r)
    y_vr = one_hot(transport_argmax(sq_distances(fv, centres_r), lam), c_r)
    y_rv = one_hot(transport_argmax(sq_distances(fr, centres_v), lam), c_v)
    hom_v, hom_r = homogeneous_affinity(jaccard_v), homogeneous_affinity(jaccard_r)
    plan = heterogeneous_plan(fv, fr, min(cross_k, max(fv.shape[0], fr.shape[0])), lam, backend=backend)
    a_vr, a_rv = row_normalize(plan), row_normalize(plan.T)
    # IR space: IR own labels and visible→IR labels; RGB space symmetric.
    own_r, cross_v, steps_r = transfer(hom_r, hom_v, a_rv, a_vr, y_r, y_vr, alpha, tol, max_iter)
    own_v, cross_r, steps_v = transfer(hom_v, hom_r, a_vr, a_rv, y_v, y_rv, alpha, tol, max_iter)
    new_v, soft_own_v = mixed_targets(own_v, beta)
    new_r, soft_own_r = mixed_targets(own_r, beta)
    hard_cross_v, soft_cross_v = mixed_targets(cross_v, beta)
    hard_cross_r, soft_cross_r = mixed_targets(cross_r, beta)
    return Association(
        new_v, new_r, hard_cross_v, hard_cross_r,
        soft={"own_v": soft_own_v, "cross_v": soft_cross_v, "own_r": soft_own_r, "cross_r": soft_cross_r},
        info={"iterations_ir_space": steps_r, "iterations_rgb_space": steps_v, "plan_nnz": int(plan.nnz)},
    )
