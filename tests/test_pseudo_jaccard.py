"""Sparse k-reciprocal Jaccard distance against the dense loop reference (tests/jaccard_reference.py)."""

import numpy as np
import pytest

from jaccard_reference import dense_jaccard, reciprocal
from raytrain_vireid.pseudo import jaccard as jaccard_module
from raytrain_vireid.pseudo.jaccard import expanded_pairs, jaccard_distance, reciprocal_neighbours
from raytrain_vireid.pseudo.knn import knn_search, l2_normalize


def blobs(n, dim=24, clusters=15, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return l2_normalize(centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim)))


def test_reciprocal_rule_hand_built():
    rank = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]])
    # k=1 looks at 2 columns: 0<->1 are mutual; 2 lists 1 but 1 does not list 2; 3 lists 2, not back.
    np.testing.assert_array_equal(reciprocal_neighbours(rank, 1), [[0, 1], [1, 0], [2, -1], [3, -1]])
    # k=2 (all 3 columns): 2 is now in the rows of 0 and 1; 3 is in nobody's row.
    np.testing.assert_array_equal(reciprocal_neighbours(rank, 2)[2], [2, 1, 0])
    np.testing.assert_array_equal(reciprocal_neighbours(rank, 2)[3], [3, -1, -1])


@pytest.mark.parametrize("k", [3, 7, 30])
def test_reciprocal_sets_and_expansion_match_reference_loops(k):
    x = blobs(200, seed=k)
    rank = knn_search(x, 12)[1]
    recip = reciprocal_neighbours(rank, k)
    for i in range(200):
        np.testing.assert_array_equal(recip[i][recip[i] >= 0], reciprocal(rank, i, k))
    rows, cols = expanded_pairs(rank, 12)
    for i in range(0, 200, 7):
        own = reciprocal(rank, i, 12)
        expected = own
        for c in own:
            cand = reciprocal(rank, c, 6)
            if len(np.intersect1d(cand, own)) > 2 / 3 * len(cand):
                expected = np.append(expected, cand)
        np.testing.assert_array_equal(cols[rows == i], np.unique(expected))


@pytest.mark.parametrize(
    "n, k1, k2, noise", [(300, 20, 6, 0.5), (500, 15, 1, 0.7), (400, 15, 3, 0.4), (800, 30, 6, 0.8)]
)
def test_equals_dense_reference(n, k1, k2, noise):
    x = blobs(n, noise=noise, seed=n)
    knn = knn_search(x, k1)
    expected = dense_jaccard(x, knn[1], k1, k2)
    got = jaccard_distance(x, k1, k2, knn=knn, dense=True)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # Same support: pairs with no overlap are exactly 1 in both.
    np.testing.assert_array_equal(got == 1, expected == 1)


def test_sparse_output_symmetric_diagonal_explicit_and_blocking_invariant(monkeypatch):
    x = blobs(300, seed=3)
    sparse = jaccard_distance(x, 20, 6)
    assert sparse.format == "csr" and sparse.dtype == np.float32
    assert abs(sparse - sparse.T).max() == 0
    rows = np.repeat(np.arange(300), np.diff(sparse.indptr))
    assert ((rows == sparse.indices).sum()) == 300  # every diagonal entry stored exactly once
    assert sparse.has_sorted_indices
    monkeypatch.setattr(jaccard_module, "_PAIR_BUDGET", 500)  # many small blocks everywhere
    blocked = jaccard_distance(x, 20, 6)
    np.testing.assert_array_equal(blocked.indptr, sparse.indptr)
    np.testing.assert_array_equal(blocked.indices, sparse.indices)
    np.testing.assert_allclose(blocked.data, sparse.data, atol=1e-6)


def test_duplicates_keep_explicit_zeros_and_far_groups_are_exactly_one():
    rng = np.random.default_rng(5)
    base = l2_normalize(rng.normal(size=(10, 8)))
    x = np.concatenate([base, base, -base])  # rows i and i+10 identical; -base is far from both
    x[20:, 0] += 5.0
    x = l2_normalize(x)
    d = jaccard_distance(x, 6, 1)
    dense = jaccard_distance(x, 6, 1, dense=True)
    rows = np.repeat(np.arange(30), np.diff(d.indptr))
    assert (rows == d.indices).sum() == 30 and np.all(d.diagonal() <= 1e-6)
    assert (d.data == 0).sum() >= 10  # explicit zeros are stored, not dropped
    np.testing.assert_array_equal(d[np.arange(10), np.arange(10) + 10].A1 <= 1e-6, True)
    assert np.all(dense[:20, 20:] == 1.0)
    assert d[:20, 20:].nnz == 0


def test_cutoff_keeps_only_close_pairs_and_the_diagonal():
    x = blobs(300, seed=4)
    full = jaccard_distance(x, 20, 6)
    cut = jaccard_distance(x, 20, 6, cutoff=0.5)
    rows = np.repeat(np.arange(300), np.diff(full.indptr))
    keep = (full.data <= 0.5) | (rows == full.indices)
    np.testing.assert_array_equal(cut.indices, full.indices[keep])
    np.testing.assert_array_equal(cut.data, full.data[keep])


def test_point_with_empty_reciprocal_set_matches_reference():
    x = blobs(4, dim=3, clusters=2, seed=6)
    rank = np.array([[1, 2], [1, 2], [2, 1], [3, 2]])  # 0 lists neither itself nor anyone who lists it
    for k2 in (1, 2):
        got = jaccard_distance(x, 2, k2, knn=(None, rank), dense=True)
        np.testing.assert_allclose(got, dense_jaccard(x, rank, 2, k2), atol=1e-6)
    assert jaccard_distance(x, 2, 1, knn=(None, rank), dense=True)[0, 0] == 1.0  # no V row: d_00 = 1


def test_bad_k_rejected():
    with pytest.raises(ValueError, match="k1 >= 1"):
        jaccard_distance(blobs(20), k1=0)
