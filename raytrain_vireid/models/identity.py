"""Identity classifier on top of a backbone: the supervised upper bound's model (``--supervised``)."""

from __future__ import annotations

import torch
from torch import nn

ID_LOGITS = "id_logits"


class WithIdentityClassifier(nn.Module):
    """``backbone`` plus a bias-free linear classifier over ``num_ids`` identities on its first head.

    The forward returns the backbone's outputs and, in training mode, ``"id_logits"`` (B, num_ids), so the
    classifier is part of the (DDP-wrapped) model, its optimiser and its checkpoints. Evaluation and feature
    extraction see the backbone's heads unchanged (``heads``/``feature_dims`` are the backbone's).
    """

    def __init__(self, backbone: nn.Module, num_ids: int) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError(f"WithIdentityClassifier: num_ids must be >= 1, got {num_ids}")
        self.backbone = backbone
        self.heads = tuple(backbone.heads)
        self.feature_dims = dict(backbone.feature_dims)
        self.classifier = nn.Linear(self.feature_dims[self.heads[0]], num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        out = dict(self.backbone(**inputs))
        if self.training:
            out[ID_LOGITS] = self.classifier(out[self.heads[0]])
        return out
