"""SDCL pieces on hand-built tensors: CNL assembly (parity, weights, stages), shared memory, stage-2 filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.config import build_config
from raytrain_vireid.errors import UserError
from raytrain_vireid.methods import get_method
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, memory_key
from raytrain_vireid.methods.instances import instance_key, modality_positions
from raytrain_vireid.methods.sdcl import SHARED, cross_direction, shared_centroids, unified_labels
from raytrain_vireid.pseudo.labelset import LabelSet

HEADS = ("deep", "shallow")
# table rows: 0..4 visible, 5..8 infrared (interleaved on purpose to exercise the position map)
MODALITY = np.array([0, 1, 0, 0, 1, 0, 1, 1, 0], dtype=np.int8)
DEVICE = torch.device("cpu")


def make_method(*sets: str):
    config = build_config(method="sdcl", overrides=["stage.cross_epoch=2", "stage.stage2_epoch=4",
                                                    "memory.momentum_epoch0=0.9", *sets])
    return get_method("sdcl")(config, HEADS, MODALITY)


def features(seed: int, dim: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {h: rng.normal(size=(len(MODALITY), dim)).astype(np.float32) for h in HEADS}


def labelset(epoch: int, labels, cross=None, dim: int = 4) -> LabelSet:
    labels = np.asarray(labels, dtype=np.int64)
    num = {m: int(labels[MODALITY == m].max()) + 1 for m in (VISIBLE, INFRARED)}
    cents = {(m, h): np.eye(num[m], dim, dtype=np.float32) for m in (VISIBLE, INFRARED) for h in HEADS}
    return LabelSet(epoch=epoch, labels=labels, cross=None if cross is None else np.asarray(cross, dtype=np.int64),
                    num_clusters=num, centroids=cents)


def batch(rows_v, rows_r) -> Batch:
    rows_v, rows_r = torch.tensor(rows_v), torch.tensor(rows_r)
    index = torch.cat([rows_v, rows_v, rows_r])
    view = torch.cat([torch.full_like(rows_v, VIEW_V), torch.full_like(rows_v, VIEW_A),
                      torch.full_like(rows_r, VIEW_R)])
    zeros = torch.zeros_like(index)
    return Batch(index=index, view=view, labels=zeros, cross=zeros - 1)


def reference_cnl(out: dict, rows: list[int], index: list[int], feats: dict, query: int, bank: int) -> float:
    """Plain-loop CNL: neighbours from the rows' own normalised features, deep 1 + shallow 0.5."""
    normed = {h: F.normalize(torch.tensor(feats[h]), dim=1) for h in HEADS}
    bank_rows = [j for j in range(len(MODALITY)) if MODALITY[j] == bank]
    total = 0.0
    for h, weight in (("deep", 1.0), ("shallow", 0.5)):
        per_row = []
        for b, i in zip(rows, index):
            members = []
            for j in bank_rows:
                ok = True
                for g in HEADS:
                    sims = [float(normed[g][i] @ normed[g][k]) for k in bank_rows]
                    ok &= float(normed[g][i] @ normed[g][j]) > 0.9 * max(sims)
                members.append(ok)
            f = F.normalize(out[h][b], dim=0)
            logits = torch.stack([f @ normed[h][k] for k in bank_rows]) / 0.05
            log_prob = torch.log_softmax(logits, dim=0)
            picked = [float(log_prob[n]) for n, m in enumerate(members) if m]
            per_row.append(-sum(picked) / (len(picked) + 1))
        total += weight * sum(per_row) / len(per_row)
    return total


@pytest.fixture
def stage1():
    method = make_method()
    feats = features(0)
    method.on_features(feats, DEVICE)
    method.on_labels(labelset(1, [0, 0, 1, 0, 1, 1, 0, 1, 1]), DEVICE)
    b = batch([0, 3], [4, 6])
    rng = torch.Generator().manual_seed(1)
    out = {h: torch.randn(len(b.index), 4, generator=rng) for h in HEADS}
    return method, feats, b, out


def test_cnl_parity_directions_and_weights(stage1):
    method, feats, b, out = stage1
    index = b.index.tolist()
    vis_rows, ir_rows = [0, 1, 2, 3], [4, 5]
    intra = (reference_cnl(out, vis_rows, index[:4], feats, VISIBLE, VISIBLE)
             + reference_cnl(out, ir_rows, index[4:], feats, INFRARED, INFRARED))
    v2r = reference_cnl(out, vis_rows, index[:4], feats, VISIBLE, INFRARED)
    r2v = reference_cnl(out, ir_rows, index[4:], feats, INFRARED, VISIBLE)
    expected = {
        1: 1.0 * intra,                      # before cross_epoch (2): intra only
        2: 1.0 * intra + 0.5 * 0.1 * v2r,    # even: rgb -> ir memory with the extra x0.1
        3: 1.0 * intra + 0.5 * r2v,          # odd: ir -> rgb memory
        4: 0.1 * intra + 0.1 * 0.1 * v2r,    # stage 2 weights (0.1, 0.1), even
        5: 0.1 * intra + 0.1 * r2v,
    }
    for epoch, value in expected.items():
        total, logs = method.cnl_loss(out, b, epoch)
        assert float(total) == pytest.approx(value, rel=1e-5), epoch
        assert ("loss_cnl_cross" in logs) == (epoch >= 2)


