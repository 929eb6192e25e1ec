"""Pseudo-identity batch samplers, deterministic across DDP ranks.

Every rank builds the same sampler from the same labels and seed; ``batch(epoch, iteration)`` draws
the *global* batch from one generator seeded by ``(seed, epoch, iteration)`` and returns this rank's
share, so ranks never need to communicate and never train on the same identities in one step (unless a
modality has fewer pseudo-identities than there are ranks: then they are drawn with replacement, one per rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import INFRARED, VISIBLE


@dataclass(frozen=True)
class _Groups:
    """Row indices grouped by label: ``rows[starts[g]:starts[g] + counts[g]]`` belong to ``ids[g]``."""

    ids: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    rows: np.ndarray

    @classmethod
    def build(cls, labels: np.ndarray, rows: np.ndarray) -> "_Groups":
        keep = labels >= 0
        labels, rows = labels[keep], rows[keep]
        order = np.argsort(labels, kind="stable")
        labels, rows = labels[order], rows[order]
        ids, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        return cls(ids, starts, counts, rows)

    def draw(self, rng: np.random.Generator, group: np.ndarray, k: int) -> np.ndarray:
        """``k`` rows of each group in ``group`` (without replacement when the group has ≥ k rows)."""
        counts = self.counts[group]
        # One uniform key per candidate: taking the k smallest keys of a group is sampling without
        # replacement; groups smaller than k are topped up with replacement, as cluster-contrast does.
        offsets = np.empty((len(group), k), dtype=np.int64)
        for g, (count, start) in enumerate(zip(counts, self.starts[group])):
            if count >= k:
                offsets[g] = rng.choice(count, size=k, replace=False)
            else:
                offsets[g] = np.concatenate([rng.permutation(count), rng.integers(0, count, k - count)])
            offsets[g] += start
        return self.rows[offsets]

    def __len__(self) -> int:
        return len(self.ids)


def _pick(rng: np.random.Generator, available: int, wanted: int, world_size: int) -> np.ndarray:
    """Positions of the step's groups: ``wanted`` distinct ones (all, when fewer are available), but at least one
    per rank, repeating groups when fewer than ``world_size`` exist. A rank with an empty share would crash its
    DataLoader; collapsed labels late in a run can leave a modality with a single pseudo-identity (HIL did)."""
    size = max(min(wanted, available), world_size)
    return rng.choice(available, size=size, replace=size > available)


def _share(n: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous share of ``n`` items (shares differ by at most one)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class PseudoIdentitySampler:
    """P pseudo-identities × K instances per modality, independently for visible and infrared.

    ``labels`` are own-modality pseudo-labels over all training rows (−1 never sampled) and
    ``modality`` the rows' modality. ``ids_per_modality`` is the global P, split over ranks.
    """

    def __init__(
        self,
        labels: np.ndarray,
        modality: np.ndarray,
        ids_per_modality: int,
        instances: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        modality = np.asarray(modality)
        rows = np.arange(len(labels))
        self.groups = {m: _Groups.build(labels[modality == m], rows[modality == m]) for m in (VISIBLE, INFRARED)}
        for m, groups in self.groups.items():
            if len(groups) == 0:
                raise ValueError(f"no pseudo-identity with a valid label in modality {m}")
        self.ids_per_modality = ids_per_modality
        self.instances = instances
        self.rank, self.world_size, self.seed = rank, world_size, seed

    def batch(self, epoch: int, iteration: int) -> dict[int, np.ndarray]:
        """This rank's rows per modality, K consecutive rows per identity."""
        rng = np.random.default_rng([self.seed, epoch, iteration])
        out = {}
        for m in (VISIBLE, INFRARED):
            groups = self.groups[m]
            chosen = _pick(rng, len(groups), self.ids_per_modality, self.world_size)
            rows = groups.draw(rng, chosen, self.instances)
            out[m] = rows[_share(len(chosen), self.rank, self.world_size)].reshape(-1)
        return out


class CrossPairedSampler:
    """Same pseudo-identity at aligned positions in the visible and infrared halves (SALCR stage 2).

    Half of the P identities are visible-anchored (a visible cluster; its K visible rows, and K
    infrared rows whose cross label maps to that cluster), half infrared-anchored (the reverse).
    Only clusters with at least one cross-mapped instance are eligible. ``cross`` holds every row's
    label in the other modality's space. Position i of the visible rows and position i of the
    infrared rows share a pseudo-identity.
    """

    def __init__(
        self,
        labels: np.ndarray,
        cross: np.ndarray,
        modality: np.ndarray,
        ids_per_modality: int,
        instances: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        cross = np.asarray(cross, dtype=np.int64)
        modality = np.asarray(modality)
        rows = np.arange(len(labels))
        vis, ir = modality == VISIBLE, modality == INFRARED
        # Groups in the visible label space: visible rows by own label, infrared rows by cross label.
        self.space = {
            VISIBLE: (_Groups.build(labels[vis], rows[vis]), _Groups.build(cross[ir], rows[ir])),
            INFRARED: (_Groups.build(labels[ir], rows[ir]), _Groups.build(cross[vis], rows[vis])),
        }
        self.eligible = {}
        for anchor, (own, other) in self.space.items():
            common = np.intersect1d(own.ids, other.ids)
            if len(common) == 0:
                raise ValueError(f"no cluster of modality {anchor} has a cross-mapped instance")
            self.eligible[anchor] = (np.searchsorted(own.ids, common), np.searchsorted(other.ids, common))
        self.ids_per_modality = ids_per_modality
        self.instances = instances
        self.rank, self.world_size, self.seed = rank, world_size, seed

    def batch(self, epoch: int, iteration: int) -> dict[int, np.ndarray]:
        """This rank's aligned rows: ``{VISIBLE: rows, INFRARED: rows}`` of equal length."""
        rng = np.random.default_rng([self.seed, epoch, iteration])
        half = max(1, self.ids_per_modality // 2)
        parts = {VISIBLE: [], INFRARED: []}
        for anchor in (VISIBLE, INFRARED):
            own, other = self.space[anchor]
            own_g, other_g = self.eligible[anchor]
            pick = _pick(rng, len(own_g), half, self.world_size)
            anchor_rows = own.draw(rng, own_g[pick], self.instances)
            partner_rows = other.draw(rng, other_g[pick], self.instances)
            share = _share(len(pick), self.rank, self.world_size)
            partner = INFRARED if anchor == VISIBLE else VISIBLE
            parts[anchor].append(anchor_rows[share].reshape(-1))
            parts[partner].append(partner_rows[share].reshape(-1))
        return {m: np.concatenate(parts[m]) for m in (VISIBLE, INFRARED)}
