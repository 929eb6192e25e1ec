"""Baseline method hooks on hand-built labels: relabel plan per stage, loss terms, memory updates, registry."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import build_config
from raytrain_vireid.errors import UserError
from raytrain_vireid.methods import get_method
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch

TAU = 0.05


def labelset(cross: bool):
    """2 visible clusters, 3 infrared clusters, 4-dim centroids; rows 0-3 visible, 4-7 infrared."""
    cv = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), dim=1).numpy()
    cr = F.normalize(torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 1.0], [1.0, 1.0, 0, 0]]), dim=1).numpy()
    return SimpleNamespace(
        labels=np.array([0, 0, 1, 1, 0, 1, 2, 2]),
        cross=np.array([2, -1, 0, 0, -1, -1, 0, 0]) if cross else None,
        num_clusters={VISIBLE: 2, INFRARED: 3},
        centroids={(VISIBLE, "global"): cv, (INFRARED, "global"): cr},
        metrics={},
    )


def make(stage2_epoch=4, **method_params):
    # μ pinned: the expected updates below are written for 0.1 (the synthetic default is 0.5)
    config = build_config(overrides=[f"stage.stage2_epoch={stage2_epoch}", "loss.cross=0.5", "memory.momentum=0.1"])
    config.method_params.update(method_params)
    return get_method("baseline")(config, ("global",), np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int8))


def batch_and_features(seed=0):
    # forward order [v; a; r]: visible rows 0 and 2 (two views each), infrared rows 5 and 6
    index = torch.tensor([0, 2, 0, 2, 5, 6])
    view = torch.tensor([VIEW_V, VIEW_V, VIEW_A, VIEW_A, VIEW_R, VIEW_R])
    ls = labelset(cross=True)
    batch = Batch(index=index, view=view, labels=torch.as_tensor(ls.labels)[index],
                  cross=torch.as_tensor(ls.cross)[index])
    feats = torch.randn(6, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return batch, feats


def ce(feats, centroids, targets):
    logits = F.normalize(feats, dim=1) @ torch.as_tensor(centroids).T / TAU
    return F.cross_entropy(logits, targets)


def test_relabel_plan_switches_association_on_at_stage_2():
    method = make(stage2_epoch=2)
    method.config.pseudo.k1 = 30
    assert method.relabel_plan(1).association is None
    plan = method.relabel_plan(2)
    assert plan.association == "hungarian" and plan.cluster_head == "global" and plan.k1 == 30
    method.config.pseudo.k1_visible_stage2 = 15
    assert method.relabel_plan(2).k1 == {VISIBLE: 15, INFRARED: 30} and method.relabel_plan(1).k1 == 30
    method.config.pseudo.k1 = {"visible": 20, "infrared": 10}
    assert method.relabel_plan(2).k1 == {VISIBLE: 15, INFRARED: 10} and method.relabel_plan(1).k1 == method.config.pseudo.k1


def test_stage_1_loss_is_the_three_view_cluster_contrast():
    method = make()
    method.on_labels(labelset(cross=False), torch.device("cpu"))
    batch, feats = batch_and_features()
    loss, logs = method.loss({"global": feats}, batch, epoch=0)
    ls = labelset(False)
    expected = (ce(feats[:2], ls.centroids[(VISIBLE, "global")], torch.tensor([0, 1]))
                + ce(feats[2:4], ls.centroids[(VISIBLE, "global")], torch.tensor([0, 1]))
                + ce(feats[4:], ls.centroids[(INFRARED, "global")], torch.tensor([1, 2])))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "loss_cross_global" not in logs
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_stage_2_adds_the_shared_infrared_space_term():
    method = make()
    ls = labelset(cross=True)
    method.on_labels(ls, torch.device("cpu"))
    batch, feats = batch_and_features()
    loss, logs = method.loss({"global": feats}, batch, epoch=5)
    cr = ls.centroids[(INFRARED, "global")]
    # visible rows 0 and 2 have cross labels 2 and 0 in the infrared space; infrared rows their own 1, 2
    shared = (ce(feats[:2], cr, torch.tensor([2, 0])) + ce(feats[2:4], cr, torch.tensor([2, 0]))
              + ce(feats[4:], cr, torch.tensor([1, 2])))
    assert logs["loss_cross_global"] == pytest.approx(shared.item(), rel=1e-5)
    assert loss.item() == pytest.approx(logs["loss_intra_global"] + 0.5 * shared.item(), rel=1e-5)


def test_update_memories_follows_gathered_order_and_skips_missing_cross():
    method = make()
    ls = labelset(cross=True)
    ls.cross[0] = -1  # visible row 0 loses its cross label
    method.on_labels(ls, torch.device("cpu"))
    batch, feats = batch_and_features()
    batch.cross = torch.as_tensor(ls.cross)[batch.index]
    batch.features = {"global": feats.detach()}
    method.update_memories(batch)
    f = F.normalize(feats.detach(), dim=1)

    def ema(start, *rows):
        m = torch.as_tensor(start).clone()
        for r in rows:
            m = 0.1 * m + 0.9 * f[r]
            m = m / m.norm()
        return m

    cv, cr = ls.centroids[(VISIBLE, "global")], ls.centroids[(INFRARED, "global")]
    torch.testing.assert_close(method.memories["global/0"].features[0], ema(cv[0], 0, 2))
    torch.testing.assert_close(method.memories["global/1"].features[2], ema(cr[2], 5))
    # shared (infrared space): cluster 0 gets visible row 2 (views v then a); cluster 2 the infrared row 6 only
    torch.testing.assert_close(method.memories["global/shared"].features[0], ema(cr[0], 1, 3))
    torch.testing.assert_close(method.memories["global/shared"].features[2], ema(cr[2], 5))


def test_unknown_method_param_and_method_are_user_errors():
    with pytest.raises(UserError, match="method_params.nosuch"):
        make(nosuch=1)
    with pytest.raises(UserError, match="unknown method 'nosuch'"):
        get_method("nosuch")
