"""SDCL (CVPR 2024; METHODS.md §4): dual-head ViT cluster contrast + collaborative neighbour learning (CNL).

Stage 1 (epochs before ``stage.stage2_epoch``): per-modality cluster memories for each head (deep and
shallow), trained by the visible views v, a and the infrared view r, plus CNL over per-modality instance
memories: ``Σ CE_cluster + w_intra·CNL_intra + w_cross·CNL_cross``.
Stage 2: CRA gives every visible image an infrared-space label (the memory actor runs ``association:
cra``); one *shared* infrared-space memory per head, initialised from RGB+IR means under the unified
labels, replaces both cluster memories; visible images train only when their CRA label and their own
DBSCAN label are both valid. CNL continues with the stage-2 weights.

Reusable pieces (HIL builds on them): :func:`cnl_terms`, :func:`cnl_loss`, :func:`unified_labels`,
:func:`shared_centroids`; the instance memories are in :mod:`raytrain_vireid.methods.instances`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import Config
from raytrain_vireid.data.samplers import PseudoIdentitySampler
from raytrain_vireid.errors import UserError
from raytrain_vireid.losses.neighbour import cnl, collaborative_neighbours
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, Method, memory_key
from raytrain_vireid.methods.instances import (MODALITY_VIEWS, build_instance_memories, instance_key, modality_positions,
                                               update_instance_memories)
from raytrain_vireid.methods.registry import register
from raytrain_vireid.pseudo.labelset import LabelSet

SHARED = "shared"


# ---- CNL --------------------------------------------------------------------------------------------
def cnl_terms(outputs: Mapping[str, torch.Tensor], batch: Batch, memories: nn.ModuleDict, positions: torch.Tensor,
              query: int, bank: int, heads: tuple[str, str], head_weights: tuple[float, float], ratio: float,
              temperature: float) -> torch.Tensor:
    """CNL of the batch rows of modality ``query`` against the instance memories of modality ``bank``.

    Neighbours (no gradient) come from the rows' own instance-memory entries: the intersection over the
    deep and shallow heads of ``{j: s_j > ratio·max s}``; the loss is
    ``Σ_h head_weights[h] · cnl(outputs[h], bank_h, neighbours)``. Returns 0 when no row has modality ``query``.
    """
    deep, shallow = heads
    rows = batch.rows(*MODALITY_VIEWS[query])
    if not bool(rows.any()):
        return outputs[deep].sum() * 0.0
    local = positions[batch.index[rows]]
    own = {h: memories[instance_key(h, query)].features[local] for h in heads}
    banks = {h: memories[instance_key(h, bank)].features for h in heads}
    neighbours = collaborative_neighbours(own[deep], banks[deep], own[shallow], banks[shallow], ratio)
    return sum(w * cnl(outputs[h][rows], banks[h], neighbours, temperature) for h, w in zip(heads, head_weights))


def cross_direction(epoch: int, cross_epoch: int) -> tuple[int, int] | None:
    """(query, bank) modality of this epoch's cross-modality CNL term: None before ``cross_epoch``,
    visible→infrared on even epochs, infrared→visible on odd ones."""
    if epoch < cross_epoch:
        return None
    return (VISIBLE, INFRARED) if epoch % 2 == 0 else (INFRARED, VISIBLE)


# ---- stage 2 -----------------------------------------------------------------------------------------
def unified_labels(labels: np.ndarray, cross: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """Stage-2 training labels in the infrared space: infrared rows keep their DBSCAN label; visible rows
    take their CRA label when it AND their own DBSCAN label are both valid, else -1 (not trained)."""
    labels, cross = np.asarray(labels, dtype=np.int64), np.asarray(cross, dtype=np.int64)
    visible = np.asarray(modality) == VISIBLE
    keep_visible = visible & (labels >= 0) & (cross >= 0)
    return np.where(visible, np.where(keep_visible, cross, -1), labels)


def shared_centroids(visible: torch.Tensor, visible_labels: torch.Tensor, infrared: torch.Tensor,
                     infrared_labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """(C, D) L2-normalised means over visible rows (by CRA label) and infrared rows (by DBSCAN label)
    together; label -1 ignored. An empty cluster gives a zero row."""
    feats = torch.cat([visible, infrared])
    labels = torch.cat([visible_labels, infrared_labels]).to(feats.device)
    keep = labels >= 0
    sums = feats.new_zeros(num_clusters, feats.shape[1]).index_add_(0, labels[keep], feats[keep])
    return torch.nn.functional.normalize(sums, dim=1)


@register
class SDCL(Method):
    """SDCL on the two-head ViT: cluster memories per modality × head, instance memories, CNL, CRA stage 2."""

    name = "sdcl"
    needs_instance_features = True
    PARAMS = {
        "neighbour_ratio": 0.9,  # CNL relative threshold: s > 0.9·max s, in both heads
        "shallow_weight": 0.5,  # CNL weight of the shallow head (deep: 1)
        "visible_to_infrared_scale": 0.1,  # extra factor of the even-epoch rgb→ir CNL term
    }

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        super().__init__(config, heads, modality)
        if len(heads) != 2:
            raise UserError(f"model.arch: sdcl needs a model with deep and shallow heads (model.arch: vit), "
                            f"got heads {heads}")
        self.instances = nn.ModuleDict()
        self.positions = torch.from_numpy(modality_positions(self.modality))
        self.unified: torch.Tensor | None = None

    # ---- labels and memories ----------------------------------------------------------------
    def on_features(self, features: dict[str, np.ndarray], device: torch.device) -> None:
        self.instances = build_instance_memories(features, self.modality, self.heads,
                                                 self.config.memory.instance_momentum, device)
        self.positions = self.positions.to(device)

    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        """Stage 1: per-modality cluster memories (base). With CRA labels: one shared memory per head instead."""
        if labelset.cross is None:
            super().on_labels(labelset, device)
            self.unified = None
        else:
            self.labelset = labelset
            unified = unified_labels(labelset.labels, labelset.cross, self.modality)
            self.unified = torch.from_numpy(unified).to(device)
            self.memories = nn.ModuleDict({
                memory_key(head, SHARED): self._cluster_memory(self.shared_init(head, labelset).cpu().numpy(), device)
                for head in self.heads})
        # the instance memories ride along in ``memories`` so that checksums and drift checks see them
        for key, memory in self.instances.items():
            self.memories[f"instance/{key}"] = memory

    def shared_init(self, head: str, labelset: LabelSet) -> torch.Tensor:
        """Shared-memory centres of ``head`` from this epoch's instance features (before any update): visible
        rows under their CRA label, infrared rows under their DBSCAN label (as the research code does)."""
        visible, infrared = self.modality == VISIBLE, self.modality == INFRARED
        memory_v = self.instances[instance_key(head, VISIBLE)].features
        memory_r = self.instances[instance_key(head, INFRARED)].features
        device = memory_v.device
        return shared_centroids(memory_v, torch.from_numpy(labelset.cross[visible]).to(device),
                                memory_r, torch.from_numpy(labelset.labels[infrared]).to(device),
                                labelset.num_clusters[INFRARED])

    def sampler(self, labelset: LabelSet, epoch: int, rank: int, world_size: int) -> PseudoIdentitySampler:
        """P×K per modality over the own labels (stage 1) or the unified infrared-space labels (stage 2)."""
        labels = labelset.labels if labelset.cross is None else unified_labels(labelset.labels, labelset.cross,
                                                                               self.modality)
        train = self.config.train
        return PseudoIdentitySampler(labels, self.modality, train.ids_per_modality, train.instances,
                                     rank, world_size, train.seed)

    # ---- the step ---------------------------------------------------------------------------
    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Cluster CE (per-modality or shared) + ``w_intra·CNL_intra + w_cross·CNL_cross``."""
        if self.unified is None:
            total, logs = super().loss(outputs, batch, epoch)
        else:
            total, logs = self.shared_loss(outputs, batch)
        cnl_total, cnl_logs = self.cnl_loss(outputs, batch, epoch)
        logs.update(cnl_logs)
        return total + cnl_total, logs

    def shared_loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage 2: CE of every view against the shared infrared-space memory of each head (unified targets)."""
        targets = self.unified[batch.index]
        total = outputs[self.heads[0]].new_zeros(())
        logs: dict[str, float] = {}
        for head in self.heads:
            term = self.view_terms(outputs[head], batch, targets, {VIEW_V: SHARED, VIEW_A: SHARED, VIEW_R: SHARED},
                                   head)
            logs[f"loss_shared_{head}"] = float(term.detach())
            total = total + self.weight("intra") * term
        return total, logs

    def cnl_loss(self, outputs: Mapping[str, torch.Tensor], batch: Batch,
                 epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """``w_intra·(CNL_rgb→rgb + CNL_ir→ir) + w_cross·CNL_cross`` with this epoch's cross direction
        (:func:`cross_direction`; the rgb→ir term has the extra ``visible_to_infrared_scale``)."""
        def term(query: int, bank: int) -> torch.Tensor:
            return cnl_terms(outputs, batch, self.instances, self.positions, query, bank, self.heads,
                             (1.0, float(self.params["shallow_weight"])), float(self.params["neighbour_ratio"]),
                             self.config.memory.temperature)

        intra = term(VISIBLE, VISIBLE) + term(INFRARED, INFRARED)
        logs = {"loss_cnl_intra": float(intra.detach())}
        total = self.stage_weight("cnl_intra", epoch) * intra
        direction = cross_direction(epoch, self.config.stage.cross_epoch)
        if direction is not None:
            scale = float(self.params["visible_to_infrared_scale"]) if direction == (VISIBLE, INFRARED) else 1.0
            cross = scale * term(*direction)
            logs["loss_cnl_cross"] = float(cross.detach())
            total = total + self.stage_weight("cnl_cross", epoch) * cross
        return total, logs

    def stage_weight(self, term: str, epoch: int) -> float:
        """``loss.<term>`` in stage 1; ``loss.<term>_stage2`` in stage 2 when set (else the stage-1 weight)."""
        if self.stage(epoch) == 2 and f"{term}_stage2" in self.config.loss:
            return self.weight(f"{term}_stage2")
        return self.weight(term)

    def update_memories(self, gathered: Batch) -> None:
        """Cluster memories (per-modality, or shared with the unified labels), then the instance memories."""
        if self.unified is None:
            super().update_memories(gathered)
        else:
            targets = self.unified[gathered.index]
            for head in self.heads:
                self.memories[memory_key(head, SHARED)].update(gathered.features[head], targets)
        update_instance_memories(self.instances, gathered, self.positions, self.heads)
