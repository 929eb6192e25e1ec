"""The supervised upper bound (``--supervised``): the same network, data, views, sampler and budget, trained with
the true identities through an identity classifier (the ID loss of supervised VI-ReID baselines such as AGW).

Not a recipe: the training loop uses it instead of the configured method when ``config.supervised`` is set. The
method's own losses are not used: at the recipes' memory momentum (0.1) cluster-contrast memories filled with the
true identities do not train a network from random weights (on the synthetic data their loss rose from 4.9 to
about 6 per term within two epochs), and at 0.9 they train but end at 80 % of this classifier
(benchmarks/synthetic_results.md). The method's own ceiling is the ``pseudo.oracle_clusters`` diagnostic.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from raytrain_vireid.config import Config
from raytrain_vireid.methods.base import Batch, Method
from raytrain_vireid.methods.registry import get_method
from raytrain_vireid.models.identity import id_logits_key


class SupervisedIdentity(Method):
    """Cross-entropy of each head's identity classifier over every row [v; a; r], averaged over the heads
    (one head: the plain ID loss); no memories.

    ``pids``: the true identity of every training row (table order); classes are the distinct pids.
    """

    name: ClassVar[str] = "supervised"

    def __init__(self, config: Config, heads: tuple[str, ...], modality: np.ndarray, pids: np.ndarray) -> None:
        self.PARAMS = get_method(config.method).PARAMS  # the configured method's settings stay valid (and checked)
        super().__init__(config, heads, modality)
        identities, self.classes = np.unique(np.asarray(pids), return_inverse=True)
        self.num_ids = len(identities)
        self.classes = torch.as_tensor(self.classes, dtype=torch.long)

    def on_labels(self, labelset, device: torch.device) -> None:
        """No memories: only the LabelSet (the true identities per modality, for the sampler)."""
        self.labelset = labelset
        self.classes = self.classes.to(device)

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.classes[batch.index]
        terms = {head: F.cross_entropy(outputs[id_logits_key(head)], target) for head in self.heads}
        total = torch.stack(list(terms.values())).mean()
        logs = {"loss_id": float(total.detach())}
        if len(terms) > 1:
            logs.update({f"loss_id_{head}": float(term.detach()) for head, term in terms.items()})
        return total, logs

    def update_memories(self, gathered: Batch) -> None:
        """Nothing to update: the classifier is trained by the optimiser."""
