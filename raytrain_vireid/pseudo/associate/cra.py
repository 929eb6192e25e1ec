"""SDCL collaborative ranking association (CRA, METHODS.md §4), kNN searches only.

For every RGB instance: its ``k`` nearest IR instances by deep cosine and by shallow cosine and their
DBSCAN labels. The chosen IR label is the deep-neighbour label that occurs most often among the shallow
neighbours' labels; ties go to the higher deep rank, and when no deep label occurs among the shallow ones
the top deep neighbour's label is taken (the argmax of an all-zero vote). The IR outlier label -1 takes
part in the vote like any other label. Smoothing: the cross labels of the RGB instance's ``smooth_k``
nearest RGB instances by deep + shallow cosine (itself included) are summed as one-hot votes with -1 as
a class of its own, and the argmax (lowest label on ties) is kept. ``cross_r`` is the IR DBSCAN label.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..backend import Backend
from ..graph import knn_pairs
from .base import Association, as_labels, num_clusters


def ranking_vote(deep_labels: np.ndarray, shallow_labels: np.ndarray) -> np.ndarray:
    """Per row: the deep-neighbour label occurring most often among the shallow labels (first rank on ties)."""
    counts = (deep_labels[:, :, None] == shallow_labels[:, None, :]).sum(axis=2)
    return np.take_along_axis(deep_labels, np.argmax(counts, axis=1)[:, None], axis=1)[:, 0]


def majority_vote(labels: np.ndarray, neighbours: np.ndarray, count: int) -> np.ndarray:
    """Per row: the most frequent of ``labels[neighbours[row]]`` (-1 its own class, lowest label on ties)."""
    classes = np.where(labels < 0, count, labels)[neighbours]  # -1 becomes class `count`
    rows = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    votes = np.bincount(rows * (count + 1) + classes.ravel(), minlength=neighbours.shape[0] * (count + 1))
    winner = np.argmax(votes.reshape(neighbours.shape[0], count + 1), axis=1)
    return np.where(winner == count, -1, winner).astype(np.int64)


def cra(
    features_v: Mapping[str, np.ndarray], labels_v: np.ndarray, features_r: Mapping[str, np.ndarray],
    labels_r: np.ndarray, *,
    backend: Backend | None = None, heads: tuple[str, str] = ("deep", "shallow"),
    k: int = 20, smooth_k: int = 5,
) -> Association:
    """CRA cross labels for RGB instances; ``features_v/_r`` are dicts of per-head L2-normalised arrays."""
    deep, shallow = heads
    labels_v, labels_r = as_labels(labels_v), as_labels(labels_r)
    _, deep_nb = knn_pairs(features_v[deep], features_r[deep], k, backend=backend)
    _, shallow_nb = knn_pairs(features_v[shallow], features_r[shallow], k, backend=backend)
    voted = ranking_vote(labels_r[deep_nb], labels_r[shallow_nb])
    joint = np.concatenate([features_v[deep], features_v[shallow]], axis=1)  # dot product = deep + shallow cosine
    _, self_nb = knn_pairs(joint, joint, smooth_k, backend=backend)
    cross_v = majority_vote(voted, self_nb, num_clusters(labels_r))
    return Association(labels_v, labels_r, cross_v, labels_r.copy(), info={"before_smoothing": voted})
