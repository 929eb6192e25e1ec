"""DBSCAN on the sparse graph (scikit-learn path and the xp density rule) and centroids."""

from itertools import combinations

import numpy as np
import pytest
import scipy.sparse
from sklearn.cluster import DBSCAN

from raytrain_vireid.pseudo.backend import get_backend
from raytrain_vireid.pseudo.cluster import centroids, dbscan, sparse_dbscan
from raytrain_vireid.pseudo.jaccard import jaccard_distance
from raytrain_vireid.pseudo.knn import l2_normalize

CPU = get_backend("cpu")


def sklearn_dense(dense, eps, min_samples):
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dense)


def random_graph(n, seed):
    """Symmetric random distances with many ties at eps and explicit zeros; absent entries = 1."""
    rng = np.random.default_rng(seed)
    dense = np.round(rng.random((n, n)), 1).astype(np.float32)
    dense = np.minimum(dense, dense.T)
    np.fill_diagonal(dense, 0.0)
    dense[dense > 0.35] = 1.0
    rows, cols = np.nonzero(dense < 1)
    return dense, scipy.sparse.csr_matrix((dense[rows, cols], (rows, cols)), shape=(n, n))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eps, min_samples", [(0.2, 4), (0.3, 5), (0.05, 2)])
def test_both_paths_equal_sklearn_dense_labels_exactly(seed, eps, min_samples):
    dense, graph = random_graph(60, seed)
    expected = sklearn_dense(dense, eps, min_samples)
    np.testing.assert_array_equal(dbscan(graph, eps, min_samples), expected)
    np.testing.assert_array_equal(sparse_dbscan(graph, eps, min_samples, backend=CPU), expected)
    np.testing.assert_array_equal(dbscan(dense, eps, min_samples), expected)


def test_on_jaccard_graph_with_and_without_cutoff():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    x = l2_normalize(centres[rng.integers(0, 20, 400)] + 0.8 * rng.normal(size=(400, 32)))
    dense = jaccard_distance(x, 20, 6, dense=True)
    for eps in (0.3, 0.6):
        expected = sklearn_dense(dense, eps, 4)
        assert expected.max() >= 5  # a meaningful clustering
        np.testing.assert_array_equal(dbscan(jaccard_distance(x, 20, 6), eps), expected)
        np.testing.assert_array_equal(dbscan(jaccard_distance(x, 20, 6, cutoff=eps), eps), expected)
        got = sparse_dbscan(jaccard_distance(x, 20, 6, cutoff=eps), eps, 4, backend=CPU)
        np.testing.assert_array_equal(got, expected)


def hand_graph():
    """Cores 0-3 (cluster A), cores 5-8 (cluster B), border 4 touching both, 9 noise; explicit zeros."""
    edges = {(0, 1): 0.0, (5, 6): 0.0, (3, 4): 0.2, (4, 5): 0.2}
    for group in ((0, 1, 2, 3), (5, 6, 7, 8)):
        for pair in combinations(group, 2):
            edges.setdefault(pair, 0.1)
    rows = [i for i, _ in edges] + [j for _, j in edges] + list(range(10))
    cols = [j for _, j in edges] + [i for i, _ in edges] + list(range(10))
    data = list(edges.values()) * 2 + [0.0] * 10
    return scipy.sparse.csr_matrix((np.array(data, np.float32), (rows, cols)), shape=(10, 10))


def test_hand_built_border_goes_to_lowest_cluster_and_zeros_count():
    graph = hand_graph()
    assert graph.nnz == 2 * 14 + 10  # explicit zeros kept by the constructor
    expected = [0, 0, 0, 0, 0, 1, 1, 1, 1, -1]
    np.testing.assert_array_equal(dbscan(graph, eps=0.2, min_samples=4), expected)
    np.testing.assert_array_equal(sparse_dbscan(graph, 0.2, 4, backend=CPU), expected)
    # Explicit zero distances are neighbours: with eps=0.05 only 0-1 and 5-6 are pairs.
    np.testing.assert_array_equal(dbscan(graph, eps=0.05, min_samples=2), [0, 0, -1, -1, -1, 1, 1, -1, -1, -1])


def test_singleton_outliers_get_new_labels_after_clusters():
    labels = dbscan(hand_graph(), eps=0.05, min_samples=2, outliers="singleton")
    np.testing.assert_array_equal(labels, [0, 0, 2, 3, 4, 1, 1, 5, 6, 7])
    with pytest.raises(ValueError, match="outliers must be one of"):
        dbscan(hand_graph(), outliers="keep")


def test_centroids_are_normalised_means_ignoring_noise():
    features = np.array([[1, 0], [3, 0], [0, 2], [5, 5]], dtype=np.float32)
    got = centroids(features, np.array([0, 0, 2, -1]))
    np.testing.assert_allclose(got, [[1, 0], [0, 0], [0, 1]])
    assert centroids(features, np.array([0, 0, 0, 0]), num_clusters=2).shape == (2, 2)
