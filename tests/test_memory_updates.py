"""Memories: sequential momentum updates (vectorised == per-sample loop), DDP replicas, buffers."""
import math

import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid.memory.cluster import ClusterMemory, occurrence_rank
from raytrain_vireid.memory.instance import InstanceMemory
from raytrain_vireid.memory.multicentre import MultiCentreMemory


def naive_update(bank: torch.Tensor, labels: torch.Tensor, feats: torch.Tensor, momentum: float) -> torch.Tensor:
    bank = bank.clone()
    for x, y in zip(F.normalize(feats, dim=1), labels.tolist()):
        if y < 0:
            continue
        bank[y] = momentum * bank[y] + (1 - momentum) * x
        bank[y] = bank[y] / bank[y].norm()
    return bank


def test_occurrence_rank_by_hand():
    labels = torch.tensor([3, 1, 3, 3, 0, 1])
    assert occurrence_rank(labels).tolist() == [0, 0, 1, 2, 0, 1]


def test_cluster_update_equals_per_sample_loop_with_repeats():
    g = torch.Generator().manual_seed(0)
    memory = ClusterMemory(torch.randn(5, 8, generator=g), momentum=0.3)
    start = memory.features.clone()
    labels = torch.tensor([2, 2, 0, -1, 2, 4, 0, 2, 1])
    feats = torch.randn(9, 8, generator=g) * 3
    memory.update(feats, labels)
    expected = naive_update(start, labels, feats, 0.3)
    torch.testing.assert_close(memory.features, expected, rtol=0, atol=1e-6)
    assert torch.equal(memory.features[3], start[3])  # untouched cluster


def test_cluster_update_hand_value():
    memory = ClusterMemory(torch.tensor([[1.0, 0.0]]), momentum=0.5)
    memory.update(torch.tensor([[0.0, 5.0]]), torch.tensor([0]))  # normalised input (0, 1)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(memory.features, torch.tensor([[s, s]]))


def test_random_order_follows_generator_and_is_reproducible():
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 0, 2, 1])
    feats = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    results = []
    for _ in range(2):
        memory = ClusterMemory(base, momentum=0.2)
        memory.update(feats, labels, generator=torch.Generator().manual_seed(7))
        results.append(memory.features)
    assert torch.equal(results[0], results[1])
    order = torch.randperm(6, generator=torch.Generator().manual_seed(7))
    expected = naive_update(F.normalize(base, dim=1), labels[order], feats[order], 0.2)
    torch.testing.assert_close(results[0], expected, rtol=0, atol=1e-6)
    in_order = ClusterMemory(base, momentum=0.2)
    in_order.update(feats, labels)
    assert not torch.allclose(in_order.features, results[0])  # order matters for repeated labels


def test_ddp_replicas_need_the_gathered_batch():
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    feats = torch.randn(8, 6, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 2, 0, 1, 3, 0, 2])  # rank 0 rows 0..3, rank 1 rows 4..7
    replicas = [ClusterMemory(base), ClusterMemory(base)]
    for replica in replicas:
        replica.update(feats, labels)
    assert torch.equal(replicas[0].features, replicas[1].features)
    local = ClusterMemory(base)
    local.update(feats[:4], labels[:4])
    assert not torch.allclose(local.features, replicas[0].features)


def test_cluster_loss_hard_soft_and_no_grad_into_memory():
    memory = ClusterMemory(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), temperature=0.5)
    feats = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    logits = memory.logits(feats)
    s = math.sqrt(2) / 2 / 0.5
    torch.testing.assert_close(logits.detach(), torch.tensor([[2.0, 0.0], [0.0, 2.0], [s, s]]))
    hard = memory.loss(feats, torch.tensor([0, -1, 1]))
    expected = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    assert hard.item() == pytest.approx(expected, rel=1e-6)
    soft = memory.loss(feats, torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0]]))
    l2 = math.log(1 + math.exp(-2))
    assert soft.item() == pytest.approx(((2 + l2 + l2) / 2 + l2 + math.log(2)) / 3, rel=1e-6)
    hard.backward()
    assert feats.grad is not None and feats.grad[1].abs().sum() == 0  # ignored row gets no gradient
    assert not memory.features.requires_grad
    assert memory.loss(feats, torch.tensor([-1, -1, -1])).item() == 0.0
    ignored_row = memory.loss(feats, torch.tensor([[0.5, 0.5], [0.0, 0.0], [1.0, 0.0]]))
    assert ignored_row.item() == pytest.approx((1 + l2 + math.log(2)) / 2, rel=1e-6)


def test_momentum_setter_and_state_dict_buffer():
    memory = ClusterMemory(torch.eye(3), momentum=0.1)
    memory.momentum = 0.99
    assert memory.momentum == 0.99
    with pytest.raises(ValueError, match="momentum"):
        memory.momentum = 1.0
    assert set(memory.state_dict()) == {"features"}


def test_instance_memory_update_static_and_similarity():
    start = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    memory = InstanceMemory(start, momentum=0.9)
    sims = memory.similarity(torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(sims, torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)]]))
    indices = torch.tensor([0, 2, 0])
    feats = torch.tensor([[0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    expected = naive_update(memory.features, indices, feats, 0.9)
    memory.update(indices, feats)
    torch.testing.assert_close(memory.features, expected, rtol=0, atol=1e-6)
    frozen = InstanceMemory(start, static=True)
    before = frozen.features.clone()
    frozen.update(indices, feats)
    assert torch.equal(frozen.features, before)


def test_multicentre_distances_and_nearest():
    centres = torch.tensor([[[1.0, 0.0], [0.8, 0.6]], [[0.0, 1.0], [-1.0, 0.0]]])
    memory = MultiCentreMemory(centres)
    feats = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    d = memory.distances(feats)
    torch.testing.assert_close(d[0], torch.tensor([[0.0, math.sqrt(0.04 + 0.36)], [math.sqrt(2), 2.0]]))
    assert memory.nearest_cluster(feats).tolist() == [0, 1]
    assert list(memory.state_dict()) == ["centres"]
