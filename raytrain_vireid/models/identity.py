"""Identity classifiers on top of a backbone: the supervised upper bound's model (``--supervised``)."""

from __future__ import annotations

import torch
from torch import nn

ID_LOGITS = "id_logits"


def id_logits_key(head: str) -> str:
    """The forward output holding the identity logits of ``head``'s classifier."""
    return f"{ID_LOGITS}.{head}"


class WithIdentityClassifier(nn.Module):
    """``backbone`` plus one bias-free linear classifier over ``num_ids`` identities per head.

    Every head gets its own classifier so that every parameter of the backbone is in the loss: a classifier on
    the first head only leaves e.g. the SDCL ViT's shallow branch without a gradient, which DDP refuses. In
    training mode the forward adds ``id_logits_key(head)`` (B, num_ids) for each head, so the classifiers are
    part of the (DDP-wrapped) model, its optimiser and its checkpoints. Evaluation and feature extraction see
    the backbone's heads unchanged (``heads``/``feature_dims`` are the backbone's).
    """

    def __init__(self, backbone: nn.Module, num_ids: int) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError(f"WithIdentityClassifier: num_ids must be >= 1, got {num_ids}")
        self.backbone = backbone
        self.heads = tuple(backbone.heads)
        self.feature_dims = dict(backbone.feature_dims)
        self.classifiers = nn.ModuleDict(
            {head: nn.Linear(self.feature_dims[head], num_ids, bias=False) for head in self.heads})
        for classifier in self.classifiers.values():
            nn.init.normal_(classifier.weight, std=0.001)

    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        out = dict(self.backbone(**inputs))
        if self.training:
            out.update({id_logits_key(head): classifier(out[head]) for head, classifier in self.classifiers.items()})
        return out
