"""The pseudo-labels of one epoch (:class:`LabelSet`), with a plain-NumPy dict form for checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SEP = "/"  # nesting separator in to_dict() keys
_TUPLE = ":"  # (modality, head) tuple keys are written "modality:head"


@dataclass
class LabelSet:
    """Labels of all training rows (manifest ``index`` order, both modalities mixed).

    ``labels``: own-modality cluster label (visible 0..C_v-1, infrared 0..C_r-1, -1 unused);
    ``cross``: the label in the OTHER modality's space (-1 none) or None; ``num_clusters``: modality -> C;
    ``centroids``: (modality, head) -> (C_modality, D_h) L2-normalised means; ``soft``: optional soft
    targets, ``"own_<m>"`` / ``"cross_<m>"`` -> (N_m, C) float32 for the rows of modality m in index
    order; ``extra``: method-specific arrays (e.g. ``"subcentres"`` keyed by (modality, head));
    ``metrics``: counts, outlier rates, quality scores and timings.
    """

    epoch: int
    labels: np.ndarray
    cross: np.ndarray | None
    num_clusters: dict[int, int]
    centroids: dict[tuple[int, str], np.ndarray]
    soft: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{str: ndarray}`` (nested dicts joined with '/', tuple keys written 'modality:head')."""
        out: dict[str, np.ndarray] = {"epoch": np.asarray(self.epoch, dtype=np.int64)}
        out["labels"] = np.asarray(self.labels)
        if self.cross is not None:
            out["cross"] = np.asarray(self.cross)
        for name in ("num_clusters", "centroids", "soft", "extra", "metrics"):
            _flatten(name, getattr(self, name), out)
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> "LabelSet":
        """Inverse of :meth:`to_dict`."""
        nested: dict[str, Any] = {}
        for key, value in state.items():
            parts = key.split(_SEP)
            node = nested
            for part in parts[:-1]:
                node = node.setdefault(_decode(part), {})
            node[_decode(parts[-1])] = np.asarray(value)
        return cls(
            epoch=int(nested["epoch"]),
            labels=nested["labels"],
            cross=nested.get("cross"),
            num_clusters={int(m): int(c) for m, c in nested.get("num_clusters", {}).items()},
            centroids=nested.get("centroids", {}),
            soft=nested.get("soft", {}),
            extra=nested.get("extra", {}),
            metrics={str(k): float(v) for k, v in nested.get("metrics", {}).items()},
        )


def _encode(key: Any) -> str:
    if isinstance(key, tuple):
        return _TUPLE.join(str(part) for part in key)
    return str(key)


def _decode(text: str) -> Any:
    parts = text.split(_TUPLE)
    if len(parts) > 1:
        return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)
    return int(text) if text.lstrip("-").isdigit() else text


def _flatten(prefix: str, value: Any, out: dict[str, np.ndarray]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(prefix + _SEP + _encode(key), item, out)
    else:
        out[prefix] = np.asarray(value)
