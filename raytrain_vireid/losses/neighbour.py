"""SDCL collaborative neighbour learning (CNL) over instance memories."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def collaborative_neighbours(query_deep: torch.Tensor, bank_deep: torch.Tensor, query_shallow: torch.Tensor,
                             bank_shallow: torch.Tensor, ratio: float = 0.9) -> torch.Tensor:
    """(B, N) bool: ``{j: s_deep > r·max_deep} ∩ {j: s_shallow > r·max_shallow}`` per query row.

    Queries are the batch samples' own instance-memory rows; banks are the instance memory searched
    (the same modality for the intra term, the other modality for the cross term).
    """
    deep = query_deep @ bank_deep.t()
    shallow = query_shallow @ bank_shallow.t()
    return ((deep > ratio * deep.max(dim=1, keepdim=True).values)
            & (shallow > ratio * shallow.max(dim=1, keepdim=True).values))


def cnl(feats: torch.Tensor, bank: torch.Tensor, neighbours: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Mean over rows of ``−Σ_{j∈N_i} log softmax(f̂_i·bankᵀ/τ)_j / (|N_i| + 1)``.

    ``feats`` (B, D) batch features (normalised here), ``bank`` (N, D) instance memory the softmax is
    over (no gradient), ``neighbours`` (B, N) bool from :func:`collaborative_neighbours`.
    """
    log_prob = F.log_softmax(F.normalize(feats, dim=1) @ bank.detach().t() / temperature, dim=1)
    mask = neighbours.to(log_prob.dtype)
    per_row = -(log_prob * mask).sum(dim=1) / (mask.sum(dim=1) + 1.0)
    return per_row.mean() if per_row.numel() else log_prob.sum() * 0.0