def test_loss_adds_cluster_ce_and_cnl(stage1):
    method, _, b, out = stage1
    total, logs = method.loss(out, b, 3)
    ce = sum(logs[f"loss_intra_{h}"] for h in HEADS)
    assert float(total) == pytest.approx(ce + logs["loss_cnl_intra"] + 0.5 * logs["loss_cnl_cross"], rel=1e-5)


def test_cross_direction():
    assert cross_direction(9, 10) is None
    assert cross_direction(10, 10) == (VISIBLE, INFRARED)
    assert cross_direction(11, 10) == (INFRARED, VISIBLE)


def test_instance_memories_ema_in_batch_order(stage1):
    method, feats, b, _ = stage1
    gathered = Batch(**b.tensors(), features={h: torch.ones(len(b.index), 4) for h in HEADS})
    method.update_memories(gathered)
    row = F.normalize(torch.tensor(feats["deep"][3]), dim=0)  # table row 3 = visible position 2
    unit = torch.full((4,), 0.5)
    for _ in range(2):  # v then a view of the same image
        row = F.normalize(0.9 * row + 0.1 * unit, dim=0)
    assert modality_positions(MODALITY)[3] == 2
    torch.testing.assert_close(method.instances[instance_key("deep", VISIBLE)].features[2], row)


def test_stage2_filter():
    labels = np.array([3, -1, 0, 2, 1, 5, 0, 1, -1], dtype=np.int64)
    cross = np.array([1, 0, -1, 2, -1, 0, 7, 7, 7], dtype=np.int64)
    # visible rows 0,2,3,5,8: kept when own and CRA label are valid; infrared rows 1,4,6,7 keep their own label
    assert unified_labels(labels, cross, MODALITY).tolist() == [1, -1, -1, 2, 1, 0, 0, 1, -1]


def test_shared_memory_init_and_stage2_training_rows():
    method = make_method()
    feats = {h: np.zeros((len(MODALITY), 2), dtype=np.float32) for h in HEADS}
    feats["deep"][[0, 2, 3, 5, 8]] = [[1, 0], [0, 1], [1, 0], [0, 1], [3, 4]]   # visible
    feats["deep"][[1, 4, 6, 7]] = [[1, 0], [1, 0], [0, 1], [0, 1]]               # infrared
    feats["shallow"] = feats["deep"][:, ::-1].copy()
    method.on_features(feats, DEVICE)
    labels = [0, 0, 0, 1, 0, -1, 1, 1, 1]
    cross = [1, -1, 0, 1, -1, 0, -1, -1, -1]  # visible rows 0,2,3,5,8 -> IR labels 1,0,1,0,-1
    method.on_labels(labelset(5, labels, cross, dim=2), DEVICE)
    assert set(method.memories) >= {memory_key(h, SHARED) for h in HEADS}
    assert memory_key("deep", VISIBLE) not in method.memories
    # IR cluster 0: IR rows 1,4 (1,0),(1,0) + visible rows 2,5 (0,1),(0,1) -> mean (.5,.5)
    # IR cluster 1: IR rows 6,7 (0,1),(0,1) + visible rows 0,3 (1,0),(1,0) -> (.5,.5); row 8 has no CRA label
    half = 1 / math.sqrt(2)
    expected = torch.full((2, 2), half)
    torch.testing.assert_close(method.memories[memory_key("deep", SHARED)].features, expected)
    # row 5 has a CRA label but no own DBSCAN label: in the memory init, not in training
    sampler = method.sampler(method.labelset, 5, 0, 1)
    drawn = np.concatenate([sampler.batch(5, it)[0] for it in range(5)])
    assert set(drawn.tolist()) <= {0, 2, 3}


def test_shared_centroids_ignores_unlabelled_rows():
    out = shared_centroids(torch.tensor([[2.0, 0.0], [9.0, 9.0]]), torch.tensor([1, -1]),
                           torch.tensor([[0.0, 3.0]]), torch.tensor([0]), 2)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_epoch0_momentum_warmup():
    method = make_method()
    method.on_features(features(0), DEVICE)
    method.on_labels(labelset(0, [0, 0, 1, 0, 1, 1, 0, 1, 1]), DEVICE)
    assert method.memories[memory_key("deep", VISIBLE)].momentum == pytest.approx(0.9)
    method.on_labels(labelset(1, [0, 0, 1, 0, 1, 1, 0, 1, 1]), DEVICE)
    assert method.memories[memory_key("deep", VISIBLE)].momentum == pytest.approx(0.1)


def test_rejects_unknown_params_and_single_head_models():
    with pytest.raises(UserError, match="method_params.ratio: not a setting of method sdcl; valid: neighbour_ratio"):
        make_method("method_params.ratio=0.8")
    config = build_config(method="sdcl")
    with pytest.raises(UserError, match="model.arch"):
        get_method("sdcl")(config, ("global",), MODALITY)
