"""SALCR DAGI: CMFP cross-modal feature fusion, own-label re-assignment, then bidirectional Sinkhorn.

Follows SALCR's ``part_ot`` (METHODS.md §1, steps 2–5) with one deliberate change: the four kNN graphs
(v–v, v–r, r–v, r–r) are sparse (exactly k entries per row from ``knn_search``) instead of a dense
(N_v+N_r)² matrix thresholded at the k-th value of a full row sort; they differ only when similarities
tie at the k-th value. Similarities are cosines clamped at 0, each block is row-normalised, and
``f' = norm(A·F)``. Centres are recomputed on f' with the DBSCAN labels, every non-outlier is re-assigned
to its nearest own-modality centre, and those same centres are the transport targets.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend
from ..graph import knn_affinity
from ..knn import l2_normalize
from .base import Association, as_labels, cluster_means
from .optimal_transport import cross_by_transport


def cmfp_features(
    features_v: np.ndarray, features_r: np.ndarray, k: int, *, backend: Backend | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fused features ``norm(A_vv F_v + A_vr F_r)`` and ``norm(A_rv F_v + A_rr F_r)`` (sparse A blocks)."""
    fv = np.asarray(features_v, dtype=np.float32)
    fr = np.asarray(features_r, dtype=np.float32)
    fused_v = knn_affinity(fv, fv, k, backend=backend) @ fv + knn_affinity(fv, fr, k, backend=backend) @ fr
    fused_r = knn_affinity(fr, fv, k, backend=backend) @ fv + knn_affinity(fr, fr, k, backend=backend) @ fr
    return l2_normalize(fused_v), l2_normalize(fused_r)


def nearest_centre(features: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each non-outlier row re-assigned to its most similar centre; outliers stay -1."""
    if centres.shape[0] == 0:
        return labels.copy()
    return np.where(labels >= 0, np.argmax(features @ centres.T, axis=1), -1).astype(np.int64)


def cmfp_sinkhorn(
    features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, k: int = 30, lam: float = 5.0,
    max_iter: int = 500, tol: float = 0.1,
) -> Association:
    """DAGI association: k = 30 on SYSU, 8 on RegDB; λ = 5."""
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    fused_v, fused_r = cmfp_features(features_v, features_r, k, backend=backend)
    centres_v, centres_r = cluster_means(fused_v, labels_v), cluster_means(fused_r, labels_r)
    new_v = nearest_centre(fused_v, labels_v, centres_v)
    new_r = nearest_centre(fused_r, labels_r, centres_r)
    return Association(
        new_v,
        new_r,
        cross_by_transport(fused_v, new_v, centres_r, lam, max_iter, tol),
        cross_by_transport(fused_r, new_r, centres_v, lam, max_iter, tol),
        info={"reassigned_v": int((new_v != labels_v).sum()), "reassigned_r": int((new_r != labels_r).sum())},
    )
