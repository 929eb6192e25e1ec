"""Cross-modality ReID metrics (CMC, mAP, mINP), vectorised over blocks of queries.

The numbers equal the field's reference ``eval_sysu`` / ``eval_regdb`` / ``eval_llcm``
(AGW / SDCL / MULT / DEEN ``eval_metrics.py``) to the last bit when the distances have no
ties: per-query average precision is summed over exactly the same compacted array (so NumPy's
pairwise summation groups the terms identically), CMC is a float32 count divided by the number
of valid queries, and mAP / mINP are ``np.mean`` over valid queries in query order. Two
deliberate differences: ties are broken stably (lower gallery index first; the reference's
default quicksort leaves tie order to the platform), and the CMC always has ``max_rank``
entries (the reference shortens it to the gallery size; here the curve is padded with its last
value, which is what a longer gallery without further matches would give).

Arrays in, arrays out: no torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raytrain_vireid.errors import UserError

# Removal rules: which gallery items are dropped from a query's ranking.
NO_REMOVAL = "none"
SYSU_REMOVAL = "sysu"  # a camera-3 query drops every camera-2 gallery image
SAME_PID_CAMERA_REMOVAL = "same_pid_camera"  # drop gallery items with the query's pid AND camera (LLCM)
_RULES = (NO_REMOVAL, SYSU_REMOVAL, SAME_PID_CAMERA_REMOVAL)

# Elements of one (queries x gallery) block; bounds memory at ~100 MB whatever the matrix size.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class QueryRanks:
    """Per-query ranking facts after removal (arrays of length num_queries).

    ``valid``: the query has at least one positive left. ``first_rank``: 0-based rank of the first
    positive among the kept gallery items (standard CMC). ``first_id_rank``: 0-based rank of the
    true identity among the distinct identities in rank order (deduplicated CMC). ``ap``/``inp``:
    average precision and inverse negative penalty. Entries of invalid queries are meaningless.
    """

    valid: np.ndarray
    first_rank: np.ndarray
    first_id_rank: np.ndarray
    ap: np.ndarray
    inp: np.ndarray


def eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20, *, standard_cmc: bool = False):
    """SYSU-MM01 protocol: ``(cmc, mAP, mINP)``.

    For a query from camera 3 every camera-2 gallery image is removed. The returned CMC counts
    distinct identities in rank order (the reference code's curve); ``standard_cmc=True`` gives the
    standard, non-deduplicated CMC instead (labelled as such by the caller). mAP/mINP use the full
    ranking after removal; queries with no positive left are skipped.
    """
    ranks = rank_queries(distmat, q_pids, g_pids, q_camids, g_camids, rule=SYSU_REMOVAL)
    return summarize(ranks, max_rank, dedup=not standard_cmc)


def eval_llcm(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 20, *, standard_cmc: bool = False):
    """LLCM protocol: ``(cmc, mAP, mINP)``; gallery items with the query's pid and camera are removed.

    Like the reference ``eval_llcm`` the default CMC counts distinct identities
    (``standard_cmc=True`` for the standard curve).
    """
    ranks = rank_queries(distmat, q_pids, g_pids, q_camids, g_camids, rule=SAME_PID_CAMERA_REMOVAL)
    return summarize(ranks, max_rank, dedup=not standard_cmc)


def eval_regdb(distmat, q_pids, g_pids, max_rank: int = 20):
    """RegDB protocol: ``(cmc, mAP, mINP)``; no removal, standard CMC."""
    ranks = rank_queries(distmat, q_pids, g_pids, rule=NO_REMOVAL)
    return summarize(ranks, max_rank, dedup=False)


def summarize(ranks: QueryRanks, max_rank: int, *, dedup: bool):
    """Average per-query facts over valid queries: ``(cmc float32 (max_rank,), mAP, mINP)``."""
    if max_rank < 1:
        raise UserError(f"max_rank: must be at least 1, got {max_rank}")
    valid = ranks.valid
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise UserError("distmat: no query identity appears in the gallery (after removal)")
    first = (ranks.first_id_rank if dedup else ranks.first_rank)[valid]
    hits = np.cumsum(np.bincount(first[first < max_rank], minlength=max_rank))
    # float32 count / float, as the reference (sum of float32 0/1 rows divided by num_valid_q).
    cmc = hits.astype(np.float32) / float(num_valid)
    return cmc, float(np.mean(ranks.ap[valid])), float(np.mean(ranks.inp[valid]))


def rank_queries(distmat, q_pids, g_pids, q_camids=None, g_camids=None, *, rule: str = NO_REMOVAL,
                 block_elements: int = _BLOCK_ELEMENTS) -> QueryRanks:
    """Rank every query's gallery (stable, smaller distance first), apply ``rule``, collect per-query facts."""
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise UserError(f"distmat: expected a 2-D (queries, gallery) array, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    q_pids = _vector(q_pids, num_q, "q_pids")
    g_pids = _vector(g_pids, num_g, "g_pids")
    if rule not in _RULES:
        raise UserError(f"rule: unknown removal rule {rule!r}; expected one of {', '.join(_RULES)}")
    if rule != NO_REMOVAL:
        q_camids = _vector(q_camids, num_q, "q_camids")
        g_camids = _vector(g_camids, num_g, "g_camids")
    out = QueryRanks(valid=np.zeros(num_q, bool), first_rank=np.zeros(num_q, np.int64),
                     first_id_rank=np.zeros(num_q, np.int64), ap=np.zeros(num_q), inp=np.zeros(num_q))
    if num_g == 0:
        return out
    everything = np.arange(num_g)
    if rule == SYSU_REMOVAL:
        # The SYSU removal depends only on the two cameras, so a camera-3 query is ranked against the
        # gallery without its camera-2 columns: the same kept ranking, with no per-query mask.
        cam3 = q_camids == 3
        groups = [(np.flatnonzero(cam3), np.flatnonzero(g_camids != 2)), (np.flatnonzero(~cam3), everything)]
    else:
        groups = [(np.arange(num_q), everything)]
    for queries, columns in groups:
        if len(columns) == 0:
            continue
        g_sub = g_pids[columns]
        _, g_codes = np.unique(g_sub, return_inverse=True)
        step = max(1, block_elements // len(columns))
        for start in range(0, len(queries), step):
            rows = queries[start:start + step]
            block = distmat[rows] if columns is everything else distmat[np.ix_(rows, columns)]
            order, match = _rank_block(block, g_sub, q_pids[rows])
            removed = None
            if rule == SAME_PID_CAMERA_REMOVAL:
                removed = match & (g_camids[columns][order] == q_camids[rows, None])
            _fill_rows(out, rows, match, removed, g_codes[order], int(g_codes.max()) + 1)
    return out


def _rank_block(block: np.ndarray, g_pids: np.ndarray, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank order of each row and its positives, equal to ``np.argsort(kind="stable")`` where it matters.

    A fast unstable sort is used; the order among equal distances can only change a result when a
    positive is tied with a neighbour in the ranking, so exactly those rows are re-sorted stably.
    """
    if np.isnan(block).any():
        raise UserError("distmat: contains NaN (features diverged?)")
    order = np.argsort(block, axis=1)
    match = g_pids[order] == q_pids[:, None]
    r, j = np.nonzero(match)
    last = block.shape[1] - 1
    value = block[r, order[r, j]]
    tie = (j > 0) & (block[r, order[r, np.maximum(j - 1, 0)]] == value)
    tie |= (j < last) & (block[r, order[r, np.minimum(j + 1, last)]] == value)
    tied = np.unique(r[tie])
    if len(tied):
        order[tied] = np.argsort(block[tied], axis=1, kind="stable")
        match[tied] = g_pids[order[tied]] == q_pids[tied, None]
    return order, match


def _fill_rows(out: QueryRanks, rows: np.ndarray, match: np.ndarray, removed: np.ndarray | None,
               codes: np.ndarray, num_ids: int) -> None:
    """Per-query facts for ``rows``; ``match``/``removed``/``codes`` are (b, g) in each row's rank order.

    Works on the sparse list of positives (removed items are always positives of the query).
    """
    b, g = match.shape
    r, j = np.nonzero(match)  # row-major: each row's positives in rank order
    rank = j + 1  # 1-based rank among kept items
    first_raw = _row_starts(r, b)
    if removed is not None:
        gone = removed[r, j]
        gone_before = np.cumsum(gone) - gone
        gone_before = gone_before - gone_before[first_raw[r]]  # removed positives earlier in the same row
        rank = rank - gone_before
        kept_len = g - removed.sum(axis=1)
        r, j, rank, raw_pos = r[~gone], j[~gone], rank[~gone], np.flatnonzero(~gone)
    else:
        kept_len = np.full(b, g)
        raw_pos = np.arange(len(r))
    num_rel = np.bincount(r, minlength=b)
    valid = num_rel > 0
    first = _row_starts(r, b)
    hit_no = np.arange(len(r)) - first[r] + 1  # 1-based order of each kept positive within its row
    head, tail = first[valid], first[valid] + num_rel[valid] - 1

    out.valid[rows] = valid
    out.first_rank[rows[valid]] = rank[head] - 1
    out.inp[rows[valid]] = num_rel[valid] / rank[tail]

    # Precision at each kept positive, laid out in the kept-only ranking and summed over exactly the
    # kept length: the reference's array, hence the same pairwise summation and the same bits.
    precision = np.zeros((b, g))
    precision[r, rank - 1] = hit_no / rank
    lengths = np.unique(kept_len[valid])
    if len(lengths) == 1:
        sums = precision[:, : lengths[0]].sum(axis=1)
    else:
        sums = np.zeros(b)
        for length in lengths:  # a few distinct kept lengths
            sel = np.flatnonzero(valid & (kept_len == length))
            sums[sel] = precision[sel, :length].sum(axis=1)
    out.ap[rows[valid]] = sums[valid] / num_rel[valid]

    # Distinct identities ranked before the first kept positive (the reference's deduplicated CMC).
    # Items before it are negatives or removed positives; the latter are the query's own identity.
    first_pos = np.zeros(b, np.int64)
    first_pos[valid] = j[head]
    own_removed_before = np.zeros(b, bool)
    own_removed_before[valid] = raw_pos[head] > first_raw[r[head]]
    before = np.flatnonzero(np.arange(g) < first_pos[:, None])  # flat (row, position) indices
    seen = np.zeros((b, num_ids), bool)
    seen.reshape(-1)[codes.reshape(-1)[before] + (before // g) * num_ids] = True
    out.first_id_rank[rows] = np.count_nonzero(seen, axis=1) - own_removed_before


def _row_starts(r: np.ndarray, b: int) -> np.ndarray:
    """Index of each row's first entry in a row-major list of row ids ``r`` (rows 0..b-1)."""
    counts = np.bincount(r, minlength=b)
    return np.cumsum(counts) - counts


def _vector(values, n: int, name: str) -> np.ndarray:
    """1-D array of length ``n`` or a one-line error naming the argument."""
    if values is None:
        raise UserError(f"{name}: required for this protocol")
    arr = np.asarray(values).reshape(-1)
    if arr.shape[0] != n:
        raise UserError(f"{name}: expected {n} entries to match distmat, got {arr.shape[0]}")
    return arr
