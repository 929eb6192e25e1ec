"""SALCR hooks on hand-built labels and features: dual-space targets, the stage-2 loss against references written
from METHODS.md §1, GPCR positive sets on a hand example, random-order memory updates identical on two "ranks",
and the once-only, resume-safe re-initialisation of the part head at the stage switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import build_config
from raytrain_vireid.errors import UserError
from raytrain_vireid.memory.cluster import sequential_momentum_update_
from raytrain_vireid.methods import get_method
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, memory_key, space_labels
from raytrain_vireid.methods.salcr import PART_OUTPUTS, epoch_seed, part_memory_key, part_rows
from raytrain_vireid.models.parts import salcr_partners
from raytrain_vireid.models.resnet import TwoStreamResNet
from raytrain_vireid.pseudo.labelset import LabelSet

TAU, D, P = 0.05, 4, 3
KEYS = ("global", "part0", "part1", "part2")
# Training rows: visible 0-4 (4 = DBSCAN outlier), infrared 5-8 (8 = outlier).
MODALITY = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1], np.int8)
LABELS = np.array([0, 0, 1, 1, -1, 0, 1, 1, -1])
# Cross labels; infrared row 6 points at visible cluster 2, which the re-assignment emptied (2 visible clusters).
CROSS = np.array([1, 1, 0, 0, -1, 0, 2, 1, -1])
E = torch.eye(D)


def labelset(epoch=40, cross=True):
    rng = np.random.default_rng(1)
    cents = {(m, key): F.normalize(torch.tensor(rng.normal(size=(2, D)), dtype=torch.float32), dim=1).numpy()
             for m in (VISIBLE, INFRARED) for key in KEYS}
    return LabelSet(epoch=epoch, labels=LABELS.copy(), cross=CROSS.copy() if cross else None,
                    num_clusters={VISIBLE: 2, INFRARED: 2}, centroids=cents)


def instance_features():
    """Every key: visible rows 0-3 = e0..e3 (row 4, an outlier, is not in any memory), infrared 5-7 = e0..e2."""
    rows = torch.stack([E[0], E[1], E[2], E[3], E[0] + E[1], E[0], E[1], E[2], E[3]])
    return {key: rows.numpy() for key in KEYS}


def make(*overrides, seed=0):
    config = build_config(method="salcr", overrides=["stage.stage2_epoch=40", f"train.seed={seed}", *overrides])
    return get_method("salcr")(config, ("global",), MODALITY)


def built(*overrides, seed=0, epoch=40):
    method = make(*overrides, seed=seed)
    method.on_features(instance_features(), torch.device("cpu"))
    method.on_labels(labelset(epoch), torch.device("cpu"))
    return method


def scrambled(*overrides):
    """A stage-2 method whose cluster memories all hold different random banks (so a wrong pick shows)."""
    method = built(*overrides)
    gen = torch.Generator().manual_seed(7)
    for key, memory in method.memories.items():
        if not key.startswith("instance/"):
            memory.features.copy_(F.normalize(torch.randn(memory.features.shape, generator=gen), dim=1))
    return method


def batch():
    # forward order [v; a; r], two aligned triplets: visible rows 0, 2 (two views each), infrared rows 5, 7
    rows_v, rows_r = torch.tensor([0, 2]), torch.tensor([5, 7])
    index = torch.cat([rows_v, rows_v, rows_r])
    view = torch.tensor([VIEW_V] * 2 + [VIEW_A] * 2 + [VIEW_R] * 2)
    return Batch(index=index, view=view, labels=torch.as_tensor(LABELS)[index], cross=torch.as_tensor(CROSS)[index])


def random_outputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = {"global": torch.randn(6, D, generator=gen, requires_grad=True)}
    out.update({key: torch.randn(6, P, D, generator=gen, requires_grad=True) for key in PART_OUTPUTS})
    return out


# ---- targets ----------------------------------------------------------------------------------------------
def test_dual_space_targets_per_view():
    b = batch()
    # RGB space: [y_v, y_v, ỹ_r→v]; IR space: [ỹ_v→r, ỹ_v→r, y_r]
    assert space_labels(b, VISIBLE).tolist() == [0, 1, 0, 1, 0, 1]
    assert space_labels(b, INFRARED).tolist() == [1, 0, 1, 0, 0, 1]
    parts = {key: torch.arange(6.0).view(6, 1, 1).expand(6, P, D) + 10 * i for i, key in enumerate(PART_OUTPUTS)}
    feats, targets = part_rows(parts, b, VISIBLE)  # own, cross-aligned, other-view rows of v and a: 6B = 12
    assert feats[:, 0, 0].tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]
    assert targets[VISIBLE].tolist() == [0, 1, 0, 1] * 3 and targets[INFRARED].tolist() == [1, 0, 1, 0] * 3
    feats, targets = part_rows(parts, b, INFRARED)  # 3B = 6 rows
    assert feats[:, 0, 0].tolist() == [4, 5, 14, 15, 24, 25]
    assert targets[VISIBLE].tolist() == [0, 1] * 3 and targets[INFRARED].tolist() == [0, 1] * 3


def test_stage2_memories_padding_and_static_instances():
    method = built()
    # visible space has 2 clusters, but an infrared cross label points at cluster 2: a zero row is appended
    assert method.memories[memory_key("global", VISIBLE)].num_clusters == 3
    assert method.memories[memory_key("global", INFRARED)].num_clusters == 2
    assert float(method.memories[memory_key("global", VISIBLE)].features[2].abs().sum()) == 0
    for p in range(P):  # four part memories per part, each from the centres of its label space
        for owner in (VISIBLE, INFRARED):
            for space in (VISIBLE, INFRARED):
                memory = method.memories[part_memory_key(p, owner, space)]
                expected = labelset().centroids[(space, f"part{p}")]
                torch.testing.assert_close(memory.features[:2], torch.tensor(expected))
    # instance memories: the non-outlier rows only (visible 0-3, infrared 5-7)
    assert method.instances["global/visible"].features.shape == (4, D)
    assert method.instances["part1/infrared"].features.shape == (3, D)
    before = method.instances["global/visible"].features.clone()
    method.update_memories(Batch(**batch().tensors(), features={k: v.detach() for k, v in random_outputs().items()}))
    assert torch.equal(method.instances["global/visible"].features, before)  # static within the epoch


# ---- the loss ---------------------------------------------------------------------------------------------
def ce(feats, memory, targets):
    keep = targets >= 0
    return F.cross_entropy(F.normalize(feats[keep], dim=1) @ memory.features.T / TAU, targets[keep])


def test_stage2_loss_is_the_weighted_sum_of_its_terms_and_matches_the_reference():
    method = scrambled("loss.global=0.7", "loss.part=1.3", "loss.gpcr=0.25")
    b, out = batch(), random_outputs()
    total, logs = method.loss(out, b, 40)
    expected_total = (0.7 * logs["loss_global"] + 1.3 * (logs["loss_part_v"] + logs["loss_part_r"])
                      + 0.25 * (logs["loss_gpcr_global"] + logs["loss_gpcr_part"]))
    assert float(total.detach()) == pytest.approx(expected_total, rel=1e-5)
    # L_g = CE(M_v(f), [y_v, y_v, ỹ_r→v]) + CE(M_r(f), [ỹ_v→r, ỹ_v→r, y_r]) on all 3B rows
    m_v, m_r = method.memories[memory_key("global", VISIBLE)], method.memories[memory_key("global", INFRARED)]
    reference = ce(out["global"], m_v, torch.tensor([0, 1, 0, 1, 0, 1])) + ce(out["global"], m_r, torch.tensor([1, 0, 1, 0, 0, 1]))
    assert logs["loss_global"] == pytest.approx(float(reference.detach()), rel=1e-5)
    # L_pv: per part, the 6B visible part rows against the two visible-feature memories; mean over parts
    vis = torch.cat([out[k][b.view != VIEW_R] for k in PART_OUTPUTS])
    ir = torch.cat([out[k][b.view == VIEW_R] for k in PART_OUTPUTS])
    y_v, y_vr = torch.tensor([0, 1, 0, 1] * 3), torch.tensor([1, 0, 1, 0] * 3)
    y_rv, y_r = torch.tensor([0, 1] * 3), torch.tensor([0, 1] * 3)
    mem = lambda p, owner, space: method.memories[part_memory_key(p, owner, space)]  # noqa: E731
    pv = sum(ce(vis[:, p], mem(p, VISIBLE, VISIBLE), y_v) + ce(vis[:, p], mem(p, VISIBLE, INFRARED), y_vr)
             for p in range(P)) / P
    pr = sum(ce(ir[:, p], mem(p, INFRARED, VISIBLE), y_rv) + ce(ir[:, p], mem(p, INFRARED, INFRARED), y_r)
             for p in range(P)) / P
    assert logs["loss_part_v"] == pytest.approx(float(pv.detach()), rel=1e-5)
    assert logs["loss_part_r"] == pytest.approx(float(pr.detach()), rel=1e-5)
    total.backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in out.values())


def test_gpcr_weight_defaults_to_lambda2():
    method = make()
    method.config.loss.clear()
    assert method.weight("gpcr") == 0.5 and method.weight("global") == 1.0 and method.weight("part") == 1.0


def test_gpcr_positive_sets_on_a_hand_example():
    """Instance memories are one-hot: visible e0..e3, infrared e0..e2 (top-2, rows [v0 v1 a0 a1 r0 r1])."""
    method = built("method_params.k_instance=2")
    e = E
    glob = torch.stack([e[0] + .5 * e[1], e[3] + .5 * e[2] + .2 * e[1],  # v: {0,1}; {3,2} (vis) / {2,1} (ir)
                        e[1] + .5 * e[2], e[2] + .5 * e[0],  # a: {1,2}; {2,0}
                        e[1] + .5 * e[0], e[0] + .5 * e[1]])  # r: {1,0}; {0,1}
    # Global positives, intersected over the triplet: triplet 0 -> {1} in both memories; triplet 1 -> {}.
    part = torch.stack([e[1] + .5 * e[0], e[0],  # v0 parts: {1,0}
                        e[2] + .5 * e[3] + .1 * e[0], e[0],  # a0 parts: {2,3} (vis) / {2,0} (ir)
                        e[3] + .5 * e[2] + .2 * e[1], e[0]])  # r0 parts: {3,2} (vis) / {2,1} (ir)
    out = {"global": glob, "pg": part[:, None, :].expand(6, P, D)}
    gi, pi = method.gpcr_loss(out)

    def positive_loss(feats, bank, rows, j):
        p = torch.softmax(F.normalize(feats[rows], dim=1) @ bank.T / TAU, dim=1)
        return -torch.log(p[:, j]).mean()

    vis, ir = E, E[:3]
    # global: rows v0, a0, r0 (0, 2, 4) have positive {1} in each memory; triplet 1 has none
    expected_gi = positive_loss(glob, vis, [0, 2, 4], 1) + positive_loss(glob, ir, [0, 2, 4], 1)
    # parts, visible memory: v0's others (a0 {2,3}, r0 {3,2}) miss 1 -> no positive; a0, r0 keep {1}.
    # infrared memory: a0 {2,0} ∪ r0 {2,1} ∋ 1, v0 {1,0} ∪ r0 ∋ 1, v0 ∪ a0 ∋ 1 -> all three keep {1}.
    expected_pi = positive_loss(part, vis, [2, 4], 1) + positive_loss(part, ir, [0, 2, 4], 1)
    assert float(gi) == pytest.approx(float(expected_gi), rel=1e-5)
    assert float(pi) == pytest.approx(float(expected_pi), rel=1e-5)


# ---- memory updates ---------------------------------------------------------------------------------------
def gathered(seed=0):
    return Batch(**batch().tensors(), features={k: v.detach() for k, v in random_outputs(seed).items()})


def test_random_order_update_is_identical_across_ranks_and_follows_the_seeded_order():
    ranks = [built(), built()]
    reference = built()
    for step in range(3):
        for method in ranks:
            method.update_memories(gathered(step))
    for key in ranks[0].memories:
        assert torch.equal(ranks[0].memories[key].features, ranks[1].memories[key].features), key
    # Reference: the two global memories, in the order of the (seed, epoch) generator, one sample at a time,
    # each updated by both modalities (M_v by the infrared rows' r→v labels too).
    gen = torch.Generator().manual_seed(epoch_seed(0, 40, 1))
    for step in range(3):
        g = gathered(step)
        for space in (VISIBLE, INFRARED):
            bank = reference.memories[memory_key("global", space)].features
            order = torch.randperm(6, generator=gen)
            feats, labels = F.normalize(g.features["global"], dim=1)[order], space_labels(g, space)[order]
            for f, y in zip(feats, labels):
                if y >= 0:
                    bank[y] = F.normalize(0.1 * bank[y] + 0.9 * f, dim=0)
    for space in (VISIBLE, INFRARED):
        key = memory_key("global", space)
        torch.testing.assert_close(ranks[0].memories[key].features, reference.memories[key].features)
    other_seed = built(seed=1)
    for step in range(3):
        other_seed.update_memories(gathered(step))
    assert not torch.equal(other_seed.memories[memory_key("global", VISIBLE)].features,
                           ranks[0].memories[memory_key("global", VISIBLE)].features)


def test_part_memories_are_updated_by_their_owner_rows_in_batch_order():
    method, reference = built(), built()
    g = gathered()
    method.update_memories(g)
    for owner in (VISIBLE, INFRARED):
        rows, targets = part_rows(g.features, g, owner)
        for p in range(P):
            for space in (VISIBLE, INFRARED):
                bank = reference.memories[part_memory_key(p, owner, space)].features
                keep = targets[space] >= 0
                sequential_momentum_update_(bank, targets[space][keep], F.normalize(rows[keep, p], dim=1), 0.1)
                torch.testing.assert_close(method.memories[part_memory_key(p, owner, space)].features, bank)
    # the visible- and infrared-feature memories of one label space start equal and then part ways
    assert not torch.equal(method.memories[part_memory_key(0, VISIBLE, INFRARED)].features,
                           method.memories[part_memory_key(0, INFRARED, INFRARED)].features)


# ---- schedule, sampler, forward ---------------------------------------------------------------------------
def test_stage_switch_reinitialises_the_part_head_exactly_once_and_resume_keeps_it():
    torch.manual_seed(0)
    model = TwoStreamResNet(depth=18, parts=3)
    method = make("stage.stage2_epoch=2")
    with torch.no_grad():
        model.part_head.safl.tokens.add_(1.0)  # "trained" in stage 1
        model.part_head.bn.weight.fill_(2.0)
        model.part_head.bn.running_mean.fill_(3.0)
    snapshots = []
    rng = torch.get_rng_state()
    for epoch in range(4):
        method.on_epoch_start(model, epoch)
        snapshots.append(model.part_head.safl.tokens.detach().clone())
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    assert torch.equal(snapshots[0], snapshots[1]) and not torch.equal(snapshots[1], snapshots[2])
    assert torch.equal(snapshots[2], snapshots[3])  # only at the stage-2 epoch
    assert bool((model.part_head.bn.weight == 1).all()) and bool((model.part_head.bn.running_mean == 0).all())
    # Another rank (different global RNG state) draws the same weights.
    torch.manual_seed(123)
    other = TwoStreamResNet(depth=18, parts=3)
    method.on_epoch_start(other, 2)
    assert torch.equal(other.part_head.safl.tokens, snapshots[2])
    # A run resumed after the switch: the checkpoint's weights are loaded before the epochs, and the epochs it
    # trains (3, 4, ...) never re-initialise the part head again.
    with torch.no_grad():
        model.part_head.safl.tokens.mul_(0.5)  # trained in stage 2
    resumed = TwoStreamResNet(depth=18, parts=3)
    resumed.load_state_dict(model.state_dict())
    for epoch in range(3, 6):
        method.on_epoch_start(resumed, epoch)
    assert torch.equal(resumed.part_head.safl.tokens, model.part_head.safl.tokens)
    off = make("stage.stage2_epoch=2", "method_params.reinit_parts=false")
    off.on_epoch_start(resumed, 2)
    assert torch.equal(resumed.part_head.safl.tokens, model.part_head.safl.tokens)


def test_sampler_forward_kwargs_and_stage1_loss():
    method = make()
    stage1 = labelset(epoch=0, cross=False)
    method.on_labels(stage1, torch.device("cpu"))
    assert type(method.sampler(stage1, 0, 0, 1)).__name__ == "PseudoIdentitySampler"
    assert method.forward_kwargs(batch(), 0) == {}
    assert not method.needs_features(stage1) and method.needs_features(labelset())
    _, logs = method.loss(random_outputs(), batch(), 0)
    assert set(logs) == {"loss_intra_global"}
    method = built()
    assert type(method.sampler(labelset(), 40, 0, 1)).__name__ == "CrossPairedSampler"
    partners = method.forward_kwargs(batch(), 40)["partner_index"]
    assert all(torch.equal(partners[k], salcr_partners(2)[k]) for k in ("cross", "view"))
    uneven = batch()
    uneven.view = torch.tensor([VIEW_V, VIEW_V, VIEW_A, VIEW_A, VIEW_R, VIEW_V])
    with pytest.raises(ValueError, match="as many infrared as visible rows"):
        method.forward_kwargs(uneven, 40)


def test_salcr_needs_the_part_branch():
    with pytest.raises(UserError, match="model.parts: salcr needs the two-stream ResNet with its part branch"):
        make("model.parts=0")
    with pytest.raises(UserError, match="method_params.k_instance"):
        make("method_params.k_instance=0")
