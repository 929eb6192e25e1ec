"""Generalised-mean (GeM) pooling over the spatial positions of a feature map."""

from __future__ import annotations

import torch
from torch import nn

from raytrain_vireid.errors import UserError


class GeM(nn.Module):
    """GeM pooling ``(mean(clamp(x, eps)^p))^(1/p)`` over H×W, with a fixed (non-learnable) exponent ``p``.

    ``p=1`` is average pooling; ``p→∞`` tends to max pooling. Input (B, C, H, W), output (B, C).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise UserError(f"model.gem_p: {p} must be positive")
        self.p = float(p)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # under bfloat16 autocast the cube and its root lose digits; a no-op for float32 maps
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"
