"""Evaluation-time embeddings: flip-averaged, per-head L2-normalised BN-neck features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE


def _forward_modality(model: nn.Module, images: torch.Tensor, modality: int) -> dict[str, torch.Tensor]:
    if modality == VISIBLE:
        return model(visible=images)
    if modality == INFRARED:
        return model(infrared=images)
    raise ValueError(f"modality must be {VISIBLE} (visible) or {INFRARED} (infrared), got {modality}")


def embed(model: nn.Module, images: torch.Tensor, modality: int, flip: bool = True) -> dict[str, torch.Tensor]:
    """Features of one-modality ``images`` (B, 3, H, W) for every head in ``model.heads``.

    Eval mode, no grad; with ``flip`` the BN features of the image and its horizontal flip are
    averaged; each head is then L2-normalised. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = _forward_modality(model, images, modality)
            feats = {head: out[head] for head in model.heads}
            if flip:
                flipped = _forward_modality(model, images.flip(-1), modality)
                feats = {head: (f + flipped[head]) / 2 for head, f in feats.items()}
    finally:
        model.train(was_training)
    return {head: F.normalize(f, dim=1) for head, f in feats.items()}


def concat_heads(features: dict[str, torch.Tensor], heads: Sequence[str]) -> torch.Tensor:
    """Concatenate the given heads' features along dim 1, then L2-normalise (SDCL's clustering/test feature)."""
    return F.normalize(torch.cat([features[h] for h in heads], dim=1), dim=1)
