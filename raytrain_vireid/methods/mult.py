"""MULT (IJCV 2024; METHODS.md §2): label transfer + six memories with label-space parity alternation + OCLR.

Stage 1 (epochs before ``stage.stage2_epoch``) is the baseline's intra-modality dual-stream cluster
contrast (inherited unchanged). Stage 2: the memory actor runs ``association: propagation`` (MULT label
transfer; DBSCAN outliers are labelled by propagation, so every row has an own and a cross label and the
β-mixed soft targets ``LabelSet.soft["own_<m>"/"cross_<m>"]``). Six cluster memories per head, rebuilt every
epoch from the centroids of their label space:

- specific: ``M_v`` (RGB space, RGB rows by own label), ``M_r`` (IR space, IR rows by own label);
- cross: ``M_rcm`` (RGB space, IR rows by their r→v label), ``M_vcm`` (IR space, RGB rows by v→r label);
- agnostic: ``M_va`` (RGB space, everyone), ``M_ra`` (IR space, everyone).

The unified label space ``s`` alternates by epoch parity (RGB on even epochs, IR on odd ones); with ``o`` the
other modality, ``X_s`` the cross memory and ``A_s`` the agnostic memory of space ``s``:

- ``L_ms = CE(M_v(f_v), y_v) + CE(M_v(f_a), y_v) + CE(M_r(f_r), y_r) + CE(X_s(f_o), y_o→s)``;
- ``L_ma = Σ_views CE(A_s(f), y^s)`` (own label for rows of modality s, cross label for the others);
- ``L_OCLR = Σ_{T ∈ {M_s, X_s}} SCE(A_s(f_v), T(f_a)) + SCE(A_s(f_a), T(f_v)) + SCE(A_s(f_r), T(f_r))``.

CE uses the β-mixed soft targets when the LabelSet carries them (hard labels otherwise, e.g. ``--supervised``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import Config
from raytrain_vireid.errors import UserError
from raytrain_vireid.losses.contrastive import oclr
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, Method, memory_key, space_labels
from raytrain_vireid.methods.registry import register
from raytrain_vireid.methods.instances import MODALITY_VIEWS, modality_positions
from raytrain_vireid.pseudo.labelset import LabelSet

OTHER = {VISIBLE: INFRARED, INFRARED: VISIBLE}
# Memory roles by label space; ROLES maps each role to the label space (modality) its centroids come from.
SPECIFIC = {VISIBLE: "specific_v", INFRARED: "specific_r"}  # M_v, M_r
CROSS = {VISIBLE: "cross_rcm", INFRARED: "cross_vcm"}  # M_rcm (RGB space), M_vcm (IR space)
AGNOSTIC = {VISIBLE: "agnostic_va", INFRARED: "agnostic_ra"}  # M_va, M_ra
ROLES = {**{SPECIFIC[m]: m for m in SPECIFIC}, **{CROSS[m]: m for m in CROSS}, **{AGNOSTIC[m]: m for m in AGNOSTIC}}


def label_space(epoch: int) -> int:
    """The unified label space of a stage-2 epoch: RGB (VISIBLE) on even epochs, IR (INFRARED) on odd ones."""
    return VISIBLE if epoch % 2 == 0 else INFRARED


def active_roles(space: int) -> dict[str, str]:
    """The memory roles one epoch uses: both specific memories and the cross and agnostic ones of ``space``."""
    return {"specific_v": SPECIFIC[VISIBLE], "specific_r": SPECIFIC[INFRARED],
            "cross": CROSS[space], "agnostic": AGNOSTIC[space]}


@register
class MULT(Method):
    """MULT on the two-stream ResNet: baseline stage 1; stage 2 = six memories, parity alternation, OCLR."""

    name = "mult"
    PARAMS: ClassVar[dict] = {
        "oclr_detach": False,  # MULT lets OCLR gradients flow into the target logits; True = SALCR's detached copy
        "oclr_temperature": 0.2,  # SCE target temperature ratio (effective 0.05·0.2 = 0.01)
    }

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        super().__init__(config, heads, modality)
        if not float(self.params["oclr_temperature"]) > 0:
            raise UserError(f"method_params.oclr_temperature: must be > 0, got {self.params['oclr_temperature']}")
        self.positions = torch.from_numpy(modality_positions(self.modality))
        self.soft: dict[tuple[str, int], torch.Tensor] = {}

    # ---- labels and memories ----------------------------------------------------------------
    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        """Stage 1: the baseline's per-modality memories. Stage 2: the six memories of every head, each
        initialised from the centroids of its label space, and the soft targets moved to ``device``."""
        if labelset.cross is None:
            super().on_labels(labelset, device)
            return
        self.labelset = labelset
        self.positions = self.positions.to(device)
        self.soft = {(kind, m): torch.tensor(np.asarray(labelset.soft[f"{kind}_{m}"], dtype=np.float32), device=device)
                     for kind in ("own", "cross") for m in (VISIBLE, INFRARED) if f"{kind}_{m}" in labelset.soft}
        self.memories = torch.nn.ModuleDict()
        for head in self.heads:
            centroids = {m: self.space_centroids(labelset, m, head) for m in (VISIBLE, INFRARED)}
            for role, space in ROLES.items():
                self.memories[memory_key(head, role)] = self._cluster_memory(centroids[space], device)

    def space_centroids(self, labelset: LabelSet, space: int, head: str) -> np.ndarray:
        """(C_space, D) centroids of a label space, zero rows appended when the propagated hard labels leave
        the last DBSCAN clusters empty (the soft targets keep every DBSCAN cluster as a column)."""
        cents = np.asarray(labelset.centroids[(space, head)], dtype=np.float32)
        soft = labelset.soft.get(f"own_{space}")
        width = cents.shape[0] if soft is None else max(cents.shape[0], soft.shape[1])
        return np.concatenate([cents, np.zeros((width - cents.shape[0], cents.shape[1]), np.float32)])

    def sampler(self, labelset: LabelSet, epoch: int, rank: int, world_size: int):
        """Stage 1: independent P×K per modality; stage 2: SALCR's cross-paired sampler."""
        if labelset.cross is None:
            return super().sampler(labelset, epoch, rank, world_size)
        return self.cross_paired_sampler(labelset, rank, world_size)

    # ---- targets ------------------------------------------------------------------------------
    def targets(self, batch: Batch, rows: torch.Tensor, modality: int, kind: str) -> torch.Tensor:
        """CE targets of ``rows`` (all of ``modality``): the β-mixed soft targets ``kind`` ("own"/"cross")
        when the LabelSet has them, else the hard labels."""
        soft = self.soft.get((kind, modality))
        if soft is not None:
            return soft[self.positions[batch.index[rows]]]
        return (batch.labels if kind == "own" else batch.cross)[rows]

    def memory_ce(self, feats: torch.Tensor, batch: Batch, head: str, role: str, modality: int, kind: str) -> torch.Tensor:
        """Σ over the views of ``modality`` of CE(memory ``role``(f_view), ``kind`` targets), one mean per view
        (so the v and a views count as two terms, as in METHODS.md §2)."""
        memory = self.memories[memory_key(head, role)]
        total = feats.new_zeros(())
        for view in MODALITY_VIEWS[modality]:
            rows = batch.rows(view)
            if bool(rows.any()):
                total = total + memory.loss(feats[rows], self.targets(batch, rows, modality, kind))
        return total

    # ---- the step ---------------------------------------------------------------------------
    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.uses_cross():
            return super().loss(outputs, batch, epoch)
        space = label_space(epoch)
        other = OTHER[space]
        roles = active_roles(space)
        total = outputs[self.heads[0]].new_zeros(())
        logs: dict[str, float] = {}
        for head in self.heads:
            feats = outputs[head]
            ms = (self.memory_ce(feats, batch, head, roles["specific_v"], VISIBLE, "own")
                  + self.memory_ce(feats, batch, head, roles["specific_r"], INFRARED, "own")
                  + self.memory_ce(feats, batch, head, roles["cross"], other, "cross"))
            ma = (self.memory_ce(feats, batch, head, roles["agnostic"], space, "own")
                  + self.memory_ce(feats, batch, head, roles["agnostic"], other, "cross"))
            consistency = self.oclr_terms(feats, batch, head, space)
            logs.update({f"loss_ms_{head}": float(ms.detach()), f"loss_ma_{head}": float(ma.detach()),
                         f"loss_oclr_{head}": float(consistency.detach())})
            total = total + self.weight("ms") * ms + self.weight("ma") * ma + self.weight("oclr") * consistency
        return total, logs

    def oclr_terms(self, feats: torch.Tensor, batch: Batch, head: str, space: int) -> torch.Tensor:
        """The six OCLR terms of ``space``: agnostic-memory logits of v, a, r against the specific and the
        cross memory of ``space`` on a, v, r (the v and a rows are the same images in the same order)."""
        views = {view: feats[batch.rows(view)] for view in (VIEW_V, VIEW_A, VIEW_R)}
        agnostic = self.memories[memory_key(head, AGNOSTIC[space])]
        pairs = ((VIEW_V, VIEW_A), (VIEW_A, VIEW_V), (VIEW_R, VIEW_R))
        total = feats.new_zeros(())
        for role in (SPECIFIC[space], CROSS[space]):
            target = self.memories[memory_key(head, role)]
            for pred_view, target_view in pairs:
                if views[pred_view].shape[0]:
                    total = total + oclr(agnostic.logits(views[pred_view]), target.logits(views[target_view]),
                                         float(self.params["oclr_temperature"]), bool(self.params["oclr_detach"]))
        return total

    def update_memories(self, gathered: Batch) -> None:
        """Stage 2, in batch order: M_v by RGB rows (own label), M_r by IR rows (own label), the cross memory of
        this epoch's space by the other modality's rows (cross label), its agnostic memory by every row."""
        if not self.uses_cross():
            super().update_memories(gathered)
            return
        space = label_space(self.labelset.epoch)
        visible, infrared = gathered.rows(*MODALITY_VIEWS[VISIBLE]), gathered.rows(*MODALITY_VIEWS[INFRARED])
        other_rows = gathered.rows(*MODALITY_VIEWS[OTHER[space]])
        for head in self.heads:
            feats = gathered.features[head]
            self.memories[memory_key(head, SPECIFIC[VISIBLE])].update(feats[visible], gathered.labels[visible])
            self.memories[memory_key(head, SPECIFIC[INFRARED])].update(feats[infrared], gathered.labels[infrared])
            self.memories[memory_key(head, CROSS[space])].update(feats[other_rows], gathered.cross[other_rows])
            self.memories[memory_key(head, AGNOSTIC[space])].update(feats, space_labels(gathered, space))
