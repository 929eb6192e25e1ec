"""HIL (METHODS.md §3): SDCL stage-2 fine-tuning + BRST association + multi-centre contrastive loss (MCCL).

Built on :class:`~raytrain_vireid.methods.sdcl.SDCL` (shared IR-space memory, CNL, instance memories).
Deviations from the research code (documented in recipes/hil.yaml): no reload of the best-by-test
checkpoint at epoch 20; MCCL "intra" is against the own-modality multi-centre memory and "cross"
against the other modality's (the released code uses the shared memory for both, duplicating them).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import Config
from raytrain_vireid.memory.multicentre import MultiCentreMemory
from raytrain_vireid.methods.base import Batch
from raytrain_vireid.methods.registry import register
from raytrain_vireid.methods.sdcl import SDCL
from raytrain_vireid.pseudo.engine import RelabelPlan
from raytrain_vireid.pseudo.labelset import LabelSet


def mccl_weight(epoch: int, switch_epoch: int, early: float = 0.1, late: float = 1.0) -> float:
    """MCCL weight: ``early`` before ``switch_epoch``, ``late`` from it on."""
    return early if epoch < switch_epoch else late


def agreement_mask(deep: MultiCentreMemory, shallow: MultiCentreMemory, deep_feats: torch.Tensor,
                   shallow_feats: torch.Tensor) -> torch.Tensor:
    """(B,) True where the deep and shallow features' nearest clusters agree."""
    return deep.nearest_cluster(deep_feats) == shallow.nearest_cluster(shallow_feats)


def multicentre_key(modality: int, head: str) -> str:
    return f"{modality}/{head}"


@register
class HIL(SDCL):
    """SDCL + MCCL on per-modality multi-centre memories (static within the epoch)."""

    name = "hil"
    PARAMS = {
        **SDCL.PARAMS,
        "subcluster_k": 9,  # sub-centres per cluster (9 SYSU, 2 RegDB)
        "subcluster_blend": 0.9,
        "mccl_switch_epoch": 20,  # MCCL weight 0.1 before, 1 from this epoch
        "mccl_early_weight": 0.1,
        "mccl_late_weight": 1.0,
    }

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        super().__init__(config, heads, modality)
        self.multicentre = nn.ModuleDict()
        self.modality_t = torch.from_numpy(np.asarray(modality, dtype=np.int64))

    def relabel_plan(self, epoch: int) -> RelabelPlan:
        """SDCL's plan plus the sub-centres of every (modality, head)."""
        return dataclasses.replace(super().relabel_plan(epoch), subcluster_k=int(self.params["subcluster_k"]),
                                   subcluster_blend=float(self.params["subcluster_blend"]))

    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        super().on_labels(labelset, device)
        self.modality_t = self.modality_t.to(device)
        self.multicentre = nn.ModuleDict({
            multicentre_key(m, head): MultiCentreMemory(torch.from_numpy(np.asarray(centres)).to(device))
            for (m, head), centres in labelset.extra.get("subcentres", {}).items()})

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        total, logs = super().loss(outputs, batch, epoch)
        if not self.multicentre:
            return total, logs
        intra, cross = self.mccl_terms(outputs, batch)
        w = mccl_weight(epoch, int(self.params["mccl_switch_epoch"]), float(self.params["mccl_early_weight"]),
                        float(self.params["mccl_late_weight"]))
        logs.update(loss_mccl_intra=float(intra.detach()), loss_mccl_cross=float(cross.detach()))
        return total + w * (intra + cross), logs

    def mccl_terms(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(intra, cross) MCCL summed over modalities; deep weight 1, shallow ``shallow_weight``; rows kept
        only where deep and shallow nearest clusters agree (per memory)."""
        deep, shallow = self.heads
        head_weight = {deep: 1.0, shallow: float(self.params["shallow_weight"])}
        row_modality = self.modality_t[batch.index]
        intra = outputs[deep].new_zeros(())
        cross = outputs[deep].new_zeros(())
        for query in (VISIBLE, INFRARED):
            rows = row_modality == query
            if not bool(rows.any()):
                continue
            for bank in (VISIBLE, INFRARED):
                mem = {h: self.multicentre[multicentre_key(bank, h)] for h in self.heads}
                feats = {h: outputs[h][rows] for h in self.heads}
                mask = agreement_mask(mem[deep], mem[shallow], feats[deep], feats[shallow])
                term = sum(head_weight[h] * mem[h].loss(feats[h], mask) for h in self.heads)
                if bank == query:
                    intra = intra + term
                else:
                    cross = cross + term
        return intra, cross
