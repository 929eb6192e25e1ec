"""MULT hooks on hand-built labels: stage-2 loss assembly (L_ms, L_ma, six OCLR terms) against a term-by-term
reference written from METHODS.md §2, parity alternation, which labels update which of the six memories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import build_config
from raytrain_vireid.errors import UserError
from raytrain_vireid.methods import get_method
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, memory_key
from raytrain_vireid.methods.mult import active_roles, label_space
from raytrain_vireid.pseudo.labelset import LabelSet

TAU = 0.05
# Training rows: visible 0, 2, 3, 6; infrared 1, 4, 5.
MODALITY = np.array([0, 1, 0, 0, 1, 1, 0], np.int8)
LABELS = np.array([0, 2, 1, 1, 0, 1, 0])  # own label (visible space has 2 clusters, infrared 3)
CROSS = np.array([2, 1, 0, 1, 0, 0, 1])  # label in the other modality's space
ROLES = ("specific_v", "specific_r", "cross_rcm", "cross_vcm", "agnostic_va", "agnostic_ra")


def soft_rows(labels, width, beta=0.7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random((len(labels), width))
    y /= y.sum(axis=1, keepdims=True)
    return (beta * np.eye(width)[labels] + (1 - beta) * y).astype(np.float32)


def labelset(epoch=40, soft=True):
    vis, ir = MODALITY == VISIBLE, MODALITY == INFRARED
    rng = np.random.default_rng(1)
    cents = {(VISIBLE, "global"): F.normalize(torch.tensor(rng.normal(size=(2, 4)), dtype=torch.float32), dim=1).numpy(),
             (INFRARED, "global"): F.normalize(torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32), dim=1).numpy()}
    targets = {}
    if soft:
        targets = {"own_0": soft_rows(LABELS[vis], 2, seed=2), "cross_0": soft_rows(CROSS[vis], 3, seed=3),
                   "own_1": soft_rows(LABELS[ir], 3, seed=4), "cross_1": soft_rows(CROSS[ir], 2, seed=5)}
    return LabelSet(epoch=epoch, labels=LABELS.copy(), cross=CROSS.copy(), num_clusters={VISIBLE: 2, INFRARED: 3},
                    centroids=cents, soft=targets)


def make(*overrides, **method_params):
    config = build_config(method="mult", overrides=["stage.stage2_epoch=40", *overrides])
    config.method_params.update(method_params)
    return get_method("mult")(config, ("global",), MODALITY)


def built(epoch=40, **method_params):
    """A stage-2 method whose six memories hold six different random banks (so a wrong pick shows)."""
    method = make(**method_params)
    method.on_labels(labelset(epoch), torch.device("cpu"))
    gen = torch.Generator().manual_seed(7)
    for role in ROLES:
        bank = method.memories[memory_key("global", role)].features
        bank.copy_(F.normalize(torch.randn(bank.shape, generator=gen), dim=1))
    return method


def batch_and_features(seed=0):
    # forward order [v; a; r]: visible rows 0, 3, 6 (two views each), infrared rows 1, 4, 5
    rows_v, rows_r = torch.tensor([0, 3, 6]), torch.tensor([1, 4, 5])
    index = torch.cat([rows_v, rows_v, rows_r])
    view = torch.tensor([VIEW_V] * 3 + [VIEW_A] * 3 + [VIEW_R] * 3)
    batch = Batch(index=index, view=view, labels=torch.as_tensor(LABELS)[index], cross=torch.as_tensor(CROSS)[index])
    feats = torch.randn(9, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return batch, feats


# ---- the reference, term by term as METHODS.md §2 writes them ---------------------------------------------------
def logits(feats, method, role):
    return F.normalize(feats, dim=1) @ method.memories[memory_key("global", role)].features.T / TAU


def soft_ce(pred, target):
    return -(target * F.log_softmax(pred, dim=1)).sum(1).mean()


def sce(pred, target, detach=False):
    target = target.detach() if detach else target
    return soft_ce(pred, torch.softmax(target / 0.2, dim=1))


def reference(method, feats, epoch, detach=False):
    """(L_ms, L_ma, L_OCLR) for the batch of :func:`batch_and_features`."""
    ls = method.labelset
    pos = {m: {int(r): i for i, r in enumerate(np.nonzero(MODALITY == m)[0])} for m in (VISIBLE, INFRARED)}
    pick = lambda key, m, rows: torch.as_tensor(ls.soft[key][[pos[m][r] for r in rows]])  # noqa: E731
    y_v, y_vr = pick("own_0", VISIBLE, [0, 3, 6]), pick("cross_0", VISIBLE, [0, 3, 6])
    y_r, y_rv = pick("own_1", INFRARED, [1, 4, 5]), pick("cross_1", INFRARED, [1, 4, 5])
    f_v, f_a, f_r = feats[:3], feats[3:6], feats[6:]
    L = lambda f, role: logits(f, method, role)  # noqa: E731
    if epoch % 2 == 0:  # RGB space
        ms = (soft_ce(L(f_v, "specific_v"), y_v) + soft_ce(L(f_a, "specific_v"), y_v)
              + soft_ce(L(f_r, "specific_r"), y_r) + soft_ce(L(f_r, "cross_rcm"), y_rv))
        ma = (soft_ce(L(f_v, "agnostic_va"), y_v) + soft_ce(L(f_a, "agnostic_va"), y_v)
              + soft_ce(L(f_r, "agnostic_va"), y_rv))
        terms = [(f_v, "agnostic_va", f_a, "specific_v"), (f_a, "agnostic_va", f_v, "specific_v"),
                 (f_r, "agnostic_va", f_r, "cross_rcm"), (f_v, "agnostic_va", f_a, "cross_rcm"),
                 (f_a, "agnostic_va", f_v, "cross_rcm"), (f_r, "agnostic_va", f_r, "specific_v")]
    else:  # IR space
        ms = (soft_ce(L(f_v, "specific_v"), y_v) + soft_ce(L(f_a, "specific_v"), y_v)
              + soft_ce(L(f_v, "cross_vcm"), y_vr) + soft_ce(L(f_a, "cross_vcm"), y_vr)
              + soft_ce(L(f_r, "specific_r"), y_r))
        ma = (soft_ce(L(f_v, "agnostic_ra"), y_vr) + soft_ce(L(f_a, "agnostic_ra"), y_vr)
              + soft_ce(L(f_r, "agnostic_ra"), y_r))
        terms = [(f_v, "agnostic_ra", f_a, "cross_vcm"), (f_a, "agnostic_ra", f_v, "cross_vcm"),
                 (f_r, "agnostic_ra", f_r, "specific_r"), (f_v, "agnostic_ra", f_a, "specific_r"),
                 (f_a, "agnostic_ra", f_v, "specific_r"), (f_r, "agnostic_ra", f_r, "cross_vcm")]
    oclr = sum(sce(L(fp, rp), L(ft, rt), detach) for fp, rp, ft, rt in terms)
    return ms, ma, oclr


# ---- tests -------------------------------------------------------------------------------------------------------
def test_label_space_alternates_by_parity_and_picks_the_memories_of_that_space():
    assert [label_space(e) for e in (40, 41, 42, 89)] == [VISIBLE, INFRARED, VISIBLE, INFRARED]
    assert active_roles(VISIBLE) == {"specific_v": "specific_v", "specific_r": "specific_r",
                                     "cross": "cross_rcm", "agnostic": "agnostic_va"}
    assert active_roles(INFRARED)["cross"] == "cross_vcm" and active_roles(INFRARED)["agnostic"] == "agnostic_ra"


@pytest.mark.parametrize("epoch", [40, 41])
def test_stage2_loss_matches_the_term_by_term_reference(epoch):
    method = built(epoch)
    batch, feats = batch_and_features()
    total, logs = method.loss({"global": feats}, batch, epoch)
    ms, ma, oclr = reference(method, feats, epoch)
    assert logs["loss_ms_global"] == pytest.approx(ms.item(), rel=1e-5)
    assert logs["loss_ma_global"] == pytest.approx(ma.item(), rel=1e-5)
    assert logs["loss_oclr_global"] == pytest.approx(oclr.item(), rel=1e-5)
    assert total.item() == pytest.approx((ms + ma + oclr).item(), rel=1e-5)
    # gradients agree too (the OCLR target is not detached by default)
    (grad,) = torch.autograd.grad(total, feats)
    (expected,) = torch.autograd.grad(ms + ma + oclr, feats)
    assert torch.allclose(grad, expected, atol=1e-5)


def test_oclr_soft_targets_on_a_hand_built_case():
    """RGB-space memories = (e1, e2); every row is f = (sin θ, cos θ, 0, 0) with f1 − f2 = 0.01·ln 3, so the
    SCE target softmax((f1, f2)/0.05/0.2) is exactly (3/4, 1/4)."""
    method = built(40)
    for role in ("specific_v", "cross_rcm", "agnostic_va"):
        method.memories[memory_key("global", role)].features.copy_(torch.eye(2, 4))
    gap = 0.01 * np.log(3.0)
    theta = np.pi / 4 + np.arcsin(gap / np.sqrt(2))
    f = torch.tensor([[np.sin(theta), np.cos(theta), 0.0, 0.0]], dtype=torch.float32)
    assert float(f[0, 0] - f[0, 1]) == pytest.approx(gap, rel=1e-4)
    # v, a and r rows all equal f: prediction logits = target logits; SCE = -(3/4 log p1 + 1/4 log p2) with
    # p = softmax((c1, c2)/0.05) = (e^{0.2 ln 3}, 1)/(...) -> p1 = 3^0.2/(3^0.2 + 1).
    p1 = 3 ** 0.2 / (3 ** 0.2 + 1)
    expected_one = -(0.75 * np.log(p1) + 0.25 * np.log(1 - p1))
    batch, _ = batch_and_features()
    feats = f.repeat(9, 1)
    value = method.oclr_terms(feats, batch, "global", VISIBLE)
    assert float(value) == pytest.approx(6 * expected_one, rel=1e-3)  # six identical terms


def test_oclr_detach_option_stops_the_target_gradient():
    batch, feats = batch_and_features()
    attached = built(40).oclr_terms(feats, batch, "global", VISIBLE)
    detached_method = built(40, oclr_detach=True)
    detached = detached_method.oclr_terms(feats, batch, "global", VISIBLE)
    assert attached.item() == pytest.approx(detached.item(), rel=1e-6)
    (g_att,) = torch.autograd.grad(attached, feats)
    (g_det,) = torch.autograd.grad(detached, feats)
    _, _, ref_det = reference(detached_method, feats, 40, detach=True)
    (g_ref,) = torch.autograd.grad(ref_det, feats)
    assert torch.allclose(g_det, g_ref, atol=1e-5) and not torch.allclose(g_att, g_det, atol=1e-4)


@pytest.mark.parametrize("epoch", [40, 41])
def test_six_memories_get_the_right_updates(epoch):
    """μ = 0: an updated row becomes the (normalised) feature of the LAST batch row with that label."""
    method = make("memory.momentum=0")
    method.on_labels(labelset(epoch), torch.device("cpu"))
    before = {r: method.memories[memory_key("global", r)].features.clone() for r in ROLES}
    batch, feats = batch_and_features()
    f = F.normalize(feats.detach(), dim=1)
    batch.features = {"global": feats.detach()}
    method.update_memories(batch)
    after = {r: method.memories[memory_key("global", r)].features for r in ROLES}
    # batch rows: v = 0..2 (index 0, 3, 6), a = 3..5 (same images), r = 6..8 (index 1, 4, 5)
    # own labels:   v/a: 0, 1, 0 ; r: 2, 0, 1      cross labels: v/a: 2, 1, 1 ; r: 1, 0, 0
    expect_v = {0: f[5], 1: f[4]}  # M_v: last of v/a rows with own label 0 is a-row 5, label 1 a-row 4
    expect_r = {2: f[6], 0: f[7], 1: f[8]}  # M_r by the infrared rows' own labels
    if epoch % 2 == 0:  # RGB space: M_rcm by IR rows via r->v label; M_va by v/a own + r cross
        expect = {"specific_v": expect_v, "specific_r": expect_r, "cross_rcm": {1: f[6], 0: f[8]},
                  "agnostic_va": {1: f[6], 0: f[8]}}
        untouched = ("cross_vcm", "agnostic_ra")
    else:  # IR space: M_vcm by v/a rows via v->r label; M_ra by v/a cross + r own
        expect = {"specific_v": expect_v, "specific_r": expect_r, "cross_vcm": {2: f[3], 1: f[5]},
                  "agnostic_ra": {2: f[6], 1: f[8], 0: f[7]}}
        untouched = ("cross_rcm", "agnostic_va")
    for role, rows in expect.items():
        for label, value in rows.items():
            assert torch.allclose(after[role][label], value, atol=1e-6), (role, label)
        others = [c for c in range(after[role].shape[0]) if c not in rows]
        assert torch.equal(after[role][others], before[role][others]), role
    for role in untouched:
        assert torch.equal(after[role], before[role]), role


def test_memories_are_initialised_from_their_label_space_centroids_with_soft_width():
    ls = labelset()
    ls.centroids[(VISIBLE, "global")] = ls.centroids[(VISIBLE, "global")][:1]  # cluster 1 kept by no argmax
    method = make()
    method.on_labels(ls, torch.device("cpu"))
    for role in ("specific_v", "cross_rcm", "agnostic_va"):
        bank = method.memories[memory_key("global", role)].features
        assert bank.shape == (2, 4) and torch.allclose(bank[0], torch.as_tensor(ls.centroids[(VISIBLE, "global")][0]))
        assert torch.equal(bank[1], torch.zeros(4))
    for role in ("specific_r", "cross_vcm", "agnostic_ra"):
        assert torch.allclose(method.memories[memory_key("global", role)].features,
                              torch.as_tensor(ls.centroids[(INFRARED, "global")]))


def test_stage1_is_the_baseline_intra_modality_contrast_and_stage2_uses_the_cross_paired_sampler():
    method = make()
    ls = labelset(epoch=0)
    ls.cross, ls.soft = None, {}
    method.on_labels(ls, torch.device("cpu"))
    assert sorted(method.memories) == ["global/0", "global/1"]
    batch, feats = batch_and_features()
    _, logs = method.loss({"global": feats}, batch, 0)
    assert set(logs) == {"loss_intra_global"}
    assert type(method.sampler(ls, 0, 0, 1)).__name__ == "PseudoIdentitySampler"
    assert type(method.sampler(labelset(), 40, 0, 1)).__name__ == "CrossPairedSampler"


def test_hard_labels_when_the_labelset_has_no_soft_targets():
    method = make()
    method.on_labels(labelset(soft=False), torch.device("cpu"))
    batch, feats = batch_and_features()
    ce = method.memory_ce(feats, batch, "global", "specific_r", INFRARED, "own")
    expected = F.cross_entropy(logits(feats[6:], method, "specific_r"), batch.labels[6:])
    assert ce.item() == pytest.approx(expected.item(), rel=1e-6)


def test_recipe_sets_propagation_and_unknown_params_are_rejected():
    config = build_config(method="mult")
    assert config.pseudo.association == "propagation" and config.method_params["oclr_detach"] is False
    plan = make().relabel_plan(40)
    assert plan.association == "propagation" and not plan.keep_outliers  # outliers labelled by propagation
    assert plan.association_params["alpha"] == 0.2 and plan.association_params["beta"] == 0.7
    with pytest.raises(UserError, match="method_params.oclr_detch: not a setting of method mult; valid: "
                                        "oclr_detach, oclr_temperature"):
        make(oclr_detch=True)
