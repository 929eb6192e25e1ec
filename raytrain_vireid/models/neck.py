"""BN neck: the BatchNorm1d after pooling whose output is the re-identification feature."""

from __future__ import annotations

from torch import nn


def bn_neck(dim: int) -> nn.BatchNorm1d:
    """BatchNorm1d(dim) with weight 1, bias 0 and the bias frozen (``requires_grad=False``), as in BNNeck."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn
