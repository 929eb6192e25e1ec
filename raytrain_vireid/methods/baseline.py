"""Baseline: dual-stream cluster contrast (METHODS.md §0/§6), the common core of the published methods.

Stage 1 (epochs before ``stage.stage2_epoch``): intra-modality cluster contrast,
``CE(M_v(f_v), y_v) + CE(M_v(f_a), y_v) + CE(M_r(f_r), y_r)``.
Stage 2: the memory actor adds the cross-modality association (``pseudo.association``: Hungarian by
default, or Sinkhorn), giving visible rows a label in the infrared space; a *shared* memory in the
infrared label space (initialised from the infrared centroids) is trained by the visible views with a
valid cross label and updated by them and by the infrared rows:
``+ w_cross · [CE(M_s(f_v), ỹ_v→r) + CE(M_s(f_a), ỹ_v→r) + CE(M_s(f_r), y_r)]``.
The shared term is on whenever the LabelSet carries cross labels (so ``--supervised`` runs, whose
cross labels are the true identities, use it from the start).
"""

from __future__ import annotations

import torch

from raytrain_vireid import INFRARED
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, Method, memory_key, space_labels
from raytrain_vireid.methods.registry import register
from raytrain_vireid.pseudo.labelset import LabelSet

SHARED = "shared"


@register
class Baseline(Method):
    """Dual-stream cluster contrast; stage 2 adds association and the shared infrared-space memory."""

    name = "baseline"

    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        super().on_labels(labelset, device)
        if self.uses_cross():
            for head in self.heads:
                self.memories[memory_key(head, SHARED)] = self._cluster_memory(
                    labelset.centroids[(INFRARED, head)], device)

    def shared_targets(self, batch: Batch) -> torch.Tensor:
        """Infrared-space targets: the cross label for visible rows, the own label for infrared rows."""
        return space_labels(batch, INFRARED)

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        total, logs = super().loss(outputs, batch, epoch)
        if not self.uses_cross():
            return total, logs
        targets = self.shared_targets(batch)
        for head in self.heads:
            term = self.view_terms(outputs[head], batch, targets, {VIEW_V: SHARED, VIEW_A: SHARED, VIEW_R: SHARED}, head)
            logs[f"loss_cross_{head}"] = float(term.detach())
            total = total + self.weight("cross") * term
        return total, logs

    def update_memories(self, gathered: Batch) -> None:
        super().update_memories(gathered)
        if not self.uses_cross():
            return
        targets = self.shared_targets(gathered)
        for head in self.heads:
            self.memories[memory_key(head, SHARED)].update(gathered.features[head], targets)

