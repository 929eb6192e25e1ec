"""Cross-modality associators, Sinkhorn and the sparse graphs (hand-built inputs, dense references)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from raytrain_vireid.errors import UserError
from raytrain_vireid.pseudo.associate import associate
from raytrain_vireid.pseudo.associate.brst import brst
from raytrain_vireid.pseudo.associate.cma import cma, cooccurrence, greedy_matching
from raytrain_vireid.pseudo.associate.cmfp import cmfp_features, cmfp_sinkhorn
from raytrain_vireid.pseudo.associate.cra import majority_vote, ranking_vote
from raytrain_vireid.pseudo.associate.gur import gur
from raytrain_vireid.pseudo.associate.hungarian import hungarian
from raytrain_vireid.pseudo.associate.propagation import heterogeneous_plan, propagation, transfer
from raytrain_vireid.pseudo.associate.votes import knn_votes
from raytrain_vireid.pseudo.sinkhorn import sinkhorn_log_scalings, sparse_sinkhorn_plan, transport_argmax


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(centres, per, noise, seed):
    """Rows around each centre (unit), labels = centre index."""
    rng = np.random.default_rng(seed)
    centres = np.asarray(centres, dtype=np.float32)
    x = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((len(centres) * per, centres.shape[1]))
    return unit(x), np.repeat(np.arange(len(centres)), per)


def naive_sinkhorn(cost, lam, max_iter=500, tol=0.1):
    """The MULT solver written plainly: K = exp(-lam·cost), error every 10th step."""
    k = np.exp(-lam * cost)
    n, c = k.shape
    beta = np.ones(c) / c
    alpha = None
    err, step = np.inf, 0
    while err > tol and step < max_iter:
        alpha = (1 / n) / (k @ beta)
        new_beta = (1 / c) / (alpha @ k)
        if step % 10 == 0:
            err = np.nansum(np.abs(beta / new_beta - 1))
        beta = new_beta
        step += 1
    return alpha[:, None] * k * beta[None, :]


def sq(x, y):
    return ((np.asarray(x, np.float64)[:, None, :] - np.asarray(y, np.float64)[None, :, :]) ** 2).sum(-1)


# ---- Sinkhorn -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("force_log_sum_exp", [False, True])
def test_log_domain_sinkhorn_matches_naive_plan_and_labels(monkeypatch, force_log_sum_exp):
    if force_log_sum_exp:  # take the log-sum-exp fallback even where the shifted kernel is safe
        monkeypatch.setattr("raytrain_vireid.pseudo.sinkhorn._SAFE_KERNEL", np.inf)
    rng = np.random.default_rng(0)
    cost = sq(unit(rng.standard_normal((40, 8))), unit(rng.standard_normal((6, 8))))
    for lam, tol in ((5.0, 0.1), (25.0, 0.1), (25.0, 1e-9)):
        plan = naive_sinkhorn(cost, lam, tol=tol)
        log_alpha, log_beta = sinkhorn_log_scalings(cost, lam, tol=tol)
        ours = np.exp(log_alpha[:, None] - lam * cost + log_beta[None, :])
        np.testing.assert_allclose(ours, plan, rtol=1e-9)
        np.testing.assert_array_equal(transport_argmax(cost, lam, tol=tol), plan.argmax(1))


def test_sinkhorn_converged_plan_has_uniform_marginals_and_survives_underflow():
    rng = np.random.default_rng(1)
    cost = sq(unit(rng.standard_normal((30, 4))), unit(rng.standard_normal((5, 4))))
    log_alpha, log_beta = sinkhorn_log_scalings(cost, 25.0, tol=1e-12, max_iter=5000)
    plan = np.exp(log_alpha[:, None] - 25.0 * cost + log_beta[None, :])
    np.testing.assert_allclose(plan.sum(1), 1 / 30, rtol=1e-6)
    np.testing.assert_allclose(plan.sum(0), 1 / 5, rtol=1e-6)
    # λ = 2000: exp(-λ·cost) underflows to 0 in float64 everywhere; the log domain still answers.
    with np.errstate(all="ignore"):
        assert np.isnan(naive_sinkhorn(cost + 1.0, 2000.0)).any()
    labels = transport_argmax(cost + 1.0, 2000.0)
    assert labels.min() >= 0 and labels.max() < 5


def test_sparse_sinkhorn_on_full_support_equals_dense():
    from scipy import sparse

    rng = np.random.default_rng(2)
    cost = sq(unit(rng.standard_normal((12, 5))), unit(rng.standard_normal((9, 5))))
    log_alpha, log_beta = sinkhorn_log_scalings(cost, 25.0)
    dense = np.exp(log_alpha[:, None] - 25.0 * cost + log_beta[None, :])
    np.testing.assert_allclose(sparse_sinkhorn_plan(sparse.csr_matrix(cost), 25.0).toarray(), dense, rtol=1e-9)


# ---- hungarian / sinkhorn --------------------------------------------------------------------------------
def test_hungarian_matches_clusters_one_to_one_and_leaves_surplus_unmatched():
    axes = np.eye(4, dtype=np.float32)
    fv, lv = blobs(axes[:3], 4, 0.01, 0)  # visible clusters on axes 0, 1, 2
    fr, lr = blobs(axes[[2, 0]], 4, 0.01, 1)  # IR cluster 0 ~ axis 2, IR cluster 1 ~ axis 0
    lv[0] = -1
    out = hungarian(fv, lv, fr, lr)
    expected_v = np.array([-1, 1, 1, 1, -1, -1, -1, -1, 0, 0, 0, 0])
    np.testing.assert_array_equal(out.cross_v, expected_v)
    np.testing.assert_array_equal(out.cross_r, np.repeat([2, 0], 4))
    np.testing.assert_array_equal(out.info["matches"], [[0, 1], [2, 0]])


def test_knn_votes_match_the_clusters_whose_members_are_neighbours():
    """Visible cluster 0's members (but one stray) sit by infrared cluster 1's, visible 1's by infrared 2's; infrared 0
    gets no vote and stays unmatched. On random data a plain loop of votes, size shares and Hungarian agrees."""
    fv = unit([[1, 0.1, 0], [1, 0.12, 0], [1, 0.08, 0], [-1, 0, 3],  # visible cluster 0: three near axis 0, one stray
               [0, 1, 0], [0, 1, 0.1], [0, 1, -0.1]])  # visible cluster 1, near axis 1
    lv = np.array([0, 0, 0, 0, 1, 1, 1])
    fr = unit([[0.2, 0.0, 1], [0.3, 0.1, 1],  # infrared cluster 0: off to the side
               [1, 0.1, 0.01], [1, 0.11, -0.01], [0.1, 1, 0], [0.1, 1, 0.05]])  # 1: by visible 0's members, 2: by 1's
    lr = np.array([0, 0, 1, 1, 2, 2])
    out = knn_votes(fv, lv, fr, lr, k=1)
    np.testing.assert_array_equal(out.info["matches"], [[0, 1], [1, 2]])
    np.testing.assert_array_equal(out.cross_v, [1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(out.cross_r, [-1, -1, 0, 0, 1, 1])  # infrared 0 got no vote: unmatched

    rng = np.random.default_rng(7)
    fv, fr = unit(rng.standard_normal((40, 6))), unit(rng.standard_normal((30, 6)))
    lv, lr = rng.integers(-1, 5, 40), rng.integers(-1, 4, 30)
    votes = np.zeros((5, 4))
    for feats, labels, other, other_labels, forward in ((fv, lv, fr, lr, True), (fr, lr, fv, lv, False)):
        for i in np.nonzero(labels >= 0)[0]:
            candidates = np.nonzero(other_labels >= 0)[0]
            for j in candidates[np.argsort(-(other[candidates] @ feats[i]), kind="stable")[:3]]:
                a, b = (labels[i], other_labels[j]) if forward else (other_labels[j], labels[i])
                votes[a, b] += 1
    scores = votes / np.sqrt(np.outer(np.bincount(lv[lv >= 0]), np.bincount(lr[lr >= 0])))
    rows, cols = linear_sum_assignment(-scores)
    np.testing.assert_array_equal(knn_votes(fv, lv, fr, lr, k=3).info["matches"], np.stack([rows, cols], axis=1))


@pytest.mark.parametrize("name", ["sinkhorn", "hungarian", "cma", "brst", "knn_votes"])
def test_cluster_associators_recover_a_permutation(name):
    rng = np.random.default_rng(3)
    centres = unit(rng.standard_normal((5, 16)))
    perm = np.array([3, 0, 4, 1, 2])  # IR cluster j is visible identity perm[j]
    fv, lv = blobs(centres, 6, 0.05, 4)
    fr, lr = blobs(centres[perm] + 0.02, 6, 0.05, 5)
    fr = unit(fr)
    out = associate(name, fv, lv, fr, lr)
    np.testing.assert_array_equal(out.cross_v, np.argsort(perm)[lv])
    np.testing.assert_array_equal(out.cross_r, perm[lr])


def test_sinkhorn_gives_outliers_no_cross_label():
    fv, lv = blobs(np.eye(3), 3, 0.01, 0)
    lv[4] = -1
    out = associate("sinkhorn", fv, lv, fv, np.repeat(np.arange(3), 3), lam=25.0)
    assert out.cross_v[4] == -1 and (np.delete(out.cross_v, 4) == np.delete(lv, 4)).all()


# ---- CMFP -----------------------------------------------------------------------------------------------
def dense_cmfp(fv, fr, k):
    f = np.concatenate([fv, fr]).astype(np.float64)
    nv = fv.shape[0]
    sim = f @ f.T
    a = np.zeros_like(sim)
    for rows in (slice(0, nv), slice(nv, None)):
        for cols in (slice(0, nv), slice(nv, None)):
            block = sim[rows, cols]
            top = np.argsort(-block, axis=1, kind="stable")[:, :k]
            mask = np.zeros_like(block, dtype=bool)
            np.put_along_axis(mask, top, True, axis=1)
            block = np.where(mask, np.maximum(block, 0), 0)
            a[rows, cols] = block / block.sum(1, keepdims=True)
    fused = a @ f
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    return fused[:nv], fused[nv:]


def test_cmfp_features_equal_dense_reference():
    rng = np.random.default_rng(6)
    fv, fr = unit(rng.standard_normal((23, 6))), unit(rng.standard_normal((17, 6)))
    ours_v, ours_r = cmfp_features(fv, fr, 5)
    ref_v, ref_r = dense_cmfp(fv, fr, 5)
    np.testing.assert_allclose(ours_v, ref_v, atol=1e-5)
    np.testing.assert_allclose(ours_r, ref_r, atol=1e-5)


def test_cmfp_sinkhorn_reassigns_to_nearest_fused_centre():
    rng = np.random.default_rng(7)
    centres = unit(rng.standard_normal((3, 8)))
    fv, lv = blobs(centres, 8, 0.1, 8)
    fr, lr = blobs(centres, 8, 0.1, 9)
    lv_noisy = lv.copy()
    lv_noisy[0] = 1  # a wrong own label: CMFP re-assignment must fix it
    lv_noisy[5] = -1
    out = cmfp_sinkhorn(fv, lv_noisy, fr, lr, k=5)
    assert out.labels_v[0] == 0 and out.labels_v[5] == -1
    fused_v, _ = cmfp_features(fv, fr, 5)
    centres_v = np.stack([fused_v[(lv_noisy == c)].mean(0) for c in range(3)])
    expected = np.argmax(fused_v @ centres_v.T, axis=1)
    expected[5] = -1
    np.testing.assert_array_equal(out.labels_v, expected)
    np.testing.assert_array_equal(out.cross_v[out.labels_v >= 0], out.labels_v[out.labels_v >= 0])


# ---- propagation (MULT) ---------------------------------------------------------------------------------
def test_heterogeneous_plan_with_full_cross_k_equals_dense_sinkhorn():
    rng = np.random.default_rng(10)
    fv, fr = unit(rng.standard_normal((9, 5))), unit(rng.standard_normal((7, 5)))
    cost = sq(fv, fr)
    log_alpha, log_beta = sinkhorn_log_scalings(cost, 25.0)
    dense = np.exp(log_alpha[:, None] - 25.0 * cost + log_beta[None, :])
    np.testing.assert_allclose(heterogeneous_plan(fv, fr, 9, 25.0).toarray(), dense, rtol=1e-4, atol=1e-12)
    sparse_plan = heterogeneous_plan(fv, fr, 2, 25.0)
    assert sparse_plan.nnz < 9 * 7 and (sparse_plan.getnnz(axis=1) >= 2).all()


def row_stochastic(rng, n, m):
    a = rng.random((n, m))
    return a / a.sum(1, keepdims=True)


def test_transfer_converges_to_the_linear_fixed_point():
    from scipy import sparse

    rng = np.random.default_rng(11)
    n_own, n_other, c, alpha = 5, 4, 3, 0.2
    hom_own, hom_other = row_stochastic(rng, n_own, n_own), row_stochastic(rng, n_other, n_other)
    to_own, to_other = row_stochastic(rng, n_own, n_other), row_stochastic(rng, n_other, n_own)
    y_own, y_other = row_stochastic(rng, n_own, c), np.eye(c)[rng.integers(0, c, n_other)]
    own, other, steps = transfer(*(sparse.csr_matrix(m) for m in (hom_own, hom_other, to_own, to_other)),
                                 y_own, y_other, alpha, 1e-14, 500)
    # Fixed point of one sweep, solved directly: x = own, z = other.
    s_own, s_other = 0.5 * (hom_own + np.eye(n_own)), 0.5 * (hom_other + np.eye(n_other))
    # own = S_o[(1-α) T_o other + α y_o];  other = S_r[(1-α) T_r a + α y_r], a = (1-α) T_o other + α y_o
    a_of_other = lambda z: (1 - alpha) * to_own @ z + alpha * y_own  # noqa: E731
    lhs = np.eye(n_other) - (1 - alpha) ** 2 * s_other @ to_other @ to_own
    rhs = s_other @ ((1 - alpha) * alpha * to_other @ y_own + alpha * y_other)
    z = np.linalg.solve(lhs, rhs)
    np.testing.assert_allclose(other, z, atol=1e-10)
    np.testing.assert_allclose(own, s_own @ a_of_other(z), atol=1e-10)
    assert 1 < steps < 500


def test_propagation_labels_outliers_and_gives_soft_targets():
    from raytrain_vireid.pseudo.jaccard import jaccard_distance

    rng = np.random.default_rng(12)
    centres = unit(rng.standard_normal((3, 16)))
    fv, lv = blobs(centres, 10, 0.05, 13)
    fr, lr = blobs(centres[[2, 0, 1]], 10, 0.05, 14)
    lv_in = lv.copy()
    lv_in[[0, 15]] = -1
    out = propagation(fv, lv_in, fr, lr, jaccard_v=jaccard_distance(fv, 5, 2), jaccard_r=jaccard_distance(fr, 5, 2),
                      cross_k=5)
    np.testing.assert_array_equal(out.labels_v, lv)  # the outliers got their blob's label
    np.testing.assert_array_equal(out.cross_v, np.array([1, 2, 0])[lv])
    np.testing.assert_array_equal(out.cross_r, np.array([2, 0, 1])[lr])
    assert out.soft["own_v"].shape == (30, 3) and out.soft["cross_r"].shape == (30, 3)
    np.testing.assert_allclose(out.soft["cross_v"].sum(1), 1.0, atol=1e-5)
    assert (out.soft["own_v"].max(1) >= 0.7).all()


# ---- CRA / GUR / BRST / CMA ----------------------------------------------------------------------------
def test_cra_ranking_vote_and_tie_break():
    deep = np.array([[4, 7, 9], [4, 7, 9], [4, 7, 9], [-1, 2, 2]])
    shallow = np.array([[7, 9, 1], [9, 7, 7], [1, 1, 1], [-1, -1, 2]])
    # row 0: 7 and 9 once each -> tie to higher deep rank (7); row 1: 7 twice; row 2: none -> top deep (4);
    # row 3: outlier label -1 occurs twice among the shallow labels and wins.
    np.testing.assert_array_equal(ranking_vote(deep, shallow), [7, 7, 4, -1])


def test_cra_smoothing_vote_counts_outliers_as_a_class():
    labels = np.array([0, 1, -1, -1, 1])
    neighbours = np.array([[0, 1, 4], [2, 3, 0], [0, 1, 2]])
    np.testing.assert_array_equal(majority_vote(labels, neighbours, 2), [1, -1, 0])


def test_cra_end_to_end_on_two_heads():
    rng = np.random.default_rng(15)
    deep_c, shallow_c = unit(rng.standard_normal((3, 8))), unit(rng.standard_normal((3, 8)))
    dv, lv = blobs(deep_c, 6, 0.05, 16)
    sv, _ = blobs(shallow_c, 6, 0.05, 17)
    dr, lr = blobs(deep_c[[1, 2, 0]], 6, 0.05, 18)
    sr, _ = blobs(shallow_c[[1, 2, 0]], 6, 0.05, 19)
    out = associate("cra", {"deep": dv, "shallow": sv}, lv, {"deep": dr, "shallow": sr}, lr, k=4, smooth_k=3)
    np.testing.assert_array_equal(out.cross_v, np.array([2, 0, 1])[lv])
    np.testing.assert_array_equal(out.cross_r, lr)


def test_gur_softmax_propagation_by_hand():
    fv = unit([[1.0, 0.0], [0.0, 1.0]])
    fr = unit([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [0.0, 1.0]])
    lr = np.array([0, -1, 1, 1])
    out = gur(fv, np.array([0, 1]), fr, lr, k=2)
    # RGB 0's two nearest IR are 0 (label 0) and 1 (outlier, no vote) -> 0; RGB 1's are 2, 3 -> 1.
    np.testing.assert_array_equal(out.cross_v, [0, 1])
    out = gur(fv[:1], np.array([0]), fr[1:2], np.array([-1]), k=1)
    np.testing.assert_array_equal(out.cross_v, [-1])


def test_brst_threshold_by_hand():
    angle = np.deg2rad([0.0, 40.0, 80.0])  # RGB instances at 0°, 40°, 80°
    fv = np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32)
    fr = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # IR clusters 0 (0°) and 1 (90°), one each
    lv = np.array([0, 0, -1])
    # RGB 40° is nearest to prototype 0: cos 40° = 0.766 against prototype 0's best RGB cosine 1.0, so it is
    # kept for rho = 0.5 and dropped for rho = 0.8. The RGB outlier at 80° gets -1.
    out = brst(fv, lv, fr, np.array([0, 1]), rho=0.5, direction="one_way")
    np.testing.assert_array_equal(out.cross_v, [0, 0, -1])
    np.testing.assert_array_equal(out.cross_r, [-1, -1])
    both = brst(fv, lv, fr, np.array([0, 1]), rho=0.8)
    np.testing.assert_array_equal(both.cross_v, [0, -1, -1])
    # Reverse direction: RGB prototype 0 points at 20°; its best IR cosine is cos 20° (IR 0, kept);
    # IR 1 (90°) has cos 70° = 0.34 < 0.8 × 0.94 -> -1.
    np.testing.assert_array_equal(both.cross_r, [0, -1])
    with pytest.raises(UserError, match="direction"):
        brst(fv, lv, fr, np.array([0, 1]), direction="sideways")


def test_cma_cooccurrence_blocked_equals_dense_and_greedy_equals_naive():
    rng = np.random.default_rng(20)
    fv, fr = unit(rng.standard_normal((30, 4))), unit(rng.standard_normal((25, 4)))
    lv, lr = rng.integers(-1, 4, 30), rng.integers(-1, 5, 25)
    dense = np.zeros((4, 5), dtype=np.int64)
    sim = fv @ fr.T
    for i in range(30):
        for j in range(25):
            if lv[i] >= 0 and lr[j] >= 0 and sim[i, j] >= 0.3:
                dense[lv[i], lr[j]] += 1
    np.testing.assert_array_equal(cooccurrence(fv, lv, fr, lr, 0.3, block_bytes=64), dense)
    for seed in range(20):
        counts = np.random.default_rng(seed).integers(0, 6, (6, 5))
        pairs = sorted(((-counts[i, j], i, j) for i in range(6) for j in range(5) if counts[i, j] > 0))
        used_r, used_c, naive = set(), set(), []
        for _, i, j in pairs:
            if i not in used_r and j not in used_c:
                naive.append((i, j))
                used_r.add(i)
                used_c.add(j)
        assert sorted(map(tuple, greedy_matching(counts).tolist())) == sorted(naive)


def test_cma_returns_matches():
    fv, lv = blobs(np.eye(3), 3, 0.01, 0)
    fr, lr = blobs(np.eye(3)[[1, 2]], 3, 0.01, 1)
    out = cma(fv, lv, fr, lr)
    np.testing.assert_array_equal(out.info["matches"], [[1, 0], [2, 1]])
    np.testing.assert_array_equal(out.cross_v, np.array([-1, 0, 1])[lv])


def test_associate_rejects_unknown_names_and_parameters():
    x = unit(np.eye(3))
    with pytest.raises(UserError, match="association: 'nope' is not one of"):
        associate("nope", x, np.zeros(3, int), x, np.zeros(3, int))
    with pytest.raises(UserError, match="association_params: lamda not accepted by 'sinkhorn'"):
        associate("sinkhorn", x, np.zeros(3, int), x, np.zeros(3, int), lamda=5)
