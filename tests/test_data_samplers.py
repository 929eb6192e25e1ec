import numpy as np
import pytest

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.data.samplers import CrossPairedSampler, PseudoIdentitySampler


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    modality = np.repeat([VISIBLE, INFRARED], [60, 40])
    labels = np.concatenate([rng.integers(-1, 10, 60), rng.integers(-1, 6, 40)])
    return labels, modality


def test_pxk_batches_group_k_rows_of_one_label_and_skip_outliers():
    labels, modality = _toy()
    sampler = PseudoIdentitySampler(labels, modality, ids_per_modality=4, instances=3, seed=1)
    batch = sampler.batch(epoch=0, iteration=0)
    for m, rows in batch.items():
        assert len(rows) == 12
        assert np.all(modality[rows] == m)
        groups = labels[rows].reshape(4, 3)
        assert np.all(groups >= 0)
        assert np.all(groups == groups[:, :1])  # K consecutive rows share a label
        assert len(np.unique(groups[:, 0])) == 4  # P distinct identities


def test_ranks_share_the_global_batch_without_overlap_and_reseed_per_epoch():
    labels, modality = _toy()
    full = PseudoIdentitySampler(labels, modality, 4, 3, rank=0, world_size=1, seed=7).batch(2, 5)
    shards = [PseudoIdentitySampler(labels, modality, 4, 3, rank=r, world_size=2, seed=7).batch(2, 5) for r in (0, 1)]
    for m in (VISIBLE, INFRARED):
        np.testing.assert_array_equal(np.concatenate([s[m] for s in shards]), full[m])
        assert not set(labels[shards[0][m]]) & set(labels[shards[1][m]])
    other_epoch = PseudoIdentitySampler(labels, modality, 4, 3, seed=7).batch(3, 5)
    assert any(not np.array_equal(other_epoch[m], full[m]) for m in (VISIBLE, INFRARED))


def test_small_clusters_are_topped_up_with_replacement():
    modality = np.array([VISIBLE] * 2 + [INFRARED] * 2)
    labels = np.array([0, 0, 0, 0])
    batch = PseudoIdentitySampler(labels, modality, 1, 5).batch(0, 0)
    assert set(batch[VISIBLE]) == {0, 1} and len(batch[VISIBLE]) == 5


def test_fewer_pseudo_identities_than_ranks_still_give_every_rank_rows():
    # Collapsed labels (a HIL run at epoch 11): one visible pseudo-identity, two ranks.
    modality = np.repeat([VISIBLE, INFRARED], [10, 10])
    labels = np.concatenate([[-1] * 7 + [3] * 3, np.arange(10) % 5])
    shards = [PseudoIdentitySampler(labels, modality, 8, 4, rank=r, world_size=2, seed=2).batch(0, 0) for r in (0, 1)]
    for batch in shards:
        assert len(batch[VISIBLE]) == 4 and set(labels[batch[VISIBLE]]) == {3}
    # Infrared has 5 identities: the usual distinct draw, 3 on rank 0 and 2 on rank 1.
    assert [len(set(labels[b[INFRARED]])) for b in shards] == [3, 2]
    assert not set(labels[shards[0][INFRARED]]) & set(labels[shards[1][INFRARED]])
    cross = np.concatenate([[-1] * 7 + [0] * 3, [3] * 2 + [-1] * 8])
    for r in (0, 1):
        batch = CrossPairedSampler(labels, cross, modality, 8, 2, rank=r, world_size=2, seed=2).batch(0, 0)
        assert len(batch[VISIBLE]) == len(batch[INFRARED]) == 4  # one visible- and one infrared-anchored pair


def test_empty_modality_is_rejected():
    with pytest.raises(ValueError, match="modality 1"):
        PseudoIdentitySampler(np.array([0, 1, -1]), np.array([0, 0, 1]), 2, 2)


def test_cross_paired_positions_share_a_pseudo_identity():
    rng = np.random.default_rng(3)
    modality = np.repeat([VISIBLE, INFRARED], [50, 50])
    labels = np.concatenate([rng.integers(0, 5, 50), rng.integers(0, 4, 50)])
    cross = np.concatenate([rng.integers(-1, 4, 50), rng.integers(-1, 5, 50)])  # label in the other space
    sampler = CrossPairedSampler(labels, cross, modality, ids_per_modality=4, instances=2, seed=0)
    batch = sampler.batch(0, 0)
    vis, ir = batch[VISIBLE], batch[INFRARED]
    assert len(vis) == len(ir) == 8
    assert np.all(modality[vis] == VISIBLE) and np.all(modality[ir] == INFRARED)
    # First half visible-anchored (visible label space), second half infrared-anchored.
    np.testing.assert_array_equal(labels[vis[:4]], cross[ir[:4]])
    np.testing.assert_array_equal(labels[ir[4:]], cross[vis[4:]])
