"""Instance memory: one L2-normalised feature per training image (SDCL "wise" memory, SALCR GPCR).

DDP: every rank holds an identical replica and calls :meth:`InstanceMemory.update` with the
ALL-GATHERED batch (indices and features concatenated in rank order), so replicas never drift.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid.memory.cluster import sequential_momentum_update_


class InstanceMemory(nn.Module):
    """Buffer ``features`` (N, D), row i = image with table index i.

    Args:
        features: (N, D) initial features (L2-normalised here).
        momentum: μ of ``M[i] ← μ·M[i] + (1−μ)·f̂`` (SDCL uses 0.9).
        static: if True, :meth:`update` leaves the memory untouched (SALCR GPCR: fixed within the epoch).
    """

    def __init__(self, features: torch.Tensor, momentum: float = 0.9, static: bool = False) -> None:
        super().__init__()
        if features.dim() != 2:
            raise ValueError(f"InstanceMemory: features must be (N, D), got {tuple(features.shape)}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"InstanceMemory.momentum: must be in [0, 1), got {momentum}")
        self.register_buffer("features", F.normalize(features.detach().float(), dim=1).clone())
        self.momentum = float(momentum)
        self.static = static

    def similarity(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, N) inner products ``feats·Mᵀ`` (pass L2-normalised ``feats`` for cosine similarity)."""
        return feats @ self.features.t()

    @torch.no_grad()
    def update(self, indices: torch.Tensor, feats: torch.Tensor) -> None:
        """Sequential momentum update of rows ``indices`` (in order; repeats allowed) unless static."""
        if self.static:
            return
        sequential_momentum_update_(self.features, indices, F.normalize(feats.detach(), dim=1), self.momentum)
