"""SALCR (IJCV 2025; METHODS.md §1): dual label spaces, semantic-aligned part contrast, GPCR refinement.

Stage 1 (epochs before ``stage.stage2_epoch``): the baseline's intra-modality dual-stream cluster contrast;
the part head is idle. At the stage-2 epoch the part head (tokens and part BN) is re-initialised, once and
identically on every rank. Stage 2: DAGI labels from the memory actor (``association: cmfp_sinkhorn``: CMFP
fusion, own labels re-assigned to the nearest fused centre, bidirectional Sinkhorn cross labels), SALCR's
cross-paired sampler, and over the rows [v; a; r] with ``t_v = [y_v, y_v, ỹ_r→v]``, ``t_r = [ỹ_v→r, ỹ_v→r, y_r]``:

- ``L_g = CE(M_v(f), t_v) + CE(M_r(f), t_r)`` on all 3B global features; each memory is updated by both
  modalities in a random order drawn from a generator seeded by (seed, epoch), the same on every rank;
- ``L_pv + L_pr`` (FGSAL): four memories per part (RGB / IR label space × visible / infrared features). The
  visible part features (own, cross-aligned, other-view: 6B rows) go against the visible-feature memories with
  (y_v, ỹ_v→r), the infrared ones (3B rows) against the infrared-feature memories with (ỹ_r→v, y_r), each
  averaged over the parts; every part memory is updated, in batch order, by the rows it scores;
- ``L_gi + L_pi`` (GPCR): instance memories of each modality's non-outlier rows (global and per part), static
  within the epoch. Global positives = top-k of ``f·Mᵀ/τ`` intersected across the triplet (v, a, r) at the same
  batch position; part positives = the union of the two other views' part top-k ∩ the global positives. Both
  terms are summed over the RGB and the IR instance memory; the part term is averaged over the parts.

``L = w_global·L_g + w_part·(L_pv + L_pr) + w_gpcr·(L_gi + L_pi)``: ``loss.global``, ``loss.part`` (1) and
``loss.gpcr`` (λ₂, 0.5 unless set).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, MODALITY_NAMES, VISIBLE
from raytrain_vireid.config import Config
from raytrain_vireid.errors import UserError
from raytrain_vireid.losses.contrastive import dual_space_ce
from raytrain_vireid.losses.parts import part_contrastive
from raytrain_vireid.losses.refinement import gpcr, gpcr_part
from raytrain_vireid.memory.cluster import ClusterMemory
from raytrain_vireid.memory.instance import InstanceMemory
from raytrain_vireid.methods.base import VIEW_V, Batch, Method, memory_key, space_labels
from raytrain_vireid.methods.registry import register
from raytrain_vireid.methods.instances import MODALITY_VIEWS, instance_key
from raytrain_vireid.models.parts import part_keys, salcr_partners
from raytrain_vireid.pseudo.labelset import LabelSet

SPACES = (VISIBLE, INFRARED)
OTHER = {VISIBLE: INFRARED, INFRARED: VISIBLE}
PART_OUTPUTS = ("pg", "pg1", "pg2")  # own, cross-aligned and other-view part features, (3B, P, D) each
_REINIT, _UPDATE_ORDER = 0, 1  # seed streams of epoch_seed


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A well-mixed seed from (run seed, epoch, stream): identical on every rank and on a resumed run."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def part_memory_key(part: int, owner: int, space: int) -> str:
    """Key of part ``part``'s memory in ``space``'s label space that scores (and is updated by) ``owner``'s rows."""
    return f"part{part}/{MODALITY_NAMES[owner]}@{MODALITY_NAMES[space]}"


def part_rows(parts: Mapping[str, torch.Tensor], batch: Batch, owner: int) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``owner``'s rows of pg, pg1 and pg2, stacked in that order ((3n, P, D)), and their targets per label space."""
    rows = batch.rows(*MODALITY_VIEWS[owner])
    feats = torch.cat([parts[key][rows] for key in PART_OUTPUTS])
    return feats, {space: space_labels(batch, space)[rows].repeat(len(PART_OUTPUTS)) for space in SPACES}


def space_width(labelset: LabelSet, modality: np.ndarray, space: int) -> int:
    """Rows of a memory in ``space``'s label space: its clusters, or more when the other modality's cross labels
    point past them (the re-assignment can empty the last clusters that Sinkhorn still transports to)."""
    cross = np.asarray(labelset.cross)[np.asarray(modality) == OTHER[space]]
    return max(labelset.num_clusters[space], int(cross.max(initial=-1)) + 1)


