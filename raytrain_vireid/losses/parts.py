"""SALCR FGSAL part contrastive loss: each part against an RGB-space and an IR-space part memory."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from raytrain_vireid.memory.cluster import ClusterMemory


def part_contrastive(visible_parts: Sequence[torch.Tensor], infrared_parts: Sequence[torch.Tensor],
                     rgb_memories: Sequence[ClusterMemory], ir_memories: Sequence[ClusterMemory],
                     visible_targets: tuple[torch.Tensor, torch.Tensor],
                     infrared_targets: tuple[torch.Tensor, torch.Tensor],
                     infrared_memories: tuple[Sequence[ClusterMemory], Sequence[ClusterMemory]] | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(L_pv, L_pr)``, each averaged over the P parts.

    ``visible_parts[i]`` (6B, D): part i of the visible rows (own, cross-aligned, other-view);
    ``infrared_parts[i]`` (3B, D). ``visible_targets = (y_v, ỹ_v→r)`` (6B,) each;
    ``infrared_targets = (ỹ_r→v, y_r)`` (3B,) each; −1 ignored.
    ``L_pv = mean_i CE(M^rgb_i(v_i), y_v) + CE(M^ir_i(v_i), ỹ_v→r)``; ``L_pr`` likewise for IR, against
    ``infrared_memories = (rgb, ir)`` when given (SALCR's four part memories per part), else the same memories.
    """
    ir_rgb, ir_ir = infrared_memories if infrared_memories is not None else (rgb_memories, ir_memories)
    if not (len(visible_parts) == len(infrared_parts) == len(rgb_memories) == len(ir_memories)
            == len(ir_rgb) == len(ir_ir) > 0):
        raise ValueError("part_contrastive: need the same non-zero number of parts, features and memories")

    def averaged(parts: Sequence[torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor],
                 rgb_bank: Sequence[ClusterMemory], ir_bank: Sequence[ClusterMemory]) -> torch.Tensor:
        rgb_targets, ir_targets = targets
        terms = [rgb.loss(f, rgb_targets) + ir.loss(f, ir_targets) for f, rgb, ir in zip(parts, rgb_bank, ir_bank)]
        return torch.stack(terms).mean()

    return (averaged(visible_parts, visible_targets, rgb_memories, ir_memories),
            averaged(infrared_parts, infrared_targets, ir_rgb, ir_ir))
