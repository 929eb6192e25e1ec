"""Vectorised ReID metrics against a plain per-query loop and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from raytrain_vireid.errors import UserError
from raytrain_vireid.eval import metrics
from raytrain_vireid.eval.metrics import eval_llcm, eval_regdb, eval_sysu


def loop_reference(distmat, q_pids, g_pids, q_cams, g_cams, rule, max_rank, dedup):
    """Straight transcription of the protocol rules, one query at a time."""
    cmc_rows, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        if rule == "sysu":
            keep = ~((q_cams[q] == 3) & (g_cams[order] == 2))
        elif rule == "same_pid_camera":
            keep = ~((g_pids[order] == q_pids[q]) & (g_cams[order] == q_cams[q]))
        else:
            keep = np.ones(len(order), bool)
        ranked = g_pids[order][keep]
        match = (ranked == q_pids[q]).astype(np.int32)
        if not match.any():
            continue
        if dedup:
            first_seen = np.unique(ranked, return_index=True)[1]
            distinct = ranked[np.sort(first_seen)]
            curve = np.cumsum(distinct == q_pids[q])
        else:
            curve = np.minimum(np.cumsum(match), 1)
        curve = np.concatenate([curve, np.full(max(0, max_rank - len(curve)), curve[-1])])[:max_rank]
        cmc_rows.append(curve)
        hits = np.cumsum(match)
        precision = np.array([hits[i] / (i + 1.0) for i in range(len(match))]) * match
        aps.append(precision.sum() / match.sum())
        last = np.max(np.where(match == 1))
        inps.append(hits[last] / (last + 1.0))
    cmc = np.asarray(cmc_rows).astype(np.float32).sum(0) / float(len(aps))
    return cmc, np.mean(aps), np.mean(inps)


def random_case(rng, num_q, num_g, num_ids, cams, tie_levels=None):
    q_pids = rng.integers(0, num_ids + 2, num_q)  # some query ids absent from the gallery
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.choice(cams[0], num_q)
    g_cams = rng.choice(cams[1], num_g)
    if tie_levels:
        distmat = rng.integers(0, tie_levels, (num_q, num_g)).astype(np.float64)
    else:
        distmat = rng.standard_normal((num_q, num_g)).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [None, 5])
def test_sysu_matches_loop(seed, ties):
    rng = np.random.default_rng(seed)
    d, qp, gp, qc, gc = random_case(rng, 70, 40, 12, ([3, 6], [1, 2, 4, 5]), ties)
    for standard in (False, True):
        got = eval_sysu(d, qp, gp, qc, gc, max_rank=20, standard_cmc=standard)
        ref = loop_reference(d, qp, gp, qc, gc, "sysu", 20, dedup=not standard)
        np.testing.assert_array_equal(got[0], ref[0])
        assert abs(got[1] - ref[1]) < 1e-12 and abs(got[2] - ref[2]) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_llcm_and_regdb_match_loop(seed):
    rng = np.random.default_rng(100 + seed)
    d, qp, gp, qc, gc = random_case(rng, 50, 60, 10, ([1, 2, 3], [1, 2, 3]), 7 if seed % 2 else None)
    got = eval_llcm(d, qp, gp, qc, gc, max_rank=25)
    ref = loop_reference(d, qp, gp, qc, gc, "same_pid_camera", 25, dedup=True)
    np.testing.assert_array_equal(got[0], ref[0])
    assert abs(got[1] - ref[1]) < 1e-12 and abs(got[2] - ref[2]) < 1e-12
    got = eval_regdb(d, qp, gp, max_rank=25)
    ref = loop_reference(d, qp, gp, qc, gc, "none", 25, dedup=False)
    np.testing.assert_array_equal(got[0], ref[0])
    assert abs(got[1] - ref[1]) < 1e-12 and abs(got[2] - ref[2]) < 1e-12


def test_small_blocks_give_identical_results():
    rng = np.random.default_rng(7)
    d, qp, gp, qc, gc = random_case(rng, 33, 17, 5, ([3, 6], [1, 2, 3, 4, 5, 6]), 4)
    for rule in ("sysu", "same_pid_camera", "none"):
        whole = metrics.rank_queries(d, qp, gp, qc, gc, rule=rule)
        tiny = metrics.rank_queries(d, qp, gp, qc, gc, rule=rule, block_elements=40)
        for name in ("valid", "first_rank", "first_id_rank", "ap", "inp"):
            np.testing.assert_array_equal(getattr(whole, name), getattr(tiny, name))


def test_hand_worked_single_query():
    # Ranked gallery ids (distance order): 7, 1, 7, 2, 1  -> query id 1.
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    gp = np.array([7, 1, 7, 2, 1])
    cmc, m_ap, m_inp = eval_regdb(d, np.array([1]), gp, max_rank=5)
    # Positives at ranks 2 and 5: AP = (1/2 + 2/5) / 2 = 0.45; INP = 2 / 5.
    assert m_ap == pytest.approx(0.45, abs=1e-15) and m_inp == pytest.approx(0.4, abs=1e-15)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1])
    # Deduplicated ids in rank order: 7, 1, 2 -> true id at distinct rank 2; padded to max_rank.
    cams = np.array([1, 1, 1, 1, 1])
    cmc, m_ap, _ = eval_sysu(d, np.array([1]), gp, np.array([6]), cams, max_rank=5)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1])
    assert m_ap == pytest.approx(0.45, abs=1e-15)


def test_sysu_removes_camera2_for_camera3_query_only():
    # Ranked: (id 2, cam 2), (id 1, cam 2), (id 1, cam 1).
    d = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    gp, gc = np.array([2, 1, 1]), np.array([2, 2, 1])
    qp = np.array([1, 1])
    cam3 = eval_sysu(d[:1], qp[:1], gp, np.array([3]), gc, max_rank=3)
    cam6 = eval_sysu(d[:1], qp[:1], gp, np.array([6]), gc, max_rank=3)
    # cam-3 query sees only (id 1, cam 1): rank 1, AP 1, INP 1.
    np.testing.assert_array_equal(cam3[0], [1, 1, 1])
    assert cam3[1] == 1.0 and cam3[2] == 1.0
    # cam-6 query sees all three: positives at ranks 2, 3 -> AP = (1/2 + 2/3)/2, INP = 2/3.
    np.testing.assert_array_equal(cam6[0], [0, 1, 1])
    assert cam6[1] == pytest.approx((0.5 + 2 / 3) / 2) and cam6[2] == pytest.approx(2 / 3)


def test_query_without_positive_is_skipped_and_all_missing_raises():
    d = np.array([[0.1, 0.2], [0.3, 0.1]])
    gp = np.array([1, 2])
    cmc, m_ap, _ = eval_regdb(d, np.array([1, 9]), gp, max_rank=2)
    np.testing.assert_array_equal(cmc, [1, 1])
    assert m_ap == 1.0
    with pytest.raises(UserError, match="no query identity"):
        eval_regdb(d, np.array([8, 9]), gp)


def test_llcm_removes_same_pid_same_camera():
    d = np.array([[0.1, 0.2, 0.3]])
    gp, gc = np.array([1, 2, 1]), np.array([4, 4, 5])
    cmc, m_ap, m_inp = eval_llcm(d, np.array([1]), gp, np.array([4]), gc, max_rank=2)
    # (1, cam 4) removed; ranked ids 2, 1 -> rank 2.
    np.testing.assert_array_equal(cmc, [0, 1])
    assert m_ap == 0.5 and m_inp == 0.5


def test_bad_inputs_raise_user_errors():
    with pytest.raises(UserError, match="q_pids: expected 2"):
        eval_regdb(np.zeros((2, 3)), np.array([1]), np.array([1, 2, 3]))
    with pytest.raises(UserError, match="NaN"):
        eval_regdb(np.array([[np.nan, 1.0]]), np.array([1]), np.array([1, 2]))
    with pytest.raises(UserError, match="q_camids: required"):
        metrics.rank_queries(np.zeros((1, 1)), [1], [1], rule="sysu")
