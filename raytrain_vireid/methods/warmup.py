"""Method-independent cold-start warm-up: instance contrast before the first clustering (DESIGN.md "Cold start").

Each training image is its own class in an :class:`InstanceMemory` initialised from the epoch's
extracted features. The visible image's two views (v, and the channel-exchanged a) and the infrared
view (adaptive gray) are trained against their own instance entry, so the network learns colour- and
view-invariant features without any label. Used for the first ``train.warmup_epochs`` epochs; the
loop calls the same step hooks as on a :class:`~raytrain_vireid.methods.base.Method`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raytrain_vireid.config import Config
from raytrain_vireid.data.samplers import PseudoIdentitySampler
from raytrain_vireid.memory.instance import InstanceMemory
from raytrain_vireid.methods.base import Batch


class InstanceWarmup:
    """Instance-contrastive warm-up over all training images, one memory per head."""

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray) -> None:
        self.config = config
        self.heads = heads
        self.modality = np.asarray(modality)
        self.memories = nn.ModuleDict()

    def iters_per_epoch(self, epoch: int) -> int:
        return self.config.train.iters_per_epoch

    def on_features(self, features: dict[str, np.ndarray], device: torch.device) -> None:
        """Rebuild the instance memories from all training images' features (rows = table index)."""
        self.memories = nn.ModuleDict({
            head: InstanceMemory(torch.tensor(np.asarray(features[head], dtype=np.float32), device=device),
                                 momentum=self.config.memory.instance_momentum).to(device)
            for head in self.heads})

    def sampler(self, labelset: None, epoch: int, rank: int, world_size: int) -> PseudoIdentitySampler:
        """P·K distinct images per modality per global batch (every image its own identity)."""
        train = self.config.train
        return PseudoIdentitySampler(np.arange(len(self.modality)), self.modality,
                                     train.ids_per_modality * train.instances, 1, rank, world_size, train.seed)

    def labels(self) -> np.ndarray:
        """Targets of the warm-up: every row's own index."""
        return np.arange(len(self.modality), dtype=np.int64)

    def forward_kwargs(self, batch: Batch, epoch: int) -> dict:
        return {}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ over heads of CE(f·Mᵀ/τ, own index) over every row (v, a and r views)."""
        total = outputs[self.heads[0]].new_zeros(())
        logs = {}
        for head in self.heads:
            logits = self.memories[head].similarity(F.normalize(outputs[head], dim=1)) / self.config.memory.temperature
            term = F.cross_entropy(logits, batch.index)
            logs[f"loss_instance_{head}"] = float(term.detach())
            total = total + term
        return total, logs

    def update_memories(self, gathered: Batch) -> None:
        for head in self.heads:
            self.memories[head].update(gathered.index, gathered.features[head])
