"""Sub-cluster centres inside every cluster (HIL's multi-centre memory initialisation).

Every cluster with more than k members is split by k-means into k sub-clusters; each sub-centre is
``blend · cluster_mean + (1 - blend) · sub_cluster_mean``. k-means is hand-written as ONE batched
Lloyd's iteration over all clusters at once (k-means++ seeding per cluster, fixed iteration cap and a
tolerance), because scikit-learn / cuML / faiss have no per-group k-means: calling ``KMeans`` once per
cluster means thousands of estimator fits per epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, get_backend

MAX_ITER = 50
TOLERANCE = 1e-6


def subcluster_centres(
    features: Any,
    labels: Any,
    k: int,
    blend: float = 0.9,
    *,
    backend: Backend | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(C, k+1, D) float32: index 0 = the cluster mean, 1..k = blended sub-centres.

    Means are plain averages of the given rows (not re-normalised). Label -1 is ignored; C is
    ``max(labels) + 1``. A cluster with at most k members, or a sub-cluster left empty, uses the mean.
    """
    if k < 1:
        raise ValueError(f"subcluster_centres needs k >= 1, got {k}")
    backend = backend or get_backend("cpu")
    xp = backend.xp
    x = backend.asarray(features, dtype=xp.float32)
    labels = backend.asarray(labels, dtype=xp.int64)
    num = int(labels.max()) + 1 if labels.shape[0] else 0
    members = xp.nonzero(labels >= 0)[0]
    x, labels = x[members], labels[members]
    sizes = xp.bincount(labels, minlength=num)
    means = _group_means(x, labels, num, backend)
    out = xp.repeat(means[:, None, :], k + 1, axis=1)
    split = sizes[labels] > k
    if bool(split.any()):
        sub_x, sub_labels = x[split], labels[split]
        assign = batched_kmeans(sub_x, sub_labels, num, k, backend=backend, seed=seed)
        sub_means = _group_means(sub_x, sub_labels * k + assign, num * k, backend).reshape(num, k, -1)
        sub_sizes = xp.bincount(sub_labels * k + assign, minlength=num * k).reshape(num, k)
        blended = blend * means[:, None, :] + (1.0 - blend) * sub_means
        out[:, 1:] = xp.where((sub_sizes > 0)[:, :, None], blended, means[:, None, :])
    return backend.to_numpy(out.astype(xp.float32))


def batched_kmeans(x: Any, labels: Any, num: int, k: int, *, backend: Backend, seed: int = 0) -> Any:
    """Sub-cluster index (0..k-1) of every row: k-means with k centres inside each label group at once.

    Every group must hold more than k rows. Seeds by k-means++ within each group, then Lloyd's steps
    until no centre moves by more than ``TOLERANCE`` (squared) or ``MAX_ITER`` steps.
    """
    xp = backend.xp
    rng = np.random.default_rng(seed)
    centres = _kmeans_plus_plus(x, labels, num, k, backend, rng)
    assign = xp.zeros(x.shape[0], dtype=xp.int64)
    for _ in range(MAX_ITER):
        assign = xp.argmin(_sq_dist_to_centres(x, labels, centres, xp), axis=1)
        counts = xp.bincount(labels * k + assign, minlength=num * k).reshape(num, k)
        new = _group_means(x, labels * k + assign, num * k, backend).reshape(num, k, -1)
        new = xp.where((counts > 0)[:, :, None], new, centres)  # an emptied centre stays where it was
        shift = float(((new - centres) ** 2).sum(axis=2).max())
        centres = new
        if shift <= TOLERANCE:
            break
    return xp.argmin(_sq_dist_to_centres(x, labels, centres, xp), axis=1)


def _kmeans_plus_plus(x: Any, labels: Any, num: int, k: int, backend: Backend, rng: np.random.Generator) -> Any:
    """(num, k, D) seeds: per group, each next seed drawn with probability ∝ squared distance to the chosen."""
    xp = backend.xp
    order = xp.argsort(labels)  # rows grouped by label; a group's rows are contiguous in ``order``
    sorted_labels = labels[order]
    group_start = xp.searchsorted(sorted_labels, xp.arange(num))
    group_last = xp.maximum(xp.searchsorted(sorted_labels, xp.arange(num), side="right") - 1, 0)
    centres = xp.zeros((num, k, x.shape[1]), dtype=xp.float32)
    weight = xp.ones(x.shape[0], dtype=xp.float64)  # first seed: uniform within the group
    closest = xp.full(x.shape[0], xp.inf, dtype=xp.float64)
    for slot in range(k):
        cum = xp.cumsum(weight[order])
        before = xp.where(group_start > 0, cum[xp.maximum(group_start - 1, 0)], 0.0)
        group_total = xp.bincount(sorted_labels, weights=weight[order], minlength=num)
        draw = before + backend.asarray(rng.random(num)) * group_total
        pick = xp.clip(xp.searchsorted(cum, draw, side="right"), group_start, group_last)
        chosen = order[pick]
        has_rows = group_total > 0
        centres[:, slot] = xp.where(has_rows[:, None], x[chosen], centres[:, max(slot - 1, 0)])
        gap = ((x - centres[labels, slot]) ** 2).sum(axis=1).astype(xp.float64)
        closest = xp.minimum(closest, gap)
        weight = closest
    return centres


def _sq_dist_to_centres(x: Any, labels: Any, centres: Any, xp: Any) -> Any:
    """(n, k) squared distances of every row to the k centres of its own group (one slot at a time: n×D memory)."""
    return xp.stack([((x - centres[labels, slot]) ** 2).sum(axis=1) for slot in range(centres.shape[1])], axis=1)


def _group_means(x: Any, groups: Any, count: int, backend: Backend) -> Any:
    """(count, D) mean of the rows of each group (zero row for an empty group), via a sparse one-hot product."""
    xp = backend.xp
    one_hot = backend.sparse.csr_matrix(
        (xp.ones(x.shape[0], dtype=xp.float32), (groups, xp.arange(x.shape[0]))), shape=(count, x.shape[0])
    )
    sums = xp.asarray(one_hot @ x)
    sizes = xp.bincount(groups, minlength=count).astype(xp.float32)
    return sums / xp.maximum(sizes, 1)[:, None]
