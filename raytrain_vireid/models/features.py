"""Evaluation-time embeddings: flip-averaged, per-head L2-normalised BN-neck features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.models.precision import autocast, float32_outputs


def _forward_modality(model: nn.Module, images: torch.Tensor, modality: int) -> dict[str, torch.Tensor]:
    if modality == VISIBLE:
        return model(visible=images)
    if modality == INFRARED:
        return model(infrared=images)
    raise ValueError(f"modality must be {VISIBLE} (visible) or {INFRARED} (infrared), got {modality}")


def embed(model: nn.Module, images: torch.Tensor, modality: int, flip: bool = True,
          amp_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Features of one-modality ``images`` (B, 3, H, W) for every key of ``model.feature_dims`` (the heads,
    plus e.g. SALCR's eval-mode part features).

    Eval mode, no grad; with ``flip`` the BN features of the image and its horizontal flip are
    averaged; each feature is then L2-normalised. ``amp_dtype``: the network's forward under autocast in that
    dtype (``models.precision``), its features back in float32. The model's train/eval mode is restored afterwards.
    """

    def forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(images.device, amp_dtype):
            out = _forward_modality(model, batch, modality)
        return float32_outputs({key: out[key] for key in model.feature_dims})

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = forward(images)
            if flip:
                flipped = forward(images.flip(-1))
                feats = {key: (f + flipped[key]) / 2 for key, f in feats.items()}
    finally:
        model.train(was_training)
    return {key: F.normalize(f, dim=1) for key, f in feats.items()}


def concat_heads(features: dict[str, torch.Tensor], heads: Sequence[str]) -> torch.Tensor:
    """Concatenate the given heads' features along dim 1, then L2-normalise (SDCL's clustering/test feature)."""
    return F.normalize(torch.cat([features[h] for h in heads], dim=1), dim=1)
