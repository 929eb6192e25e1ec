"""Label quality metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from raytrain_vireid.pseudo.quality import association_accuracy, label_quality, majority_pid


def test_label_quality_by_hand():
    labels = np.array([0, 0, 0, 1, 1, -1])
    true = np.array([5, 5, 6, 6, 6, 6])
    q = label_quality(labels, true)
    # pairs: together 1 + 1 = 2; predicted C(3,2)+C(2,2) = 4; true C(2,2)+C(4,2) = 7 (the outlier is a singleton)
    assert q["pair_precision"] == pytest.approx(0.5)
    assert q["pair_recall"] == pytest.approx(2 / 7)
    assert q["pair_f"] == pytest.approx(4 / 11)
    assert q["n_clusters"] == 2 and q["outlier_rate"] == pytest.approx(1 / 6)
    singletons = np.array([0, 0, 0, 1, 1, 2])
    assert q["ari"] == pytest.approx(adjusted_rand_score(true, singletons))
    assert q["nmi"] == pytest.approx(normalized_mutual_info_score(true, singletons))


def test_perfect_labels_score_one():
    true = np.array([3, 3, 9, 9, 9])
    q = label_quality(np.array([1, 1, 0, 0, 0]), true)
    assert q["ari"] == pytest.approx(1.0) and q["pair_f"] == pytest.approx(1.0)


def test_majority_pid_and_association_accuracy_by_hand():
    np.testing.assert_array_equal(majority_pid(np.array([1, 1, 1, -1, 2]), np.array([4, 7, 7, 4, 2])), [-1, 7, 2])
    labels_v, true_v = np.array([0, 0, 1, 1]), np.array([10, 10, 20, 20])
    labels_r, true_r = np.array([0, 0, 1]), np.array([20, 20, 10])
    out = association_accuracy(labels_v, np.array([1, 0, 0, -1]), labels_r, true_v, true_r,
                               cross_r=np.array([1, 1, 0]))
    # IR cluster majorities: 0 -> 20, 1 -> 10. v0 right, v1 wrong, v2 right, v3 has none.
    assert out["assoc_acc_v2r"] == pytest.approx(2 / 3) and out["assoc_cov_v2r"] == pytest.approx(3 / 4)
    # RGB cluster majorities: 0 -> 10, 1 -> 20. r0 (20) -> 1 right, r1 right, r2 (10) -> 0 right.
    assert out["assoc_acc_r2v"] == pytest.approx(1.0) and out["assoc_cov_r2v"] == pytest.approx(1.0)


def test_neighbour_precision_by_hand():
    from raytrain_vireid.pseudo.quality import neighbour_precision

    neighbours = np.array([[1, 2], [0, 3]])  # query 0 (pid 7) sees database 1 (7) and 2 (8); query 1 (pid 8) sees 0, 3
    database = np.array([7, 7, 8, 8])
    assert neighbour_precision(neighbours, np.array([7, 8]), database) == pytest.approx(2 / 4)
    assert neighbour_precision(np.zeros((0, 5), dtype=np.int64), np.array([], dtype=np.int64), database) == 0.0
