"""k-reciprocal Jaccard distance (re-ranking) as a sparse O(N·k) graph.

Same semantics as the dense ``compute_jaccard_distance`` of cluster-contrast (Zhong et al. re-ranking
without the original-distance blend), written once against ``backend.xp`` so NumPy and CuPy run the
same code, with no per-sample Python loop:

1. ``rank`` = the k1 nearest neighbours of every point (squared L2, self normally first).
2. ``R(i, k)`` = the j among ``rank[i, :k+1]`` whose own row ``rank[j, :k+1]`` holds i.
3. Expansion of ``R(i, k1)`` by every ``H = R(c, round(k1/2))`` of a member c with
   ``|H ∩ R(i, k1)| > 2/3 |H|``.
4. ``V[i, e] = softmax(-(2 - 2 x_i·x_e))`` over the expanded set e.
5. Query expansion (k2 != 1): ``V[i] = mean(V[rank[i, :k2]])`` (a sparse row-stochastic product).
6. ``d_ij = 1 - m_ij / (2 - m_ij)`` with ``m_ij = Σ_k min(V_ik, V_jk)``, clipped at 0; pairs that
   share no column have d = 1 and are not stored.

Step 6 walks the column-wise inverted index of V: every stored ``V_ik`` is paired with the entries of
column k at or below row i (``j >= i``), in row blocks bounded by ``_PAIR_BUDGET``; the upper triangle
is mirrored at the end, so the result is exactly symmetric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, get_backend, repeat_each, segment_sums
from .knn import knn_search

# Pairs / gathered elements handled per block: bounds the temporary memory of every blocked step
# (about 2^21 pairs × ~40 bytes ≈ 80 MB at most).
_PAIR_BUDGET = 1 << 21
_PAD_LOGIT = -1e30


def jaccard_distance(
    features: Any,
    k1: int = 30,
    k2: int = 6,
    *,
    backend: Backend | None = None,
    cutoff: float | None = None,
    dense: bool = False,
    knn: tuple[Any, Any] | None = None,
) -> Any:
    """k-reciprocal Jaccard distances of the rows of ``features`` (L2-normalised, float32).

    Returns a CSR matrix of the backend (SciPy or CuPy) holding every pair with d < 1 (only d <= cutoff
    when ``cutoff`` is given) and the whole diagonal as explicit entries (also when 0); absent = 1.
    ``dense=True`` returns the full N×N float32 array instead (for small N). ``knn=(sq_dist, index)``
    reuses a precomputed k1-nearest-neighbour search (only ``index`` is read).
    """
    backend = backend or get_backend("cpu")
    xp = backend.xp
    x = xp.ascontiguousarray(backend.asarray(features, dtype=xp.float32))
    n = x.shape[0]
    if k1 < 1 or k2 < 1:
        raise ValueError(f"jaccard_distance needs k1 >= 1 and k2 >= 1, got k1={k1}, k2={k2}")
    rank = knn_search(x, k1, backend=backend)[1] if knn is None else backend.asarray(knn[1], dtype=xp.int64)
    if rank.shape[0] != n:
        raise ValueError(f"knn index has {rank.shape[0]} rows for {n} features")
    rows, cols = expanded_pairs(rank, k1, xp)
    v = weights(x, rows, cols, backend=backend)
    v = query_expansion(v, rank, k2, backend=backend)
    dist = min_sum_distance(v, backend=backend, cutoff=cutoff)
    if not dense:
        return dist
    out = xp.ones((n, n), dtype=xp.float32)
    rows = repeat_each(xp.arange(n), xp.diff(dist.indptr).astype(xp.int64), xp)
    out[rows, dist.indices] = dist.data
    return out


def reciprocal_neighbours(rank: Any, k: int, xp: Any = np) -> Any:
    """``R(i, k)`` for every row, as ``rank[:, :k+1]`` with non-reciprocal entries set to -1."""
    n = rank.shape[0]
    forward = rank[:, : min(k + 1, rank.shape[1])]
    own = xp.arange(n, dtype=xp.int64)[:, None]
    # Row i lists j  <=>  key i*n + j is in the sorted set; ask for the reverse key j*n + i.
    listed = xp.sort((own * n + forward).ravel())
    return xp.where(_sorted_contains(listed, forward * n + own, xp), forward, -1)


def expanded_pairs(rank: Any, k1: int, xp: Any = np) -> tuple[Any, Any]:
    """Rows and columns (sorted by row, then column) of the expanded k-reciprocal sets."""
    n = rank.shape[0]
    recip = reciprocal_neighbours(rank, k1, xp)
    half = reciprocal_neighbours(rank, int(np.around(k1 / 2)), xp)
    m1, m2 = recip.shape[1], half.shape[1]
    # Membership of every h in R(i, k1) by direct comparison with the (at most k1) members of R(i, k1):
    # (B, m1, m2, m1) booleans per block, cheaper than a binary search over all N·k1 reciprocal pairs.
    step = max(1, _PAIR_BUDGET // (m1 * m2 * m1))
    keys = []
    for start in range(0, n, step):
        own = recip[start : start + step]
        rows = xp.arange(start, start + own.shape[0], dtype=xp.int64)
        cand_h = half[xp.maximum(own, 0)]  # (B, m1, m2): H of every candidate
        h_valid = (cand_h >= 0) & (own >= 0)[:, :, None]
        inside = (cand_h[:, :, :, None] == own[:, None, None, :]).any(axis=3) & h_valid
        accept = inside.sum(axis=2) > (2.0 / 3.0) * h_valid.sum(axis=2)
        block = xp.concatenate(
            [
                (rows[:, None] * n + own)[own >= 0],
                (rows[:, None, None] * n + cand_h)[h_valid & accept[:, :, None]],
            ]
        )
        keys.append(xp.unique(block))
    keys = xp.concatenate(keys)
    return keys // n, keys % n


def weights(x: Any, rows: Any, cols: Any, *, backend: Backend) -> Any:
    """Sparse CSR ``V``: softmax of ``-(2 - 2 x_i·x_e)`` over the expanded set e of every row i.

    ``rows, cols``: the expanded pairs, sorted by row then column (as :func:`expanded_pairs` returns).
    """
    xp = backend.xp
    n = x.shape[0]
    counts = xp.bincount(rows, minlength=n)
    indptr = _indptr(counts, xp)
    data = xp.empty(rows.shape[0], dtype=xp.float32)
    width = int(counts.max()) if n else 0
    step = max(1, _PAIR_BUDGET // max(width * x.shape[1], 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        lo, hi = int(indptr[start]), int(indptr[stop])
        # Padded (B, width) layout: slot s of row i holds its s-th expanded column, -1 past the end.
        # The block's own widest row sets the padding, so one wide row elsewhere costs nothing here.
        local = rows[lo:hi] - start
        slot = xp.arange(lo, hi, dtype=xp.int64) - indptr[rows[lo:hi]]
        padded = xp.full((stop - start, max(1, int(counts[start:stop].max()))), -1, dtype=xp.int64)
        padded[local, slot] = cols[lo:hi]
        valid = padded >= 0
        dots = xp.einsum("bd,bwd->bw", x[start:stop], x[xp.maximum(padded, 0)])
        # A finite fill for padding (not -inf): an empty row then gives no NaN warnings; it is masked out.
        logits = xp.where(valid, -(2.0 - 2.0 * dots), _PAD_LOGIT).astype(xp.float32)
        expo = xp.exp(logits - logits.max(axis=1, keepdims=True))
        data[lo:hi] = (expo / expo.sum(axis=1, keepdims=True))[valid]
    return backend.sparse.csr_matrix((data, cols, indptr), shape=(n, n))


def query_expansion(v: Any, rank: Any, k2: int, *, backend: Backend) -> Any:
    """``V[i] <- mean of V[rank[i, :k2]]`` as the product of a row-stochastic sparse matrix with V."""
    if k2 == 1:
        return v
    xp = backend.xp
    n = v.shape[0]
    cols = xp.ascontiguousarray(rank[:, :k2]).ravel()
    width = cols.shape[0] // max(n, 1)
    q = backend.sparse.csr_matrix(
        (xp.full(cols.shape[0], 1.0 / width, dtype=xp.float32), cols, xp.arange(0, n * width + 1, width)),
        shape=(n, n),
    )
    out = (q @ v).tocsr()
    out.sort_indices()
    return out


def min_sum_distance(v: Any, *, backend: Backend, cutoff: float | None = None) -> Any:
    """Symmetric CSR of ``1 - m/(2 - m)``, ``m_ij = Σ_k min(V_ik, V_jk)``, over the pairs sharing a column."""
    xp = backend.xp
    n = v.shape[0]
    row_counts = xp.diff(v.indptr).astype(xp.int64)
    rows = repeat_each(xp.arange(n, dtype=xp.int64), row_counts, xp)
    cols = v.indices.astype(xp.int64)
    vals = v.data
    # Column-wise inverted index: CSR entries in (column, row) order.
    order = xp.argsort(cols * n + rows)
    col_ptr = _indptr(xp.bincount(cols, minlength=n), xp)
    pos = xp.empty_like(order)
    pos[order] = xp.arange(order.shape[0], dtype=xp.int64)
    csc_rows, csc_vals = rows[order].astype(xp.int32), vals[order]
    # Partners of entry (i, k) with j >= i: CSC positions pos .. col_ptr[k+1]-1 (rows sorted per column).
    span = col_ptr[cols + 1] - pos
    row_start = _indptr(xp.bincount(rows, weights=span, minlength=n), xp)
    bounds = _block_bounds(row_start, xp)
    diag = xp.ones(n, dtype=xp.float32)  # a row of V with no entry: d_ii = 1 as in the reference
    up_counts, up_cols, up_dist = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo, hi = int(v.indptr[a]), int(v.indptr[b])
        lens = span[lo:hi]
        total = int(lens.sum())
        offsets = xp.cumsum(lens) - lens
        flat = repeat_each(pos[lo:hi] - offsets, lens, xp) + xp.arange(total, dtype=xp.int64)
        own = repeat_each((rows[lo:hi] - a).astype(xp.int32), lens, xp)
        mins = xp.minimum(repeat_each(vals[lo:hi], lens, xp), csc_vals[flat])
        block_rows, block_cols, m = _pair_sums(own * xp.int32(n) + csc_rows[flat], mins, n, xp)
        block_rows += a
        d = xp.maximum(1 - m / (2 - m), 0).astype(xp.float32)
        keep = (d < 1) if cutoff is None else (d <= cutoff)
        # The strict upper triangle; the diagonal (always kept, even when 0) goes to its own array.
        diag[block_rows[block_rows == block_cols]] = d[block_rows == block_cols]
        keep &= block_rows != block_cols
        up_counts.append(xp.bincount(block_rows[keep] - a, minlength=b - a))
        up_cols.append(block_cols[keep].astype(_index_dtype(n, xp)))
        up_dist.append(d[keep])
    upper = backend.sparse.csr_matrix(
        (xp.concatenate(up_dist), xp.concatenate(up_cols), _indptr(xp.concatenate(up_counts), xp)), shape=(n, n)
    )
    return _symmetric(upper, diag, backend)


def _pair_sums(keys: Any, values: Any, n: int, xp: Any) -> tuple[Any, Any, Any]:
    """Sum ``values`` (float32, >= 0) per key ``row * n + col`` (int32 keys): rows, cols and sums of the
    distinct keys, in (row, col) order.

    Written by hand because it is the hot step of the min-sum: SciPy's COO → CSR conversion sorts the column
    indices of every row, about 60% of the min-sum's time at 20k points. Here each value's float32 bits are the
    low half of a 64-bit word whose high half is its key (little-endian layout), so one integer sort orders
    keys and values together.
    """
    pair = xp.empty((keys.shape[0], 2), dtype=xp.int32)
    pair[:, 0] = values.astype(xp.float32).view(xp.int32)
    pair[:, 1] = keys
    packed = pair.view(xp.int64).reshape(-1)
    packed.sort()
    pair = packed.view(xp.int32).reshape(-1, 2)
    sorted_keys = pair[:, 1]
    first = xp.ones(sorted_keys.shape[0], dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = xp.flatnonzero(first)
    sums = segment_sums(xp.ascontiguousarray(pair[:, 0]).view(xp.float32), starts, xp)
    unique = sorted_keys[starts].astype(xp.int64)
    return unique // n, unique % n, sums


def _block_bounds(row_start: Any, xp: Any) -> list[int]:
    """Row boundaries so each block holds at most ``_PAIR_BUDGET`` pairs (or a single row) and fewer than
    2^31 / N rows (the int32 keys of :func:`_pair_sums`)."""
    n = row_start.shape[0] - 1
    max_rows = max(1, (2**31 - 1) // max(n, 1))
    bounds = [0]
    while bounds[-1] < n:
        a = bounds[-1]
        b = int(xp.searchsorted(row_start, row_start[a] + _PAIR_BUDGET, side="right")) - 1
        bounds.append(min(n, max(b, a + 1), a + max_rows))
    return bounds


def _indptr(counts: Any, xp: Any) -> Any:
    return xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)])


def _symmetric(upper: Any, diag: Any, backend: Backend) -> Any:
    """Full CSR from the strict upper triangle and the diagonal, assembled by hand so explicit zeros stay.

    Row i of the result is [lower part (columns < i), diagonal, upper part (columns > i)]: the lower
    part is the transpose of ``upper`` (``tocsc`` is a plain counting transpose that keeps every
    entry), so each row is already sorted and no global sort is needed.
    """
    xp = backend.xp
    n = upper.shape[0]
    lower = upper.tocsc()  # CSC of upper == CSR of its transpose
    low_ptr, up_ptr = lower.indptr.astype(xp.int64), upper.indptr.astype(xp.int64)
    low_counts, up_counts = xp.diff(low_ptr), xp.diff(up_ptr)
    indptr = _indptr(low_counts + up_counts + 1, xp)
    start = indptr[:-1]
    indices = xp.empty(int(indptr[-1]), dtype=_index_dtype(n, xp))
    data = xp.empty(int(indptr[-1]), dtype=xp.float32)
    diag_dest = start + low_counts
    low_dest = repeat_each(start - low_ptr[:-1], low_counts, xp) + xp.arange(int(low_ptr[-1]), dtype=xp.int64)
    up_dest = repeat_each(diag_dest + 1 - up_ptr[:-1], up_counts, xp) + xp.arange(int(up_ptr[-1]), dtype=xp.int64)
    indices[low_dest], data[low_dest] = lower.indices, lower.data
    indices[up_dest], data[up_dest] = upper.indices, upper.data
    indices[diag_dest], data[diag_dest] = xp.arange(n, dtype=_index_dtype(n, xp)), diag
    return backend.sparse.csr_matrix((data, indices, indptr), shape=(n, n))


def _index_dtype(n: int, xp: Any) -> Any:
    return xp.int32 if n < 2**31 else xp.int64


def _sorted_contains(sorted_keys: Any, queries: Any, xp: Any) -> Any:
    """Elementwise ``queries in sorted_keys`` (same shape as ``queries``) by binary search."""
    if sorted_keys.shape[0] == 0:
        return xp.zeros(queries.shape, dtype=bool)
    at = xp.minimum(xp.searchsorted(sorted_keys, queries), sorted_keys.shape[0] - 1)
    return sorted_keys[at] == queries
