"""Cluster-memory contrastive losses: SALCR dual-space CE and MULT's OCLR consistency term."""
from __future__ import annotations

import torch

from raytrain_vireid.losses.soft import soft_cross_entropy
from raytrain_vireid.memory.cluster import ClusterMemory


def dual_space_ce(feats: torch.Tensor, visible_memory: ClusterMemory, infrared_memory: ClusterMemory,
                  visible_targets: torch.Tensor, infrared_targets: torch.Tensor) -> torch.Tensor:
    """SALCR global loss ``CE(M_v(f), t_v) + CE(M_r(f), t_r)`` over all rows of ``feats``.

    With ``feats`` ordered [v; a; r], pass ``t_v = [y_v, y_v, ỹ_r→v]`` and
    ``t_r = [ỹ_v→r, ỹ_v→r, y_r]`` (int64, −1 ignored).
    """
    return visible_memory.loss(feats, visible_targets) + infrared_memory.loss(feats, infrared_targets)


def oclr(pred_logits: torch.Tensor, target_logits: torch.Tensor, target_temperature: float = 0.2,
         detach: bool = False) -> torch.Tensor:
    """MULT consistency ``SCE(p, t) = −Σ softmax(t/T)·log softmax(p)``, mean over rows.

    ``pred_logits``, ``target_logits``: (B, C) memory logits (already divided by the memory τ, so the
    effective target temperature is τ·T = 0.01 by default). MULT lets gradients flow into the target;
    ``detach=True`` gives SALCR's variant.
    """
    if detach:
        target_logits = target_logits.detach()
    return soft_cross_entropy(pred_logits, torch.softmax(target_logits / target_temperature, dim=1))
