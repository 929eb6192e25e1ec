"""Multi-centre memory (HIL): per cluster its mean and K sub-centres, static within the epoch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid.losses.multicentre import mccl, nearest_cluster


class MultiCentreMemory(nn.Module):
    """Buffer ``centres`` (C, K+1, D), index 0 = cluster mean; never updated during the epoch.

    Being static it needs no DDP synchronisation: every rank builds it from the same LabelSet.
    """

    def __init__(self, centres: torch.Tensor) -> None:
        super().__init__()
        if centres.dim() != 3:
            raise ValueError(f"MultiCentreMemory: centres must be (C, K+1, D), got {tuple(centres.shape)}")
        self.register_buffer("centres", centres.detach().float().clone())

    def distances(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, K+1) L2 distances from the L2-normalised ``feats`` to every sub-centre."""
        num_clusters, per_cluster, dim = self.centres.shape
        flat = torch.cdist(F.normalize(feats, dim=1), self.centres.reshape(-1, dim))
        return flat.reshape(feats.shape[0], num_clusters, per_cluster)

    def nearest_cluster(self, feats: torch.Tensor) -> torch.Tensor:
        """(B,) cluster of each feature's closest sub-centre."""
        with torch.no_grad():
            return nearest_cluster(self.distances(feats))

    def loss(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """MCCL of ``feats`` against this memory (see :func:`raytrain_vireid.losses.multicentre.mccl`)."""
        return mccl(self.distances(feats), mask)
