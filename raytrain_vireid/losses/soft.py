"""Cross-entropy with soft targets and the β-mixed targets of MULT."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``−Σ_c targets[b, c]·log softmax(logits[b])_c``.

    ``logits`` and ``targets`` are (B, C); target rows should sum to 1. Gradients flow into
    ``targets`` too when it requires grad (callers detach when they want a fixed target).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"soft_cross_entropy: logits {tuple(logits.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mixed_targets(labels: torch.Tensor, soft: torch.Tensor, beta: float = 0.7) -> torch.Tensor:
    """MULT targets ``β·onehot(labels) + (1−β)·soft`` (B, C); rows with label −1 are all zero."""
    onehot = torch.zeros_like(soft)
    valid = labels >= 0
    onehot[valid, labels[valid]] = 1.0
    return (beta * onehot + (1.0 - beta) * soft) * valid.unsqueeze(1).to(soft.dtype)