def padded(centroids: np.ndarray, width: int) -> np.ndarray:
    """``centroids`` with zero rows appended up to ``width`` rows."""
    centroids = np.asarray(centroids, dtype=np.float32)
    return np.concatenate([centroids, np.zeros((width - centroids.shape[0], centroids.shape[1]), np.float32)])


@register
class SALCR(Method):
    """SALCR on the two-stream ResNet with its part branch (``model.parts``)."""

    name = "salcr"
    PARAMS: ClassVar[dict] = {
        "k_instance": 30,  # GPCR: top-k instance neighbours
        "reinit_parts": True,  # re-initialise the part head and part BN at the stage-2 epoch
    }
    LOSS_DEFAULTS: ClassVar[dict[str, float]] = {"gpcr": 0.5}  # λ₂
    gathered_outputs = PART_OUTPUTS

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        super().__init__(config, heads, modality)
        if config.model.arch != "resnet" or config.model.parts < 1 or len(heads) != 1:
            raise UserError(f"model.parts: salcr needs the two-stream ResNet with its part branch (model.arch: resnet, "
                            f"model.parts: 3), got arch {config.model.arch} with parts {config.model.parts}")
        if int(self.params["k_instance"]) < 1:
            raise UserError(f"method_params.k_instance: must be >= 1, got {self.params['k_instance']}")
        self.parts = part_keys(config.model.parts)
        self.features: dict[str, np.ndarray] = {}
        self.instances = nn.ModuleDict()
        self.generator: torch.Generator | None = None

    # ---- schedule -----------------------------------------------------------------------------
    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """At the stage-2 epoch, re-initialise the part head (SALCR's stage 2 loads the stage-1 model and re-inits
        its part module) from a seed of (seed, epoch): the same weights on every rank, the global RNG untouched.
        The loop calls this only for epochs it trains, so a run resumed past the switch keeps its trained head."""
        if epoch != self.config.stage.stage2_epoch or not self.params["reinit_parts"]:
            return
        head = model.part_head
        device = next(head.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(epoch_seed(self.config.train.seed, epoch, _REINIT))
            head.reset_parameters()

    def sampler(self, labelset: LabelSet, epoch: int, rank: int, world_size: int):
        """Stage 1: independent P×K per modality; stage 2: the cross-paired sampler (P/2 visible-anchored and
        P/2 infrared-anchored clusters, each with K own and K cross-mapped rows; only clusters with a
        cross-mapped instance are eligible)."""
        if labelset.cross is None:
            return super().sampler(labelset, epoch, rank, world_size)
        return self.cross_paired_sampler(labelset, rank, world_size)

    # ---- labels and memories ----------------------------------------------------------------
    def needs_features(self, labelset: LabelSet) -> bool:
        """Stage 2 only: the instance memories and part features come from every training image's features."""
        return labelset.cross is not None

    def on_features(self, features: dict[str, np.ndarray], device: torch.device) -> None:
        """Keep the global and part features until :meth:`on_labels` builds the instance memories from them."""
        self.features = features

    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        """Stage 1: the base per-modality memories. Stage 2: M_v, M_r and the four memories of every part from the
        centres of their label space, the static instance memories, and this epoch's update-order generator."""
        if labelset.cross is None:
            super().on_labels(labelset, device)
            return
        self.labelset = labelset
        self.memories = nn.ModuleDict()
        head = self.heads[0]
        for space in SPACES:
            width = space_width(labelset, self.modality, space)
            self.memories[memory_key(head, space)] = self._cluster_memory(
                padded(labelset.centroids[(space, head)], width), device)
            for p, key in enumerate(self.parts):
                centres = padded(labelset.centroids[(space, key)], width)
                for owner in SPACES:
                    self.memories[part_memory_key(p, owner, space)] = self._cluster_memory(centres, device)
        self.instances = self.instance_memories(labelset, device)
        for key, memory in self.instances.items():  # in ``memories`` too, so that the drift check sees them
            self.memories[f"instance/{key}"] = memory
        self.generator = torch.Generator().manual_seed(epoch_seed(self.config.train.seed, labelset.epoch, _UPDATE_ORDER))

    def instance_memories(self, labelset: LabelSet, device: torch.device) -> nn.ModuleDict:
        """Static instance memories of the non-outlier rows of each modality, global and per part, keyed by
        ``instance_key(feature, modality)``."""
        if not self.features:
            raise RuntimeError("salcr: on_features must give the training features before the stage-2 labels")
        keep = np.asarray(labelset.labels) >= 0
        memories = nn.ModuleDict()
        for key in (self.heads[0], *self.parts):
            values = np.asarray(self.features[key])
            for m in SPACES:
                rows = torch.tensor(np.asarray(values[(self.modality == m) & keep], dtype=np.float32), device=device)
                memories[instance_key(key, m)] = InstanceMemory(rows, static=True).to(device)
        self.features = {}
        return memories

    def part_memories(self, owner: int, space: int) -> list[ClusterMemory]:
        return [self.memories[part_memory_key(p, owner, space)] for p in range(len(self.parts))]

    # ---- the step ---------------------------------------------------------------------------
    def forward_kwargs(self, batch: Batch, epoch: int) -> dict:
        """Stage 2: the partner rows of the part head's query attention (v→r, a→r, r→v and v→a, a→v, r→a)."""
        if not self.uses_cross():
            return {}
        n = int(batch.rows(VIEW_V).sum())
        if batch.index.numel() != 3 * n:
            raise ValueError("salcr stage 2 needs as many infrared as visible rows, position by position "
                             "(the cross-paired sampler)")
        return {"partner_index": salcr_partners(n, batch.index.device)}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        if not self.uses_cross():
            return super().loss(outputs, batch, epoch)
        head = self.heads[0]
        feats = outputs[head]
        global_ce = dual_space_ce(feats, self.memories[memory_key(head, VISIBLE)], self.memories[memory_key(head, INFRARED)],
                                  space_labels(batch, VISIBLE), space_labels(batch, INFRARED))
        part_v, part_r = self.part_loss(outputs, batch)
        gpcr_global, gpcr_parts = self.gpcr_loss(outputs)
        terms = {"global": global_ce, "part_v": part_v, "part_r": part_r, "gpcr_global": gpcr_global,
                 "gpcr_part": gpcr_parts}
        total = (self.weight("global") * global_ce + self.weight("part") * (part_v + part_r)
                 + self.weight("gpcr") * (gpcr_global + gpcr_parts))
        return total, {f"loss_{name}": float(term.detach()) for name, term in terms.items()}

    def part_loss(self, outputs: Mapping[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_pv, L_pr)``: each modality's part rows against its own pair of part memories of every part."""
        visible, visible_targets = part_rows(outputs, batch, VISIBLE)
        infrared, infrared_targets = part_rows(outputs, batch, INFRARED)
        return part_contrastive(
            visible.unbind(1), infrared.unbind(1), self.part_memories(VISIBLE, VISIBLE),
            self.part_memories(VISIBLE, INFRARED), (visible_targets[VISIBLE], visible_targets[INFRARED]),
            (infrared_targets[VISIBLE], infrared_targets[INFRARED]),
            infrared_memories=(self.part_memories(INFRARED, VISIBLE), self.part_memories(INFRARED, INFRARED)))

    def gpcr_loss(self, outputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_gi, L_pi)`` over the RGB and the IR instance memories (the part term averaged over the parts)."""
        k, tau = int(self.params["k_instance"]), self.config.memory.temperature
        head, own_parts = self.heads[0], outputs["pg"]
        total_global = total_parts = outputs[head].new_zeros(())
        for m in SPACES:
            term, positives = gpcr(outputs[head], self.instances[instance_key(head, m)].features, k, tau)
            parts = [gpcr_part(own_parts[:, p], self.instances[instance_key(key, m)].features, positives, k, tau)
                     for p, key in enumerate(self.parts)]
            total_global = total_global + term
            total_parts = total_parts + torch.stack(parts).mean()
        return total_global, total_parts

    def update_memories(self, gathered: Batch) -> None:
        """Stage 2: M_v and M_r by every row (label in their space) in this epoch's random order; each part
        memory by its owner modality's part rows, in batch order. The instance memories stay as they are."""
        if not self.uses_cross():
            super().update_memories(gathered)
            return
        head = self.heads[0]
        for space in SPACES:
            self.memories[memory_key(head, space)].update(gathered.features[head], space_labels(gathered, space),
                                                          generator=self.generator)
        for owner in SPACES:
            rows, targets = part_rows(gathered.features, gathered, owner)
            for p in range(len(self.parts)):
                for space in SPACES:
                    self.memories[part_memory_key(p, owner, space)].update(rows[:, p], targets[space])
