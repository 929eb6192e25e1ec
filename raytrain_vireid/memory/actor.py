"""The memory actor: global instance features of the whole training set, and per-epoch pseudo-labelling.

:class:`MemoryActor` is a plain class (unit-tested without Ray); :func:`create_memory_actor` starts it
as one named Ray actor in the ``raytrain_vireid`` namespace, created by the driver before ``fit()``.
Workers ship their extracted shard with ``put_features``; rank 0 calls ``relabel(epoch, plan)``;
every rank then takes ``labels(epoch)``. ``relabel`` is keyed by epoch: a restarted worker group that
asks again for an epoch gets the LabelSet already computed, never a second clustering.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import numpy as np
import ray

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.pseudo.backend import get_backend
from raytrain_vireid.pseudo.cluster import centroids
from raytrain_vireid.pseudo.engine import RelabelPlan, cross_label_metrics, relabel
from raytrain_vireid.pseudo.labelset import LabelSet
from raytrain_vireid.pseudo.quality import majority_pid

NAMESPACE = "raytrain_vireid"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_KEEP_EPOCHS = 2  # LabelSets kept in memory (the current epoch and the one before)


class MemoryActor:
    """Holds ``(N, D_h)`` instance features per head (``feature_dtype``), the modality of every row and,
    for quality metrics only, the true pids. ``supervised=True`` labels from the true pids instead of
    clustering (diagnostic upper bound); ``oracle_association=True`` keeps the clusters and replaces only the
    cross labels (:func:`oracle_cross`, diagnostic); ``oracle_clusters=True`` labels from the true pids but keeps the
    plan's stage: cross labels only when the plan associates (diagnostic). ``prior``: a hand-crafted descriptor of
    every row (``pseudo.prior``), blended into the clustered features by the plan's ``prior_weight``."""

    def __init__(self, modality: np.ndarray, feature_dims: Mapping[str, int], *, true_pids: np.ndarray | None = None,
                 feature_dtype: str = "float16", backend: str = "auto", supervised: bool = False,
                 oracle_association: bool = False, oracle_clusters: bool = False,
                 prior: np.ndarray | None = None) -> None:
        self.modality = np.asarray(modality, dtype=np.int8).copy()
        self.true_pids = None if true_pids is None else np.asarray(true_pids, dtype=np.int64).copy()
        if (supervised or oracle_association or oracle_clusters) and self.true_pids is None:
            raise ValueError("supervised labelling and the oracle diagnostics need the true pids")
        n = len(self.modality)
        self.features = {head: np.zeros((n, dim), dtype=feature_dtype) for head, dim in feature_dims.items()}
        self.filled = np.zeros(n, dtype=bool)
        self.backend_name = backend
        self.supervised = supervised
        self.oracle_association = oracle_association
        self.oracle_clusters = oracle_clusters
        self.prior = None if prior is None else np.array(prior, dtype=np.float32)  # copied out of the object store
        self.labelsets: dict[int, LabelSet] = {}

    def put_features(self, indices: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Store a shard: ``arrays[head][i]`` is the feature of training row ``indices[i]`` (copied, so the
        read-only object-store view is never kept)."""
        indices = np.asarray(indices, dtype=np.int64)
        for head, values in arrays.items():
            self.features[head][indices] = values
        self.filled[indices] = True

    def get_features(self, head: str) -> np.ndarray:
        """All rows' features of ``head`` (for the warm-up's instance memory)."""
        return self.features[head]

    def relabel(self, epoch: int, plan: RelabelPlan) -> LabelSet:
        """Pseudo-label every training row from the stored features; cached per epoch."""
        if epoch in self.labelsets:
            return self.labelsets[epoch]
        missing = int((~self.filled).sum())
        if missing:
            raise RuntimeError(f"relabel(epoch={epoch}): {missing} training rows have no features yet")
        features = {head: values.astype(np.float32) for head, values in self.features.items()}
        if self.supervised or self.oracle_clusters:
            # Diagnostics: the true identities replace clustering (never used otherwise).
            labelset = supervised_labelset(features, self.modality, self.true_pids, epoch)
            if self.oracle_clusters and plan.association is None:
                labelset.cross = None  # stage 1 of the method: no cross-modality labels yet
        else:
            labelset = relabel(features, self.modality, plan, backend=get_backend(self.backend_name),
                               true_pids=self.true_pids, epoch=epoch, prior=self.prior)
            if self.oracle_association and labelset.cross is not None:
                labelset.cross = oracle_cross(labelset.labels, self.modality, self.true_pids)
                rows = {m: np.flatnonzero(self.modality == m) for m in (VISIBLE, INFRARED)}
                labelset.metrics.update(cross_label_metrics(labelset.labels, labelset.cross, rows, self.true_pids))
        self.labelsets[epoch] = labelset
        for old in sorted(self.labelsets)[:-_KEEP_EPOCHS]:
            del self.labelsets[old]
        return labelset

    def labels(self, epoch: int) -> LabelSet:
        """The LabelSet computed by ``relabel(epoch)``."""
        if epoch not in self.labelsets:
            raise KeyError(f"no labels for epoch {epoch}; relabel({epoch}) has not run")
        return self.labelsets[epoch]

    def state(self) -> dict[str, Any]:
        """Plain NumPy state for a checkpoint: features per head, the filled mask, the latest LabelSet."""
        state: dict[str, Any] = {"features": dict(self.features), "filled": self.filled}
        if self.labelsets:
            epoch = max(self.labelsets)
            state["labelset"] = self.labelsets[epoch].to_dict()
        return state

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Load ``state`` only when this actor holds nothing yet (a new driver resuming a run); an actor that
        survived a worker-group restart keeps its newer features and cached LabelSets. True if loaded."""
        if self.filled.any() or self.labelsets:
            return False
        self.load_state(state)
        return True

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (arrays are copied)."""
        for head, values in state["features"].items():
            self.features[head] = np.array(values, dtype=self.features[head].dtype)
        self.filled = np.array(state["filled"], dtype=bool)
        self.labelsets = {}
        if "labelset" in state:
            labelset = LabelSet.from_dict(state["labelset"])
            self.labelsets[labelset.epoch] = labelset


def supervised_labelset(features: Mapping[str, np.ndarray], modality: np.ndarray, true_pids: np.ndarray,
                        epoch: int) -> LabelSet:
    """Labels from the true identities: own labels numbered per modality, cross labels = the same identity's
    label in the other modality (−1 when that identity has no image there)."""
    labels = np.full(len(modality), -1, dtype=np.int64)
    spaces = {}
    for m in (VISIBLE, INFRARED):
        rows = modality == m
        ids, labels[rows] = np.unique(true_pids[rows], return_inverse=True)
        spaces[m] = ids
    cross = np.full(len(modality), -1, dtype=np.int64)
    for m, other in ((VISIBLE, INFRARED), (INFRARED, VISIBLE)):
        rows = modality == m
        pos = np.searchsorted(spaces[other], true_pids[rows]).clip(max=len(spaces[other]) - 1)
        cross[rows] = np.where(spaces[other][pos] == true_pids[rows], pos, -1)
    num = {m: len(spaces[m]) for m in (VISIBLE, INFRARED)}
    cents = {(m, head): centroids(values[modality == m], labels[modality == m], num[m])
             for m in (VISIBLE, INFRARED) for head, values in features.items()}
    metrics = {f"clusters_{name}": float(num[m]) for m, name in ((VISIBLE, "visible"), (INFRARED, "infrared"))}
    return LabelSet(epoch=epoch, labels=labels, cross=cross, num_clusters=num, centroids=cents, soft={}, extra={},
                    metrics=metrics)


def oracle_cross(labels: np.ndarray, modality: np.ndarray, true_pids: np.ndarray) -> np.ndarray:
    """Cross labels from the truth for clustered rows: the other modality's cluster whose majority identity is the
    row's own (the largest such cluster when several are), −1 when none is or the row is an outlier."""
    cross = np.full(len(modality), -1, dtype=np.int64)
    for m, other in ((VISIBLE, INFRARED), (INFRARED, VISIBLE)):
        rows, other_rows = np.flatnonzero(modality == m), modality == other
        other_labels = labels[other_rows]
        majority = majority_pid(other_labels, true_pids[other_rows])
        sizes = np.bincount(other_labels[other_labels >= 0], minlength=len(majority))
        by_pid: dict[int, int] = {}
        for cluster in np.argsort(sizes, kind="stable"):  # ascending, so the largest cluster of a pid wins
            if majority[cluster] >= 0:
                by_pid[int(majority[cluster])] = int(cluster)
        clustered = rows[labels[rows] >= 0]
        cross[clustered] = [by_pid.get(int(pid), -1) for pid in true_pids[clustered]]
    return cross


def create_memory_actor(
    name: str, *, num_cpus: float, num_gpus: float, resources: dict[str, float] | None = None, **kwargs: Any
) -> "ray.actor.ActorHandle":
    """Get or create the named actor (namespace ``raytrain_vireid``) outside any placement group, with its
    thread count set to its CPUs (Ray would set 1 for a zero-CPU actor)."""
    threads = str(max(1, int(num_cpus) or os.cpu_count() or 1))
    remote = ray.remote(MemoryActor).options(
        name=name, namespace=NAMESPACE, get_if_exists=True,
        num_cpus=num_cpus, num_gpus=num_gpus, resources=dict(resources or {}), scheduling_strategy="DEFAULT",
        runtime_env={"env_vars": dict.fromkeys(_THREAD_VARS, threads)},
    )
    return remote.remote(**kwargs)


def get_memory_actor(name: str) -> "ray.actor.ActorHandle":
    """The running actor called ``name`` (from a worker)."""
    return ray.get_actor(name, namespace=NAMESPACE)


def stop_memory_actor(actor: "ray.actor.ActorHandle", name: str, timeout_s: float = 30.0) -> None:
    """Kill the actor and wait until its name is free, so that a following run with the same name gets a fresh one."""
    ray.kill(actor)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)
