"""Cluster memory (cluster-contrast): logits against L2-normalised centroids, momentum updates.

DDP: every rank holds an identical replica and calls :meth:`ClusterMemory.update` with the
ALL-GATHERED batch (features and labels concatenated in rank order, same on every rank), so the
replicas never drift; updating with only the local shard would make them diverge.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid.losses.soft import soft_cross_entropy


def occurrence_rank(labels: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same label (0 for a first occurrence)."""
    n = labels.numel()
    if n == 0:
        return labels.new_zeros(0)
    sorted_labels, order = torch.sort(labels, stable=True)
    _, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(n, device=labels.device) - starts
    return rank


@torch.no_grad()
def sequential_momentum_update_(bank: torch.Tensor, rows: torch.Tensor, feats: torch.Tensor,
                                momentum: float) -> None:
    """In place, for each (row, feat) in order: ``bank[row] ← μ·bank[row] + (1−μ)·feat``, renormalised.

    Equal to a per-sample loop, but vectorised: round r applies every label's r-th occurrence at
    once (labels within a round are distinct, so their updates do not interact).
    """
    rank = occurrence_rank(rows)
    for r in range(int(rank.max()) + 1 if rank.numel() else 0):
        pick = rank == r
        target = rows[pick]
        mixed = momentum * bank[target] + (1.0 - momentum) * feats[pick].to(bank.dtype)
        bank[target] = mixed / mixed.norm(dim=1, keepdim=True)


class ClusterMemory(nn.Module):
    """One centroid per cluster (buffer ``features`` (C, D), L2-normalised at construction).

    Args:
        centroids: (C, D) initial cluster centres.
        temperature: τ of the logits ``f̂·Mᵀ/τ``.
        momentum: μ of the update ``M[y] ← μ·M[y] + (1−μ)·f̂`` (settable, e.g. epoch-0 warm-up).
    """

    def __init__(self, centroids: torch.Tensor, temperature: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if centroids.dim() != 2:
            raise ValueError(f"ClusterMemory: centroids must be (C, D), got {tuple(centroids.shape)}")
        self.register_buffer("features", F.normalize(centroids.detach().float(), dim=1).clone())
        self.temperature = float(temperature)
        self.momentum = momentum

    @property
    def momentum(self) -> float:
        """μ of the momentum update."""
        return self._momentum

    @momentum.setter
    def momentum(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"ClusterMemory.momentum: must be in [0, 1), got {value}")
        self._momentum = float(value)

    @property
    def num_clusters(self) -> int:
        return self.features.shape[0]

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C) ``normalize(feats)·Mᵀ/τ``; differentiable in ``feats`` only (the memory is a buffer)."""
        return F.normalize(feats, dim=1) @ self.features.t() / self.temperature

    def loss(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of :meth:`logits`: hard int64 targets (B,) with −1 ignored, or soft (B, C)
        with all-zero rows ignored. Returns 0 (still attached to ``feats``) when no row is valid.
        """
        logits = self.logits(feats)
        if targets.is_floating_point():
            valid = targets.sum(dim=1) > 0
            return soft_cross_entropy(logits[valid], targets[valid]) if bool(valid.any()) else logits.sum() * 0.0
        valid = targets >= 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[valid], targets[valid])

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Momentum-update with normalised ``feats`` in batch order (labels −1 skipped).

        With ``generator`` the samples are applied in a random order drawn from it (SALCR: a memory
        updated by both modalities in random order); pass generators seeded alike on every rank.
        """
        feats = F.normalize(feats.detach(), dim=1)
        if generator is not None:
            order = torch.randperm(labels.numel(), generator=generator).to(labels.device)
            feats, labels = feats[order], labels[order]
        keep = labels >= 0
        sequential_momentum_update_(self.features, labels[keep], feats[keep], self.momentum)
