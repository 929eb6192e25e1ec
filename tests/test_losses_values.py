"""Losses: values on hand-built inputs (worked by hand or by an explicit naive formula), gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid.losses.contrastive import dual_space_ce, oclr
from raytrain_vireid.losses.multicentre import mccl, nearest_cluster
from raytrain_vireid.losses.neighbour import cnl, collaborative_neighbours
from raytrain_vireid.losses.parts import part_contrastive
from raytrain_vireid.losses.refinement import gpcr, gpcr_part, other_views_union, triplet_intersection
from raytrain_vireid.losses.soft import mixed_targets, soft_cross_entropy
from raytrain_vireid.memory.cluster import ClusterMemory

L2 = math.log(1 + math.exp(-2))  # −log softmax([2, 0])_0


def test_soft_ce_and_mixed_targets():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    assert soft_cross_entropy(logits, targets).item() == pytest.approx((L2 + math.log(2)) / 2, rel=1e-6)
    mixed = mixed_targets(torch.tensor([1, -1]), torch.tensor([[0.4, 0.6], [0.5, 0.5]]), beta=0.7)
    torch.testing.assert_close(mixed, torch.tensor([[0.12, 0.88], [0.0, 0.0]]))


def test_dual_space_ce_sums_both_memories():
    mv = ClusterMemory(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), temperature=0.5)
    mr = ClusterMemory(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), temperature=0.5)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)  # [v; a; r], B=1
    loss = dual_space_ce(feats, mv, mr, torch.tensor([0, 0, 1]), torch.tensor([1, -1, 1]))
    # M_v: rows 0,1,2 -> L2, 2+L2, 2+L2 ; M_r: rows 0,2 -> L2, L2
    assert loss.item() == pytest.approx((L2 + 2 * (2 + L2)) / 3 + L2, rel=1e-6)
    loss.backward()
    assert feats.grad.abs().sum() > 0


def test_oclr_soft_targets_by_hand_and_detach():
    pred = torch.tensor([[0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.2 * math.log(3.0), 0.0]], requires_grad=True)  # softmax(t/0.2) = [3/4, 1/4]
    loss = oclr(pred, target)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    pred2 = torch.tensor([[math.log(3.0), 0.0]])
    value = oclr(pred2, target.detach()).item()
    assert value == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=1e-6)
    oclr(pred2, target).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0  # MULT: target not detached
    target.grad = None
    oclr(pred2.requires_grad_(), target, detach=True).backward()
    assert target.grad is None


def naive_cnl(feats, bank, qd, bd, qs, bs, ratio, tau):
    total = 0.0
    for i in range(feats.shape[0]):
        sd, ss = bd @ qd[i], bs @ qs[i]
        members = [j for j in range(bank.shape[0]) if sd[j] > ratio * sd.max() and ss[j] > ratio * ss.max()]
        logp = F.log_softmax(F.normalize(feats[i], dim=0) @ bank.t() / tau, dim=0)
        total += -sum(logp[j] for j in members) / (len(members) + 1)
    return total / feats.shape[0]


def test_cnl_neighbour_sets_by_hand_and_against_naive():
    deep = F.normalize(torch.tensor([[1.0, 0.0], [0.95, 0.31], [0.0, 1.0], [0.7, 0.7]]), dim=1)
    shallow = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.96, 0.28]]), dim=1)
    idx = torch.tensor([0, 2])
    mask = collaborative_neighbours(deep[idx], deep, shallow[idx], shallow, ratio=0.9)
    # sample 0: deep {0,1}, shallow {0,2,3} -> {0}; sample 2: deep {2}, shallow {0,2,3} -> {2}
    assert mask.tolist() == [[True, False, False, False], [False, False, True, False]]
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = cnl(feats, deep, mask, temperature=1.0)
    logp0 = F.log_softmax(deep @ torch.tensor([1.0, 0.0]), dim=0)[0]
    logp1 = F.log_softmax(deep @ torch.tensor([0.0, 1.0]), dim=0)[2]
    assert loss.item() == pytest.approx((-(logp0 + logp1) / 2 / 2).item(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    bd, bs = F.normalize(torch.randn(12, 4, generator=g), dim=1), F.normalize(torch.randn(12, 3, generator=g), dim=1)
    q = torch.tensor([1, 5, 7])
    f = torch.randn(3, 4, generator=g)
    got = cnl(f, bd, collaborative_neighbours(bd[q], bd, bs[q], bs, 0.5), 0.05)
    assert got.item() == pytest.approx(naive_cnl(f, bd, bd[q], bd, bs[q], bs, 0.5, 0.05).item(), rel=1e-5)
    loss.backward()
    assert feats.grad.abs().sum() > 0


def test_gpcr_masks_and_value_by_hand():
    mask = torch.tensor([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=torch.bool)  # B=1: rows v, a, r
    assert triplet_intersection(mask).tolist() == [[True, False, False]] * 3
    assert other_views_union(mask).tolist() == [[True, True, True], [True, True, True], [True, True, True]]
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1]], requires_grad=True)
    loss, positives = gpcr(feats, bank, k=1, temperature=1.0)
    assert positives.tolist() == [[True, False, False]] * 3  # every view's top-1 is instance 0
    expected = sum(-F.log_softmax(bank @ F.normalize(f, dim=0), dim=0)[0] for f in feats.detach()) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert feats.grad.abs().sum() > 0
    # part: views' top-2 differ; union of the other two views ∩ global {0}
    parts = torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, -0.2]])
    part_loss = gpcr_part(parts, bank, positives, k=1, temperature=1.0)
    # part top-1: v -> 1, a -> 0, r -> 0; unions: v {0}, a {1,0}, r {1,0}; ∩ {0} -> {0} for all
    expected_part = sum(-F.log_softmax(bank @ F.normalize(f, dim=0), dim=0)[0] for f in parts) / 3
    assert part_loss.item() == pytest.approx(expected_part.item(), rel=1e-6)


def test_gpcr_rows_without_positives_are_skipped():
    bank = torch.eye(3)
    feats = torch.eye(3)  # v, a, r pick different top-1 -> empty intersection
    loss, positives = gpcr(feats, bank, k=1)
    assert not positives.any() and loss.item() == 0.0


def test_part_contrastive_averages_parts():
    def memories():
        return [ClusterMemory(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), temperature=0.5) for _ in range(2)]
    rgb, ir = memories(), memories()
    v = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    r = [torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]])]
    lpv, lpr = part_contrastive(v, r, rgb, ir, (torch.tensor([0]), torch.tensor([1])),
                                (torch.tensor([1]), torch.tensor([-1])))
    # part 0 visible: L2 + (2+L2); part 1: (2+L2) + L2  -> mean 2+2·L2
    assert lpv.item() == pytest.approx(2 + 2 * L2, rel=1e-6)
    assert lpr.item() == pytest.approx(L2, rel=1e-6)
    with pytest.raises(ValueError, match="part_contrastive"):
        part_contrastive(v, r[:1], rgb, ir, (torch.tensor([0]),) * 2, (torch.tensor([0]),) * 2)


def test_mccl_value_by_hand_and_mask():
    # 2 clusters × (K+1)=2 sub-centres
    d = torch.tensor([[[1.0, 2.0], [4.0, 0.5]],
                      [[1.0, 1.0], [2.0, 4.0]]], requires_grad=True)
    assert nearest_cluster(d).tolist() == [1, 0]
    pos0, neg0 = (1 / 4 + 1 / 0.5) / 2, 1.0  # positive cluster 1; other cluster min distance 1
    pos1, neg1 = 1.0, 1 / 2
    l0, l1 = -math.log(pos0 / (pos0 + neg0)), -math.log(pos1 / (pos1 + neg1))
    assert mccl(d).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert mccl(d, torch.tensor([False, True])).item() == pytest.approx(l1, rel=1e-6)
    assert mccl(d, torch.tensor([False, False])).item() == 0.0
    mccl(d).backward()
    assert d.grad.abs().sum() > 0
