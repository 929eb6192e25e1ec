"""The prior's cross-modality neighbour term on hand-built tensors: its value against a plain loop, and its memories."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch
from raytrain_vireid.methods.instances import instance_key
from raytrain_vireid.methods.prior import PriorNeighbourTerm

# table rows 0, 2, 3, 5 visible; 1, 4, 6 infrared (interleaved: positions differ from rows)
MODALITY = np.array([0, 1, 0, 0, 1, 0, 1], dtype=np.int8)
# each row's 2 neighbours among the OTHER modality's rows, as positions in that modality
NEIGHBOURS = np.array([[0, 1], [3, 2], [2, 0], [1, 2], [0, 1], [2, 1], [1, 0]])
TAU = 0.05


def batch(rows_v, rows_r) -> Batch:
    rows_v, rows_r = torch.tensor(rows_v), torch.tensor(rows_r)
    index = torch.cat([rows_v, rows_v, rows_r])
    view = torch.cat([torch.full_like(rows_v, VIEW_V), torch.full_like(rows_v, VIEW_A), torch.full_like(rows_r, VIEW_R)])
    return Batch(index=index, view=view, labels=torch.zeros_like(index), cross=torch.full_like(index, -1))


def test_loss_is_the_neighbour_cross_entropy_against_the_other_modality():
    rng = np.random.default_rng(0)
    features = {"global": rng.normal(size=(len(MODALITY), 4)).astype(np.float32)}
    term = PriorNeighbourTerm(NEIGHBOURS, MODALITY, "global", temperature=TAU, momentum=0.5)
    term.on_features(features, torch.device("cpu"))
    b = batch([0, 3], [4])
    out = torch.tensor(rng.normal(size=(5, 4)), dtype=torch.float32, requires_grad=True)
    value = term.loss({"global": out}, b)

    bank = {m: F.normalize(torch.tensor(features["global"][MODALITY == m]), dim=1) for m in (VISIBLE, INFRARED)}
    expected = 0.0
    for rows, bank_m in (([0, 1, 2, 3], bank[INFRARED]), ([4], bank[VISIBLE])):
        per_row = []
        for r in rows:
            log_p = F.log_softmax(F.normalize(out[r], dim=0) @ bank_m.t() / TAU, dim=0)
            per_row.append(-sum(log_p[j] for j in NEIGHBOURS[int(b.index[r])]) / (NEIGHBOURS.shape[1] + 1))
        expected = expected + torch.stack(per_row).mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert out.grad is not None and bool(out.grad.abs().sum() > 0)


def test_update_moves_the_batch_rows_of_each_modality_only():
    features = {"global": np.eye(len(MODALITY), 8, dtype=np.float32)}
    term = PriorNeighbourTerm(NEIGHBOURS, MODALITY, "global", temperature=TAU, momentum=0.5)
    term.on_features(features, torch.device("cpu"))
    before = {key: memory.features.clone() for key, memory in term.memories.items()}
    b = batch([3], [6])
    b.features = {"global": torch.ones(3, 8)}
    term.update(b)
    visible, infrared = term.memories[instance_key("global", VISIBLE)], term.memories[instance_key("global", INFRARED)]
    changed_v = (visible.features != before[instance_key("global", VISIBLE)]).any(dim=1)
    changed_r = (infrared.features != before[instance_key("global", INFRARED)]).any(dim=1)
    assert changed_v.tolist() == [False, False, True, False]  # row 3 is the third visible row
    assert changed_r.tolist() == [False, False, True]  # row 6 is the third infrared row
