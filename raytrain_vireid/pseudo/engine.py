"""One relabelling pass: per-modality Jaccard → DBSCAN, centroids, association, sub-centres, metrics."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from .. import INFRARED, MODALITY_NAMES, VISIBLE
from ..errors import UserError
from .associate import ASSOCIATORS, MULTI_HEAD, Association, associate
from .backend import Backend, get_backend
from .cluster import centroids, dbscan
from .jaccard import jaccard_distance
from .knn import knn_search, l2_normalize
from .labelset import LabelSet
from .quality import association_accuracy, label_quality, neighbour_precision
from .subcluster import subcluster_centres

MODALITIES = (VISIBLE, INFRARED)
# Neighbours per query of the logged neighbour precisions (``knn_precision_*``).
NEIGHBOUR_K = 5
_SOFT_KEYS = {"own_v": "own_0", "cross_v": "cross_0", "own_r": "own_1", "cross_r": "cross_1"}


@dataclass
class RelabelPlan:
    """How to pseudo-label one epoch.

    ``cluster_head``: a head name, or "concat" (all heads concatenated and re-normalised; "global" is
    simply the ResNet head's name). ``k1``/``eps``: a value or a per-modality dict ({0: 15, 1: 30}).
    ``keep_outliers``: DBSCAN noise gets singleton labels instead of -1. ``association``: None or a
    name in :data:`~raytrain_vireid.pseudo.associate.ASSOCIATORS`, with ``association_params``.
    ``subcluster_k``: None, or k for HIL's multi-centre sub-centres (blend ``subcluster_blend``).
    ``prior_weight``: share w of a hand-crafted descriptor (:func:`relabel`'s ``prior``) in the features that are
    clustered and associated, squared distances ``(1 − w)·d_network + w·d_prior`` (0: the network's alone).
    ``associate_on_prior``: the associator sees the prior alone instead (the clusters stay those of the blend).
    """

    cluster_head: str = "global"
    k1: int | dict[int, int] = 30
    k2: int = 6
    eps: float | dict[int, float] = 0.6
    min_samples: int = 4
    keep_outliers: bool = False
    association: str | None = None
    association_params: dict[str, Any] = field(default_factory=dict)
    subcluster_k: int | None = None
    subcluster_blend: float = 0.9
    prior_weight: float = 0.0
    associate_on_prior: bool = False
    backend: str = "auto"

    def per_modality(self, name: str, modality: int) -> Any:
        """``k1`` or ``eps`` for one modality (dict keys may be 0/1, "0"/"1" or "visible"/"infrared")."""
        value = getattr(self, name)
        if not isinstance(value, Mapping):
            return value
        for key in (modality, str(modality), MODALITY_NAMES[modality]):
            if key in value:
                return value[key]
        raise UserError(f"pseudo.{name}: no value for modality {MODALITY_NAMES[modality]} in {dict(value)}")

    def validate(self) -> None:
        """UserError for an unknown association name or out-of-range numbers."""
        if self.association is not None and self.association not in ASSOCIATORS:
            raise UserError(f"association: {self.association!r} is not one of {', '.join(sorted(ASSOCIATORS))}")
        for m in MODALITIES:
            if int(self.per_modality("k1", m)) < 1:
                raise UserError(f"pseudo.k1: must be >= 1, got {self.per_modality('k1', m)}")
            if not float(self.per_modality("eps", m)) > 0:
                raise UserError(f"pseudo.eps: must be > 0, got {self.per_modality('eps', m)}")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise UserError(f"pseudo.prior_weight: must be in [0, 1], got {self.prior_weight}")
        if self.subcluster_k is not None and self.subcluster_k < 1:
            raise UserError(f"pseudo.subcluster_k: must be >= 1 or null, got {self.subcluster_k}")


@contextmanager
def _timed(metrics: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    metrics[f"time_{name}"] = metrics.get(f"time_{name}", 0.0) + time.perf_counter() - start


def cluster_features(features: Mapping[str, np.ndarray], head: str) -> np.ndarray:
    """The array clustered: one head, or every head concatenated and L2-normalised ("concat")."""
    if head == "concat":
        return l2_normalize(np.concatenate([features[h] for h in features], axis=1))
    if head not in features:
        raise UserError(f"cluster_head: {head!r} is not a feature head ({', '.join(features)}) nor 'concat'")
    return l2_normalize(features[head])


def with_prior(clustered: np.ndarray, prior: np.ndarray | None, weight: float) -> np.ndarray:
    """Unit rows ``√(1 − w)·clustered ‖ √w·prior`` (both L2-normalised), whose squared distances are
    ``(1 − w)·d + w·d_prior``; ``clustered`` itself when ``w`` is 0, the normalised prior when it is 1.

    float32 like its inputs: the weights are Python floats, which NumPy 2 does not let widen an array (a NumPy
    float64 scalar would make the blend float64, twice the bytes for every later phase to convert back)."""
    if weight == 0.0:
        return clustered
    if prior is None or prior.shape[0] != clustered.shape[0]:
        rows = "none" if prior is None else f"{prior.shape[0]} rows"
        raise UserError(f"pseudo.prior: needs a prior descriptor of all {clustered.shape[0]} rows, got {rows}")
    if weight == 1.0:
        return l2_normalize(prior)
    return np.concatenate([math.sqrt(1.0 - weight) * clustered, math.sqrt(weight) * l2_normalize(prior)], axis=1)


def relabel(
    features: Mapping[str, np.ndarray],
    modality: np.ndarray,
    plan: RelabelPlan,
    *,
    backend: Backend | None = None,
    true_pids: np.ndarray | None = None,
    epoch: int = 0,
    prior: np.ndarray | None = None,
) -> LabelSet:
    """Pseudo-label every training row (see :class:`RelabelPlan`); ``true_pids`` only feed the metrics;
    ``prior``: a hand-crafted descriptor of every row, blended in by ``plan.prior_weight``."""
    plan.validate()
    backend = backend or get_backend(plan.backend)
    modality = np.asarray(modality, dtype=np.int8)
    for head, values in features.items():
        if values.shape[0] != modality.shape[0]:
            raise ValueError(f"features[{head!r}] has {values.shape[0]} rows for {modality.shape[0]} modality rows")
    rows = {m: np.nonzero(modality == m)[0] for m in MODALITIES}
    clustered = with_prior(cluster_features(features, plan.cluster_head), prior, plan.prior_weight)
    metrics: dict[str, float] = {}
    labels = np.full(modality.shape[0], -1, dtype=np.int64)
    jaccards: dict[int, Any] = {}
    neighbours: dict[int, np.ndarray] = {}
    for m in MODALITIES:
        name = MODALITY_NAMES[m]
        with _timed(metrics, f"jaccard_{name}"):
            k1, eps = int(plan.per_modality("k1", m)), float(plan.per_modality("eps", m))
            # Only label propagation reads the Jaccard graph beyond eps; DBSCAN needs pairs <= eps only,
            # which keeps ~40x fewer entries per row at k1=30 (benchmarks/README.md).
            cutoff = None if plan.association == "propagation" else eps
            knn = knn_search(clustered[rows[m]], k1, backend=backend)
            jaccards[m] = jaccard_distance(clustered[rows[m]], k1, plan.k2, backend=backend, cutoff=cutoff, knn=knn)
            neighbours[m] = backend.to_numpy(knn[1][:, 1 : NEIGHBOUR_K + 1])  # the search finds each row itself first
        with _timed(metrics, f"dbscan_{name}"):
            labels[rows[m]] = dbscan(
                jaccards[m], eps, plan.min_samples, backend=backend,
                outliers="singleton" if plan.keep_outliers else "drop",
            )
    cross, soft, extra = None, {}, {}
    if plan.association is not None:
        with _timed(metrics, "associate"):
            associated = with_prior(clustered, prior, 1.0) if plan.associate_on_prior else clustered
            result = _associate(features, associated, labels, rows, jaccards, plan, backend)
        cross = np.full(modality.shape[0], -1, dtype=np.int64)
        labels[rows[VISIBLE]], labels[rows[INFRARED]] = result.labels_v, result.labels_r
        cross[rows[VISIBLE]], cross[rows[INFRARED]] = result.cross_v, result.cross_r
        soft = {_SOFT_KEYS[key]: value.astype(np.float32) for key, value in result.soft.items()}
        extra["association"] = {k: v for k, v in result.info.items() if isinstance(v, (int, float, np.ndarray))}
    num = {m: int(labels[rows[m]].max(initial=-1)) + 1 for m in MODALITIES}
    with _timed(metrics, "centroids"):
        cents = {
            (m, head): centroids(values[rows[m]], labels[rows[m]], num[m])
            for m in MODALITIES
            for head, values in features.items()
        }
    if plan.subcluster_k is not None:
        with _timed(metrics, "subcluster"):
            extra["subcentres"] = {
                (m, head): subcluster_centres(
                    l2_normalize(values[rows[m]]), labels[rows[m]], plan.subcluster_k, plan.subcluster_blend,
                    backend=backend, seed=epoch,
                )
                for m in MODALITIES
                for head, values in features.items()
            }
    metrics.update(_label_metrics(labels, cross, rows, num, true_pids))
    if true_pids is not None:
        with _timed(metrics, "neighbours"):
            metrics.update(_neighbour_metrics(clustered, rows, neighbours, np.asarray(true_pids, dtype=np.int64),
                                              backend))
    return LabelSet(epoch=epoch, labels=labels, cross=cross, num_clusters=num, centroids=cents, soft=soft,
                    extra=extra, metrics=metrics)


def _associate(
    features: Mapping[str, np.ndarray], clustered: np.ndarray, labels: np.ndarray, rows: dict[int, np.ndarray],
    jaccards: dict[int, Any], plan: RelabelPlan, backend: Backend,
) -> Association:
    params = dict(plan.association_params)
    if plan.association == "propagation":
        params.setdefault("jaccard_v", jaccards[VISIBLE])
        params.setdefault("jaccard_r", jaccards[INFRARED])
    if plan.association in MULTI_HEAD:
        fv = {head: l2_normalize(values[rows[VISIBLE]]) for head, values in features.items()}
        fr = {head: l2_normalize(values[rows[INFRARED]]) for head, values in features.items()}
    else:
        fv, fr = clustered[rows[VISIBLE]], clustered[rows[INFRARED]]
    return associate(plan.association, fv, labels[rows[VISIBLE]], fr, labels[rows[INFRARED]], backend=backend, **params)


def _label_metrics(
    labels: np.ndarray, cross: np.ndarray | None, rows: dict[int, np.ndarray], num: dict[int, int],
    true_pids: np.ndarray | None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in MODALITIES:
        name = MODALITY_NAMES[m]
        out[f"clusters_{name}"] = float(num[m])
        out[f"outlier_rate_{name}"] = float((labels[rows[m]] < 0).mean()) if rows[m].size else 0.0
        if cross is not None:
            out[f"cross_coverage_{name}"] = float((cross[rows[m]] >= 0).mean()) if rows[m].size else 0.0
    if true_pids is None:
        return out
    true_pids = np.asarray(true_pids, dtype=np.int64)
    for m in MODALITIES:
        quality = label_quality(labels[rows[m]], true_pids[rows[m]])
        out.update({f"{key}_{MODALITY_NAMES[m]}": value for key, value in quality.items() if key != "n_clusters"})
    if cross is not None:
        out.update(cross_label_metrics(labels, cross, rows, true_pids))
    return out


def cross_label_metrics(labels: np.ndarray, cross: np.ndarray, rows: dict[int, np.ndarray],
                        true_pids: np.ndarray) -> dict[str, float]:
    """:func:`~raytrain_vireid.pseudo.quality.association_accuracy` of all-row ``labels``/``cross`` in both
    directions (``rows``: each modality's row indices)."""
    v, r = rows[VISIBLE], rows[INFRARED]
    return association_accuracy(labels[v], cross[v], labels[r], true_pids[v], true_pids[r], cross_r=cross[r])


def _neighbour_metrics(clustered: np.ndarray, rows: dict[int, np.ndarray], neighbours: dict[int, np.ndarray],
                       true_pids: np.ndarray, backend: Backend) -> dict[str, float]:
    """``knn_precision_<modality>``: the share of each row's 5 nearest same-modality rows (itself excluded) with
    its true identity, from the Jaccard step's search; ``knn_precision_cross``: likewise for each infrared
    row's 5 nearest visible rows (the test direction), one more search."""
    out = {f"knn_precision_{MODALITY_NAMES[m]}": neighbour_precision(neighbours[m], true_pids[rows[m]],
                                                                    true_pids[rows[m]]) for m in MODALITIES}
    v, r = rows[VISIBLE], rows[INFRARED]
    if v.size and r.size:
        cross = backend.to_numpy(knn_search(clustered[r], NEIGHBOUR_K, database=clustered[v], backend=backend)[1])
        out["knn_precision_cross"] = neighbour_precision(cross, true_pids[r], true_pids[v])
    return out
