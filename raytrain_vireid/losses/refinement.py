"""SALCR GPCR instance refinement: positives from top-k instance neighbours agreed across the triplet.

Rows are ordered [v; a; r] (3B): position b of each view is one aligned triplet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _views(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if mask.shape[0] % 3:
        raise ValueError(f"gpcr: rows must be [v; a; r] (a multiple of 3), got {mask.shape[0]}")
    return mask.chunk(3, dim=0)


@torch.no_grad()
def topk_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) bool marking each row's ``min(k, N)`` largest entries."""
    index = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return torch.zeros_like(logits, dtype=torch.bool).scatter_(1, index, True)


def triplet_intersection(mask: torch.Tensor) -> torch.Tensor:
    """(3B, N): every view's row b becomes ``mask_v[b] & mask_a[b] & mask_r[b]``."""
    v, a, r = _views(mask)
    return (v & a & r).repeat(3, 1)


def other_views_union(mask: torch.Tensor) -> torch.Tensor:
    """(3B, N): view x's row b becomes the union of the two other views' rows b."""
    v, a, r = _views(mask)
    return torch.cat([a | r, v | r, v | a])


def positive_mass_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows with a positive of ``−log Σ_{j∈P} softmax(logits)_j`` (0 if no row has one)."""
    keep = positives.any(dim=1)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    log_prob = F.log_softmax(logits[keep], dim=1)
    return -torch.logsumexp(log_prob.masked_fill(~positives[keep], float("-inf")), dim=1).mean()


def gpcr(feats: torch.Tensor, bank: torch.Tensor, k: int = 30,
         temperature: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Global GPCR over one instance memory ``bank`` (N, D, static, no gradient).

    Returns ``(loss, positives)``: positives (3B, N) = top-k of each view intersected across the
    triplet; reuse them as ``global_positives`` in :func:`gpcr_part`.
    """
    logits = F.normalize(feats, dim=1) @ bank.detach().t() / temperature
    positives = triplet_intersection(topk_mask(logits, k))
    return positive_mass_loss(logits, positives), positives


def gpcr_part(part_feats: torch.Tensor, bank: torch.Tensor, global_positives: torch.Tensor, k: int = 30,
              temperature: float = 0.05) -> torch.Tensor:
    """Part GPCR: positives = (union of the other two views' part top-k) ∩ the global positives."""
    logits = F.normalize(part_feats, dim=1) @ bank.detach().t() / temperature
    positives = other_views_union(topk_mask(logits, k)) & global_positives
    return positive_mass_loss(logits, positives)
