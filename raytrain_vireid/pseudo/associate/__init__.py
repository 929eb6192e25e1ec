"""Cross-modality associators: one module each, a registry, and :func:`associate`.

Every associator is ``fn(features_v: np.ndarray, labels_v: np.ndarray, features_r: np.ndarray, labels_r: np.ndarray, *,
    backend: Backend | None = None, **params)
-> Association`` on L2-normalised features (``cra`` takes dicts of heads) and own-modality DBSCAN labels.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..backend import Backend
from ...errors import UserError
from .base import Association
from .brst import brst
from .cma import cma
from .cmfp import cmfp_sinkhorn
from .cra import cra
from .gur import gur
from .hungarian import hungarian
from .optimal_transport import sinkhorn
from .propagation import propagation
from .votes import knn_votes

ASSOCIATORS: dict[str, Callable[..., Association]] = {
    "hungarian": hungarian,
    "sinkhorn": sinkhorn,
    "cmfp_sinkhorn": cmfp_sinkhorn,
    "propagation": propagation,
    "cra": cra,
    "gur": gur,
    "brst": brst,
    "cma": cma,
    "knn_votes": knn_votes,
}

_DATA_ARGUMENTS = {"features_v", "labels_v", "features_r", "labels_r", "backend"}
MULTI_HEAD = frozenset({"cra"})  # associators that take dicts of heads rather than one array


def associate(
    name: str, features_v: Any, labels_v: Any, features_r: Any, labels_r: Any, *, backend: Backend | None = None,
    **params: Any,
) -> Association:
    """Run the associator registered as ``name`` (UserError for an unknown name or parameter)."""
    if name not in ASSOCIATORS:
        raise UserError(f"association: {name!r} is not one of {', '.join(sorted(ASSOCIATORS))}")
    function = ASSOCIATORS[name]
    allowed = set(inspect.signature(function).parameters) - _DATA_ARGUMENTS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UserError(
            f"association_params: {', '.join(unknown)} not accepted by {name!r} (allowed: {', '.join(sorted(allowed))})"
        )
    return function(features_v, labels_v, features_r, labels_r, backend=backend, **params)


__all__ = ["ASSOCIATORS", "MULTI_HEAD", "Association", "associate"]
