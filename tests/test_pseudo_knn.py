"""Exact kNN: faiss and the blocked fallback against a brute-force NumPy reference."""

import numpy as np
import pytest

from raytrain_vireid.pseudo import knn as knn_module
from raytrain_vireid.pseudo.knn import knn_search, l2_normalize


def brute_force(queries, database, k):
    dist = ((queries[:, None, :].astype(np.float64) - database[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


@pytest.mark.parametrize("use_faiss", [True, False])
def test_knn_matches_brute_force(use_faiss, monkeypatch):
    monkeypatch.setattr(knn_module, "_BLOCK_ELEMENTS", 1000)  # several query blocks in the fallback
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.normal(size=(120, 16)))
    dist, idx = knn_search(x, 7, use_faiss=use_faiss)
    ref_dist, ref_idx = brute_force(x, x, 7)
    assert dist.shape == (120, 7) and dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)
    np.testing.assert_array_equal(idx[:, 0], np.arange(120))  # self first


def test_knn_against_other_database_and_k_clipped():
    rng = np.random.default_rng(1)
    q, db = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    dist, idx = knn_search(q, 10, database=db, use_faiss=False)
    ref_dist, ref_idx = brute_force(q, db, 3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, atol=1e-5)


def test_l2_normalize_unit_rows_and_zero_row_kept():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
