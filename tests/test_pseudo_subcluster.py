"""Batched per-cluster k-means and the sub-centre blend rule."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from raytrain_vireid.pseudo.backend import get_backend
from raytrain_vireid.pseudo.subcluster import batched_kmeans, subcluster_centres

CPU = get_backend("cpu")


def toy_clusters(seed=0, clusters=6, k=3):
    """Each cluster = k tight, well separated groups of 5..11 points; returns x, labels, true sub-group."""
    rng = np.random.default_rng(seed)
    xs, labels, groups = [], [], []
    for c in range(clusters):
        centres = rng.normal(size=(k, 8)) * 5
        for g in range(k):
            m = int(rng.integers(5, 12))
            xs.append(centres[g] + 0.1 * rng.normal(size=(m, 8)))
            labels += [c] * m
            groups += [g] * m
    return np.concatenate(xs).astype(np.float32), np.array(labels), np.array(groups)


@pytest.mark.parametrize("seed", range(3))
def test_batched_kmeans_finds_the_same_partition_as_sklearn(seed):
    x, labels, groups = toy_clusters(seed)
    assign = batched_kmeans(x, labels, 6, 3, backend=CPU, seed=seed)
    for c in range(6):
        mine = assign[labels == c]
        sk = KMeans(3, n_init=10, random_state=0).fit_predict(x[labels == c])
        assert adjusted_rand_score(sk, mine) == 1.0
        assert adjusted_rand_score(groups[labels == c], mine) == 1.0


def test_blend_rule_by_hand():
    # Cluster 0: two tight pairs -> k=2 sub-clusters {0,1} and {2,3}; cluster 1 has 2 <= k members.
    x = np.array([[0, 0], [0, 2], [10, 0], [10, 2], [4, 4], [6, 6], [100, 100]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1, -1])
    out = subcluster_centres(x, labels, 2, blend=0.9)
    assert out.shape == (2, 3, 2) and out.dtype == np.float32
    mean0 = np.array([5.0, 1.0])
    np.testing.assert_allclose(out[0, 0], mean0)
    subs = sorted(map(tuple, out[0, 1:]))
    np.testing.assert_allclose(subs, [0.9 * mean0 + 0.1 * np.array([0.0, 1.0]), 0.9 * mean0 + 0.1 * np.array([10.0, 1.0])], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.tile([5.0, 5.0], (3, 1)))  # too small: the mean replicated


def test_duplicate_points_leave_no_empty_centre_undefined():
    x = np.zeros((6, 3), dtype=np.float32)  # one cluster of identical points: degenerate
    out = subcluster_centres(x, np.zeros(6, dtype=np.int64), 3)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, 0.0)
