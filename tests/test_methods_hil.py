"""HIL pieces: MCCL weight switch, deep/shallow agreement mask, multi-centre memories from sub-centres."""

from __future__ import annotations

import numpy as np
import torch

from raytrain_vireid.memory.multicentre import MultiCentreMemory
from raytrain_vireid.methods.hil import agreement_mask, mccl_weight


def test_mccl_weight_switches_at_epoch():
    assert [mccl_weight(e, 20) for e in (0, 19, 20, 29)] == [0.1, 0.1, 1.0, 1.0]


def test_agreement_mask_keeps_rows_whose_nearest_clusters_agree():
    centres = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # 2 clusters, 1 centre each
    deep = shallow = MultiCentreMemory(centres)
    deep_feats = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.0]])
    shallow_feats = torch.tensor([[1.0, 0.2], [1.0, 0.1], [0.0, 1.0]])
    assert agreement_mask(deep, shallow, deep_feats, shallow_feats).tolist() == [True, False, False]


def test_multicentre_memory_built_from_subcentres():
    centres = np.random.default_rng(0).normal(size=(3, 3, 4)).astype(np.float32)
    memory = MultiCentreMemory(torch.from_numpy(centres))
    feats = torch.from_numpy(centres[1, 2:3])
    assert memory.distances(feats).shape == (1, 3, 3)
