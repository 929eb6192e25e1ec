"""HIL multi-centre contrastive loss (MCCL), on distances to every sub-centre of every cluster."""
from __future__ import annotations

import torch


def nearest_cluster(distances: torch.Tensor) -> torch.Tensor:
    """(B,) index of the cluster holding the closest sub-centre, from (B, C, K+1) distances."""
    return distances.min(dim=2).values.argmin(dim=1)


def mccl(distances: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Mean over kept rows of ``−log(pos / (pos + neg))``.

    ``distances`` (B, C, K+1): L2 distance of each feature to every sub-centre. The positive cluster
    is the nearest one (:func:`nearest_cluster`, not the pseudo-label); ``pos`` = mean over its K+1
    sub-centres of 1/distance; ``neg`` = mean over the other clusters of 1/(their minimum distance).
    ``mask`` (B,) bool keeps rows (e.g. deep and shallow nearest clusters agree). Distances are
    clamped at ``eps``. Returns 0 (attached) with no kept row or fewer than two clusters.
    """
    batch, num_clusters, _ = distances.shape
    keep = torch.ones(batch, dtype=torch.bool, device=distances.device) if mask is None else mask
    if num_clusters < 2 or not bool(keep.any()):
        return distances.sum() * 0.0
    inverse = 1.0 / distances[keep].clamp_min(eps)                      # (B', C, K+1)
    positive = nearest_cluster(distances[keep])
    is_positive = torch.nn.functional.one_hot(positive, num_clusters).bool()
    pos = inverse[is_positive].mean(dim=1)                              # (B',)
    closest = inverse.max(dim=2).values                                 # 1/min distance per cluster
    neg = closest.masked_fill(is_positive, 0.0).sum(dim=1) / (num_clusters - 1)
    return -torch.log(pos / (pos + neg)).mean()
