"""The method interface: hooks the training loop calls around each step.

The loop (``raytrain_vireid.train.loop``) only runs steps; everything a method decides is a hook::

    method.on_epoch_start(model, epoch)        # stage switches that touch the model (e.g. a re-initialised head)
    plan = method.relabel_plan(epoch)          # how the memory actor pseudo-labels this epoch
    if method.needs_features(labelset): method.on_features(all_training_features, device)
    method.on_labels(labelset, device)         # build the (replicated) memories from the centroids
    sampler = method.sampler(labelset, epoch, rank, world_size)
    for it in range(method.iters_per_epoch(epoch)):
        outputs = model(visible=cat(v, a), infrared=r, **method.forward_kwargs(batch, epoch))  # rows [v; a; r]
        loss, logs = method.loss(outputs, batch, epoch)
        backward / step
        method.update_memories(all_gathered_batch)       # heads + gathered_outputs, identical order on every rank

A method is configuration plus small pieces; subclasses override only what differs. Method-specific
knobs live in ``config.method_params`` and are checked against ``PARAMS`` (unknown keys rejected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import Config, per_modality
from raytrain_vireid.data.samplers import CrossPairedSampler, PseudoIdentitySampler
from raytrain_vireid.errors import UserError
from raytrain_vireid.memory.cluster import ClusterMemory
from raytrain_vireid.pseudo.engine import RelabelPlan
from raytrain_vireid.pseudo.labelset import LabelSet

# Batch row roles, in forward order: original visible view, channel-augmented visible view, infrared.
VIEW_V, VIEW_A, VIEW_R = 0, 1, 2
VIEW_NAMES = {VIEW_V: "visible", VIEW_A: "visible_aug", VIEW_R: "infrared"}


@dataclass
class Batch:
    """One step's rows in forward order ``[v; a; r]`` (all 1-D tensors of equal length).

    ``index``: row in the training table; ``view``: VIEW_V/VIEW_A/VIEW_R; ``labels``: own-modality
    pseudo-label (instance index during warm-up); ``cross``: label in the other modality's space
    (−1 none). After the all-gather, ``features`` holds the detached per-head features of the rows.
    """

    index: torch.Tensor
    view: torch.Tensor
    labels: torch.Tensor
    cross: torch.Tensor
    features: dict[str, torch.Tensor] | None = None

    def rows(self, *views: int) -> torch.Tensor:
        """Boolean mask of the rows whose view is one of ``views``."""
        return torch.isin(self.view, torch.tensor(views, device=self.view.device))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The per-row tensors by name (what the loop all-gathers)."""
        return {"index": self.index, "view": self.view, "labels": self.labels, "cross": self.cross}


