"""A cross-modality term from a hand-crafted prior (``pseudo.prior``), added to any method's loss.

Every training row has its ``pseudo.prior_k`` nearest rows of the other modality in the prior's space
(:func:`~raytrain_vireid.pseudo.descriptors.cross_modality_neighbours`). Each step, a batch row's feature is
scored against the other modality's instance memory (this epoch's extracted features, momentum-updated) and
pulled towards those neighbours with SDCL's neighbour loss (:func:`~raytrain_vireid.losses.neighbour.cnl`):
the network learns the prior's cross-modality neighbourhoods, which a network without pretrained weights
does not find by itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.losses.neighbour import cnl
from raytrain_vireid.methods.base import Batch
from raytrain_vireid.methods.instances import (MODALITY_VIEWS, build_instance_memories, instance_key, modality_positions,
                                               update_instance_memories)


class PriorNeighbourTerm:
    """``Σ_m cnl(f_rows of m, instance memory of the other modality, prior neighbours)`` on the first head."""

    def __init__(self, neighbours: np.ndarray, modality: np.ndarray, head: str, temperature: float,
                 momentum: float) -> None:
        self.modality = np.asarray(modality)
        self.neighbours = torch.tensor(neighbours, dtype=torch.long)  # a copy: Ray hands a read-only view
        self.positions = torch.from_numpy(modality_positions(self.modality))
        self.head, self.temperature, self.momentum = head, temperature, momentum
        self.memories = nn.ModuleDict()

    def on_features(self, features: dict[str, np.ndarray], device: torch.device) -> None:
        """Per-modality instance memories of the head from every training row's features."""
        self.memories = build_instance_memories(features, self.modality, (self.head,), self.momentum, device)
        self.neighbours, self.positions = self.neighbours.to(device), self.positions.to(device)

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        total = outputs[self.head].new_zeros(())
        for query, bank in ((VISIBLE, INFRARED), (INFRARED, VISIBLE)):
            rows = batch.rows(*MODALITY_VIEWS[query])
            if not bool(rows.any()):
                continue
            memory = self.memories[instance_key(self.head, bank)].features
            mask = torch.zeros(int(rows.sum()), memory.shape[0], dtype=torch.bool, device=memory.device)
            mask.scatter_(1, self.neighbours[batch.index[rows]], True)
            total = total + cnl(outputs[self.head][rows], memory, mask, self.temperature)
        return total

    @torch.no_grad()
    def update(self, gathered: Batch) -> None:
        update_instance_memories(self.memories, gathered, self.positions, (self.head,))
