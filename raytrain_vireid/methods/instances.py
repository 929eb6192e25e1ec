"""Per-modality instance memories over every training row (SDCL's CNL, MULT, SALCR's GPCR, the prior term).

Row ``i`` of a modality's memory is the ``i``-th training row of that modality in table order
(:func:`modality_positions`); every rank updates its replica with the all-gathered batch, in batch order.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from raytrain_vireid import INFRARED, MODALITY_NAMES, VISIBLE
from raytrain_vireid.memory.instance import InstanceMemory
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch

MODALITY_VIEWS = {VISIBLE: (VIEW_V, VIEW_A), INFRARED: (VIEW_R,)}


def instance_key(head: str, modality: int) -> str:
    """Key of the instance memory of ``head`` and ``modality`` (``"<head>/<modality name>"``)."""
    return f"{head}/{MODALITY_NAMES[modality]}"


def modality_positions(modality: np.ndarray) -> np.ndarray:
    """(N,) int64: each training row's position among the rows of its own modality (its instance-memory row)."""
    modality = np.asarray(modality)
    positions = np.empty(modality.shape[0], dtype=np.int64)
    for m in (VISIBLE, INFRARED):
        rows = np.nonzero(modality == m)[0]
        positions[rows] = np.arange(rows.size)
    return positions


def build_instance_memories(features: Mapping[str, np.ndarray], modality: np.ndarray, heads: tuple[str, ...],
                            momentum: float, device: torch.device) -> nn.ModuleDict:
    """One :class:`InstanceMemory` per modality × head (rows of that modality in table order, L2-normalised),
    keyed by :func:`instance_key`; update with ``μ = momentum`` (SDCL 0.9) after every step."""
    modality = np.asarray(modality)
    memories = nn.ModuleDict()
    for head in heads:
        values = np.asarray(features[head])
        for m in (VISIBLE, INFRARED):
            rows = torch.tensor(np.asarray(values[modality == m], dtype=np.float32), device=device)
            memories[instance_key(head, m)] = InstanceMemory(rows, momentum=momentum).to(device)
    return memories


@torch.no_grad()
def update_instance_memories(memories: nn.ModuleDict, gathered: Batch, positions: torch.Tensor,
                             heads: tuple[str, ...]) -> None:
    """EMA-update every instance memory with the all-gathered batch rows of its modality, in batch order
    (both visible views update the same visible row, v first)."""
    for m, views in MODALITY_VIEWS.items():
        rows = gathered.rows(*views)
        local = positions[gathered.index[rows]]
        for head in heads:
            memories[instance_key(head, m)].update(local, gathered.features[head][rows])