class Method:
    """Base method: per-modality cluster memories per head, P×K sampler, intra-modality cluster CE.

    Subclasses set ``name``, extend ``PARAMS`` (defaults of their ``method_params``) and override hooks.
    """

    name: ClassVar[str] = "base"
    PARAMS: ClassVar[dict[str, Any]] = {}
    # Loss weights of terms that ``config.loss`` does not set (1.0 for any other term).
    LOSS_DEFAULTS: ClassVar[dict[str, float]] = {}
    # True: the loop passes every training image's features to :meth:`on_features` before :meth:`on_labels`.
    needs_instance_features: ClassVar[bool] = False
    # Model outputs all-gathered for :meth:`update_memories` besides the heads (any shape (rows, ...)).
    gathered_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        unknown = sorted(set(config.method_params) - set(self.PARAMS))
        if unknown:
            valid = ", ".join(sorted(self.PARAMS)) or "none"
            raise UserError(f"method_params.{unknown[0]}: not a setting of method {self.name}; valid: {valid}")
        self.config = config
        self.heads = heads
        self.modality = np.asarray(modality)
        self.params = {**self.PARAMS, **config.method_params}
        self.memories = nn.ModuleDict()
        self.labelset: LabelSet | None = None

    # ---- schedule ---------------------------------------------------------------------------
    def stage(self, epoch: int) -> int:
        """1 before ``stage.stage2_epoch``, 2 from it on."""
        return 2 if epoch >= self.config.stage.stage2_epoch else 1

    def iters_per_epoch(self, epoch: int) -> int:
        train = self.config.train
        if self.stage(epoch) == 2 and train.iters_per_epoch_stage2 is not None:
            return train.iters_per_epoch_stage2
        return train.iters_per_epoch

    def relabel_plan(self, epoch: int) -> RelabelPlan:
        """Jaccard + DBSCAN per modality on the first head (all heads concatenated for multi-head
        models); cross-modality association only from stage 2."""
        pseudo = self.config.pseudo
        k1: int | dict[Any, int] = pseudo.k1
        if self.stage(epoch) == 2 and pseudo.k1_visible_stage2 is not None:
            k1 = {VISIBLE: pseudo.k1_visible_stage2, INFRARED: per_modality(pseudo.k1, "pseudo.k1")["infrared"]}
        return RelabelPlan(
            cluster_head=self.heads[0] if len(self.heads) == 1 else "concat",
            k1=k1,
            k2=pseudo.k2,
            eps=pseudo.eps,
            min_samples=pseudo.min_samples,
            association=pseudo.association if self.stage(epoch) == 2 else None,
            association_params=dict(pseudo.association_params),
            prior_weight=pseudo.prior_weight_at(epoch),
            associate_on_prior=pseudo.prior is not None and pseudo.prior_association,
            backend=pseudo.backend,
        )

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called with the unwrapped model at the start of every epoch the run trains (never for epochs a
        resumed run restored from its checkpoint); nothing here."""

    # ---- labels and memories ----------------------------------------------------------------
    def needs_features(self, labelset: LabelSet) -> bool:
        """Whether the loop calls :meth:`on_features` for these labels (``needs_instance_features`` here)."""
        return self.needs_instance_features

    def on_features(self, features: dict[str, np.ndarray], device: torch.device) -> None:
        """All training images' extracted features (every key of the model's ``feature_dims``; rows = table
        index), given before :meth:`on_labels` when :meth:`needs_features` says so (instance memories)."""

    def on_labels(self, labelset: LabelSet, device: torch.device) -> None:
        """Rebuild the memories from the epoch's centroids: ``memories["<head>/<modality>"]``."""
        self.labelset = labelset
        self.memories = nn.ModuleDict()
        for head in self.heads:
            for modality in (VISIBLE, INFRARED):
                self.memories[memory_key(head, modality)] = self._cluster_memory(
                    labelset.centroids[(modality, head)], device)

    def _cluster_memory(self, centroids: np.ndarray, device: torch.device) -> ClusterMemory:
        momentum = self.cluster_momentum()
        return ClusterMemory(torch.tensor(np.asarray(centroids, dtype=np.float32), device=device),
                             temperature=self.config.memory.temperature, momentum=momentum).to(device)

    def cluster_momentum(self) -> float:
        """μ of the cluster memories: ``memory.momentum_epoch0`` for the labels of epoch 0 when set, else
        ``memory.momentum``."""
        memory = self.config.memory
        if memory.momentum_epoch0 is not None and self.labelset is not None and self.labelset.epoch == 0:
            return memory.momentum_epoch0
        return memory.momentum

    def uses_cross(self) -> bool:
        """Whether this epoch's LabelSet carries cross-modality labels (stage 2, or ``--supervised``)."""
        return self.labelset is not None and self.labelset.cross is not None

    def sampler(self, labelset: LabelSet, epoch: int, rank: int, world_size: int) -> PseudoIdentitySampler:
        """Independent P×K per modality, this rank's share, reseeded per epoch by the sampler."""
        train = self.config.train
        return PseudoIdentitySampler(labelset.labels, self.modality, train.ids_per_modality,
                                     train.instances, rank, world_size, train.seed)

    def cross_paired_sampler(self, labelset: LabelSet, rank: int, world_size: int) -> CrossPairedSampler:
        """SALCR's stage-2 sampler: same pseudo-identity at aligned visible/infrared positions."""
        train = self.config.train
        return CrossPairedSampler(labelset.labels, labelset.cross, self.modality, train.ids_per_modality,
                                  train.instances, rank, world_size, train.seed)

    # ---- the step ---------------------------------------------------------------------------
    def forward_kwargs(self, batch: Batch, epoch: int) -> dict[str, Any]:
        """Extra keyword arguments of ``model(visible=, infrared=, **kwargs)`` for this step (none here)."""
        return {}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Intra-modality cluster CE: CE(M_v(f_v), y) + CE(M_v(f_a), y) + CE(M_r(f_r), y), per head."""
        total = outputs[self.heads[0]].new_zeros(())
        logs: dict[str, float] = {}
        for head in self.heads:
            term = self.view_terms(outputs[head], batch, batch.labels,
                                   {VIEW_V: VISIBLE, VIEW_A: VISIBLE, VIEW_R: INFRARED}, head)
            logs[f"loss_intra_{head}"] = float(term.detach())
            total = total + self.weight("intra") * term
        return total, logs

    def view_terms(self, feats: torch.Tensor, batch: Batch, targets: torch.Tensor, spaces: dict[int, int | str],
                   head: str) -> torch.Tensor:
        """Σ over views of CE(memory[head/space](f_view), targets_view); views with no valid target add 0."""
        total = feats.new_zeros(())
        for view, space in spaces.items():
            rows = batch.rows(view) & (targets >= 0)
            if bool(rows.any()):
                total = total + self.memories[memory_key(head, space)].loss(feats[rows], targets[rows])
        return total

    def update_memories(self, gathered: Batch) -> None:
        """Momentum updates from the all-gathered batch (same rows, same order on every rank)."""
        visible, infrared = gathered.rows(VIEW_V, VIEW_A), gathered.rows(VIEW_R)
        for head in self.heads:
            feats = gathered.features[head]
            self.memories[memory_key(head, VISIBLE)].update(feats[visible], gathered.labels[visible])
            self.memories[memory_key(head, INFRARED)].update(feats[infrared], gathered.labels[infrared])

    def weight(self, term: str) -> float:
        """Loss weight of ``term`` from ``config.loss`` (else ``LOSS_DEFAULTS``, else 1.0)."""
        return float(self.config.loss.get(term, self.LOSS_DEFAULTS.get(term, 1.0)))


def space_labels(batch: Batch, space: int) -> torch.Tensor:
    """Every row's label in the label space of modality ``space``: the own label for rows of that modality, the
    cross label for the others (rows [v; a; r]: VISIBLE → [y_v, y_v, ỹ_r→v], INFRARED → [ỹ_v→r, ỹ_v→r, y_r])."""
    own = batch.rows(VIEW_R) if space == INFRARED else batch.rows(VIEW_V, VIEW_A)
    return torch.where(own, batch.labels, batch.cross)


def memory_key(head: str, space: int | str) -> str:
    """Key of a memory in ``Method.memories``: ``"<head>/<space>"`` (a modality or a role name)."""
    return f"{head}/{space}"
