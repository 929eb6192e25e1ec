"""relabel() end to end on synthetic two-modality blobs, and the LabelSet dict round trip."""

from __future__ import annotations

import numpy as np
import pytest

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.errors import UserError
from raytrain_vireid.pseudo.engine import RelabelPlan, relabel
from raytrain_vireid.pseudo.labelset import LabelSet


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def two_modalities(ids=6, per=10, dim=32, seed=0, heads=("global",)):
    """Identity blobs; infrared rows are shifted by a common modality offset. Rows interleave modalities."""
    rng = np.random.default_rng(seed)
    n = ids * per * 2
    pids = np.tile(np.repeat(np.arange(ids), per), 2)
    modality = np.repeat(np.array([VISIBLE, INFRARED], dtype=np.int8), ids * per)
    order = rng.permutation(n)
    pids, modality = pids[order], modality[order]
    features = {}
    for h, head in enumerate(heads):
        centres = rng.standard_normal((ids, dim)) * 3
        offset = rng.standard_normal(dim)
        x = centres[pids] + offset * modality[:, None] + 0.3 * rng.standard_normal((n, dim))
        features[head] = unit(x)
    # two stray points far from everything: DBSCAN outliers
    for head in heads:
        features[head][:2] = unit(rng.standard_normal((2, dim)) * 10)
    return features, modality, pids


def plan(**kwargs):
    defaults = dict(k1=8, k2=3, eps=0.6, min_samples=4, backend="cpu")
    defaults.update(kwargs)
    return RelabelPlan(**defaults)


@pytest.mark.parametrize("association", ["sinkhorn", "hungarian", "cmfp_sinkhorn"])
def test_relabel_on_easy_blobs(association):
    features, modality, pids = two_modalities()
    params = {"k": 5} if association == "cmfp_sinkhorn" else {}
    ls = relabel(features, modality, plan(association=association, association_params=params), true_pids=pids,
                 epoch=3)
    assert ls.epoch == 3 and ls.num_clusters == {VISIBLE: 6, INFRARED: 6}
    for name in ("visible", "infrared"):
        assert ls.metrics[f"ari_{name}"] > 0.95
        assert ls.metrics[f"time_jaccard_{name}"] >= 0
    assert ls.metrics["assoc_acc_v2r"] == 1.0 and ls.metrics["assoc_acc_r2v"] == 1.0
    assert (ls.labels[:2] == -1).all() and (ls.cross[:2] == -1).all()  # outliers: no own or cross label
    assert ((ls.cross >= 0) == (ls.labels >= 0)).all()
    for m in (VISIBLE, INFRARED):
        rows = modality == m
        assert ls.labels[rows].max() == ls.num_clusters[m] - 1
        assert ls.cross[rows].max() < ls.num_clusters[1 - m]
        cents = ls.centroids[(m, "global")]
        assert cents.shape == (ls.num_clusters[m], 32)
        np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, atol=1e-5)


def test_relabel_without_association_keep_outliers_and_subcentres():
    features, modality, pids = two_modalities(heads=("deep", "shallow"))
    ls = relabel(features, modality, plan(cluster_head="concat", keep_outliers=True, subcluster_k=2,
                                          k1={VISIBLE: 6, "infrared": 8}))
    assert ls.cross is None and (ls.labels >= 0).all()
    visible_outliers = int((modality[:2] == VISIBLE).sum())
    assert ls.num_clusters[VISIBLE] == 6 + visible_outliers
    assert ls.extra["subcentres"][(INFRARED, "shallow")].shape == (ls.num_clusters[INFRARED], 3, 32)
    assert "ari_visible" not in ls.metrics and ls.metrics["outlier_rate_visible"] == 0.0


def test_relabel_propagation_and_cra_keep_soft_targets_per_modality():
    features, modality, pids = two_modalities(heads=("deep", "shallow"))
    ls = relabel(features, modality, plan(cluster_head="concat", association="propagation",
                                          association_params={"cross_k": 10}), true_pids=pids)
    n_v = int((modality == VISIBLE).sum())
    assert ls.soft["own_0"].shape == (n_v, ls.num_clusters[VISIBLE])
    assert ls.soft["cross_0"].shape == (n_v, ls.num_clusters[INFRARED])
    assert (ls.labels >= 0).all() and ls.metrics["assoc_acc_v2r"] > 0.95  # MULT keeps and labels outliers
    cra = relabel(features, modality, plan(cluster_head="concat", association="cra",
                                           association_params={"k": 5, "smooth_k": 3}), true_pids=pids)
    assert cra.metrics["assoc_acc_v2r"] > 0.95
    np.testing.assert_array_equal(cra.cross[modality == INFRARED], cra.labels[modality == INFRARED])


def test_labelset_round_trip():
    features, modality, pids = two_modalities()
    ls = relabel(features, modality, plan(association="cma", subcluster_k=2), true_pids=pids, epoch=7)
    state = ls.to_dict()
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())
    back = LabelSet.from_dict(state)
    assert back.epoch == 7 and back.num_clusters == ls.num_clusters and back.metrics == ls.metrics
    np.testing.assert_array_equal(back.labels, ls.labels)
    np.testing.assert_array_equal(back.cross, ls.cross)
    assert set(back.centroids) == set(ls.centroids)
    np.testing.assert_array_equal(back.extra["subcentres"][(VISIBLE, "global")], ls.extra["subcentres"][(VISIBLE, "global")])
    np.testing.assert_array_equal(back.extra["association"]["matches"], ls.extra["association"]["matches"])


def test_relabel_rejects_bad_plans():
    features, modality, _ = two_modalities(ids=2, per=4)
    with pytest.raises(UserError, match="cluster_head: 'deep' is not a feature head"):
        relabel(features, modality, plan(cluster_head="deep"))
    with pytest.raises(UserError, match="association: 'magic' is not one of"):
        relabel(features, modality, plan(association="magic"))
    with pytest.raises(UserError, match="pseudo.eps: no value for modality infrared"):
        relabel(features, modality, plan(eps={0: 0.5}))


def test_neighbour_precisions_separate_aligned_from_unaligned_modalities():
    features, modality, pids = two_modalities()
    aligned = relabel(features, modality, plan(), true_pids=pids).metrics
    assert aligned["knn_precision_visible"] > 0.9 and aligned["knn_precision_infrared"] > 0.9
    assert aligned["knn_precision_cross"] > 0.9
    # The same infrared rows carrying other identities: each modality is still clean, across them nothing matches.
    ir = modality == INFRARED
    shuffled = pids.copy()
    shuffled[ir] = (pids[ir] + 1) % 6
    unaligned = relabel(features, modality, plan(), true_pids=shuffled).metrics
    assert unaligned["knn_precision_infrared"] == pytest.approx(aligned["knn_precision_infrared"])
    assert unaligned["knn_precision_cross"] < 0.1
    assert "knn_precision_cross" not in relabel(features, modality, plan()).metrics  # no truth, no scores
