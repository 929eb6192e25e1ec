"""MemoryActor as a plain class (no Ray): shards in, per-epoch cached LabelSets, state round trip, supervised labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.memory.actor import MemoryActor, supervised_labelset
from raytrain_vireid.pseudo.engine import RelabelPlan


def blobs(ids: int = 6, per_id: int = 8, dim: int = 16, seed: int = 0):
    """Well separated identities, half the images of each visible, half infrared (modality offset)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim)) * 4
    pids = np.repeat(np.arange(ids), per_id)
    modality = np.tile(np.array([VISIBLE, INFRARED] * (per_id // 2), dtype=np.int8), ids)
    feats = centres[pids] + rng.normal(scale=0.3, size=(len(pids), dim)) + modality[:, None] * 0.5
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats.astype(np.float32), modality, pids


def plan(**kw) -> RelabelPlan:
    return RelabelPlan(**{**dict(cluster_head="global", k1=6, k2=2, eps=0.6, min_samples=2, association=None,
                                 association_params={}, backend="cpu"), **kw})


def filled_actor(**kw):
    feats, modality, pids = blobs()
    actor = MemoryActor(modality, {"global": feats.shape[1]}, true_pids=pids, **kw)
    half = len(pids) // 2
    actor.put_features(np.arange(half), {"global": feats[:half]})
    actor.put_features(np.arange(half, len(pids)), {"global": feats[half:]})
    return actor, feats, modality, pids


def test_put_features_copies_shards_into_place_as_float16():
    actor, feats, _, _ = filled_actor()
    stored = actor.get_features("global")
    assert stored.dtype == np.float16
    np.testing.assert_allclose(stored, feats, atol=1e-3)
    view = np.ones((2, feats.shape[1]), np.float32)
    view.setflags(write=False)  # what a zero-copy object-store read looks like
    actor.put_features(np.array([0, 1]), {"global": view})
    assert np.all(actor.get_features("global")[:2] == 1) and actor.get_features("global").flags.writeable


def test_relabel_refuses_missing_rows():
    feats, modality, pids = blobs()
    actor = MemoryActor(modality, {"global": feats.shape[1]})
    actor.put_features(np.arange(5), {"global": feats[:5]})
    with pytest.raises(RuntimeError, match="have no features"):
        actor.relabel(0, plan())


def test_relabel_is_cached_per_epoch():
    actor, feats, modality, pids = filled_actor()
    first = actor.relabel(3, plan())
    assert first.num_clusters[VISIBLE] == 6 and first.num_clusters[INFRARED] == 6
    actor.put_features(np.arange(len(pids)), {"global": np.roll(feats, 1, axis=0)})
    assert actor.relabel(3, plan(eps=0.01)) is first  # a restarted worker group gets the same labels
    assert actor.labels(3) is first
    with pytest.raises(KeyError, match="epoch 4"):
        actor.labels(4)


def test_state_round_trip_and_restore_only_when_empty():
    actor, feats, modality, pids = filled_actor()
    labelset = actor.relabel(1, plan())
    state = actor.state()
    fresh = MemoryActor(modality, {"global": feats.shape[1]}, true_pids=pids)
    assert fresh.restore(state) is True
    np.testing.assert_array_equal(fresh.get_features("global"), actor.get_features("global"))
    np.testing.assert_array_equal(fresh.labels(1).labels, labelset.labels)
    assert actor.restore(state) is False  # a live actor keeps its newer state


def test_supervised_labels_follow_true_identities():
    modality = np.array([0, 0, 1, 1, 0, 1], dtype=np.int8)
    pids = np.array([7, 3, 3, 9, 7, 7])
    feats = {"global": np.eye(6, dtype=np.float32)}
    labelset = supervised_labelset(feats, modality, pids, epoch=2)
    # visible ids (3, 7) -> 0, 1; infrared ids (3, 7, 9) -> 0, 1, 2
    np.testing.assert_array_equal(labelset.labels, [1, 0, 0, 2, 1, 1])
    # cross: visible rows in the infrared space, infrared rows in the visible space (9 has no visible image)
    np.testing.assert_array_equal(labelset.cross, [1, 0, 0, -1, 1, 1])
    assert labelset.num_clusters == {VISIBLE: 2, INFRARED: 3}
    np.testing.assert_allclose(labelset.centroids[(VISIBLE, "global")][1], np.array([1, 0, 0, 0, 1, 0]) / np.sqrt(2),
                               atol=1e-6)


def test_supervised_actor_needs_true_pids():
    with pytest.raises(ValueError, match="true pids"):
        MemoryActor(np.zeros(3, np.int8), {"global": 2}, supervised=True)


def test_oracle_cross_points_at_the_majority_cluster_of_the_own_identity():
    from raytrain_vireid.memory.actor import oracle_cross

    modality = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=np.int8)
    pids = np.array([5, 5, 6, 8, 6, 6, 5, 6, 5])
    # visible clusters: 0 = {5, 5}, 1 = {6}, row 3 (pid 8) an outlier; infrared clusters: 0 = {6, 6},
    # 1 = {5}, 2 = {6} (a smaller second cluster of 6), row 8 (pid 5) an outlier
    labels = np.array([0, 0, 1, -1, 0, 0, 1, 2, -1])
    cross = oracle_cross(labels, modality, pids)
    np.testing.assert_array_equal(cross, [1, 1, 0, -1, 1, 1, 0, 1, -1])


def test_oracle_association_replaces_only_the_cross_labels():
    actor, _, modality, pids = filled_actor(oracle_association=True)
    plain, _, _, _ = filled_actor()
    stage2 = plan(association="hungarian")
    oracle, reference = actor.relabel(0, stage2), plain.relabel(0, stage2)
    np.testing.assert_array_equal(oracle.labels, reference.labels)
    assert oracle.metrics["assoc_acc_v2r"] == 1.0 and oracle.metrics["assoc_acc_r2v"] == 1.0
    assert actor.relabel(1, plan()).cross is None  # stage 1 has no cross labels to replace
    with pytest.raises(ValueError, match="true pids"):
        MemoryActor(modality, {"global": 2}, oracle_association=True)


def test_oracle_clusters_label_by_identity_and_keep_the_stage():
    feats, modality, pids = blobs()
    pids = np.random.default_rng(0).permutation(pids)  # identities unrelated to the feature blobs
    actor = MemoryActor(modality, {"global": feats.shape[1]}, true_pids=pids, oracle_clusters=True)
    actor.put_features(np.arange(len(pids)), {"global": feats})
    stage1, stage2 = actor.relabel(0, plan()), actor.relabel(1, plan(association="hungarian"))
    for labelset in (stage1, stage2):
        for m in (VISIBLE, INFRARED):
            rows = modality == m
            # one label per identity, every row labelled: the partition of the modality's rows by pid
            assert labelset.num_clusters[m] == len(np.unique(pids[rows]))
            assert adjusted_rand_score(pids[rows], labelset.labels[rows]) == 1.0
    assert stage1.cross is None  # stage 1: no cross-modality labels
    v, r = np.flatnonzero(modality == VISIBLE), np.flatnonzero(modality == INFRARED)
    # stage 2: a visible row's cross label is the infrared label of its own identity
    by_pid = dict(zip(pids[r], stage2.labels[r]))
    np.testing.assert_array_equal(stage2.cross[v], [by_pid.get(p, -1) for p in pids[v]])
    with pytest.raises(ValueError, match="true pids"):
        MemoryActor(modality, {"global": 2}, oracle_clusters=True)
