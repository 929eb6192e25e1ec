"""Sinkhorn–Knopp optimal transport with uniform marginals, in the log domain.

Follows the MULT/SALCR solver: ``K = exp(-lam * cost)``, alternate
``alpha = (1/N) / (K beta)`` and ``beta = (1/C) / (Kᵀ alpha)``, at most ``max_iter`` steps; the error
``Σ |beta / beta_new - 1|`` is measured every 10th step (as in the public code) and the loop stops once
it is <= ``tol``. Numerical safety: the scalings are kept as logarithms and every product with K is a
log-sum-exp, so ``exp(-lam * cost)`` never underflows (the same iterates as the naive solver). The dense
solver first tries a row-shifted kernel ``exp(-lam * (cost - min_j cost))`` (matrix-vector products, the
shift folded into alpha) and falls back to log-sum-exp only when a column of it would underflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import logsumexp

ERROR_EVERY = 10
_SAFE_KERNEL = 1e-100  # smallest column maximum of the row-shifted kernel for the fast (non-log) path


def sinkhorn_log_scalings(
    cost: np.ndarray, lam: float, *, max_iter: int = 500, tol: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """``(log_alpha (N,), log_beta (C,))`` of the transport plan ``diag(alpha) K diag(beta)`` (dense cost)."""
    scaled = float(lam) * np.asarray(cost, dtype=np.float64)
    n, c = scaled.shape
    shift = scaled.min(axis=1)
    kernel = np.exp(-(scaled - shift[:, None]))  # row-shifted kernel: every row's largest entry is 1
    if kernel.max(axis=0).min() >= _SAFE_KERNEL:
        # Fast path: matrix-vector products with the row-shifted kernel (alpha absorbs the shift).
        return _iterate(
            lambda log_beta: -np.log(n) + shift - np.log(kernel @ np.exp(log_beta)),
            lambda log_alpha: -np.log(c) - np.log(np.exp(log_alpha - shift) @ kernel),
            c,
            max_iter,
            tol,
        )
    log_k = -scaled  # some column underflows even after the shift: log-sum-exp throughout
    return _iterate(
        lambda log_beta: -np.log(n) - logsumexp(log_k + log_beta[None, :], axis=1),
        lambda log_alpha: -np.log(c) - logsumexp(log_k + log_alpha[:, None], axis=0),
        c,
        max_iter,
        tol,
    )


def transport_argmax(cost: np.ndarray, lam: float, *, max_iter: int = 500, tol: float = 0.1) -> np.ndarray:
    """Row-wise argmax (int64) of the Sinkhorn plan: ``argmax_j (-lam·cost_ij + log beta_j)``."""
    if cost.shape[0] == 0 or cost.shape[1] == 0:
        return np.full(cost.shape[0], -1, dtype=np.int64)
    _, log_beta = sinkhorn_log_scalings(cost, lam, max_iter=max_iter, tol=tol)
    return np.argmax(-float(lam) * np.asarray(cost, dtype=np.float64) + log_beta[None, :], axis=1).astype(np.int64)


def sparse_sinkhorn_plan(cost: Any, lam: float, *, max_iter: int = 500, tol: float = 0.1) -> sparse.csr_matrix:
    """Sinkhorn plan restricted to the stored entries of a sparse cost (CSR; absent = infinite cost).

    Every row and every column must hold at least one entry. Returns the plan as CSR (float64).
    """
    csr = sparse.csr_matrix(cost, dtype=np.float64)
    csr.sort_indices()
    n, c = csr.shape
    log_k = -float(lam) * csr.data
    rows = np.repeat(np.arange(n), np.diff(csr.indptr))
    cols = csr.indices
    col_order = np.argsort(cols, kind="stable")
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=c))])
    if (np.diff(csr.indptr) == 0).any() or (np.diff(col_ptr) == 0).any():
        raise ValueError("sparse_sinkhorn_plan needs at least one entry in every row and column")
    log_alpha, log_beta = _iterate(
        lambda log_beta: -np.log(n) - segment_logsumexp(log_k + log_beta[cols], csr.indptr),
        lambda log_alpha: -np.log(c) - segment_logsumexp((log_k + log_alpha[rows])[col_order], col_ptr),
        c,
        max_iter,
        tol,
    )
    plan = np.exp(log_k + log_alpha[rows] + log_beta[cols])
    return sparse.csr_matrix((plan, cols.copy(), csr.indptr.copy()), shape=(n, c))


def segment_logsumexp(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """log-sum-exp of each non-empty segment ``values[indptr[i]:indptr[i+1]]`` (vectorised with reduceat)."""
    starts = indptr[:-1]
    peak = np.maximum.reduceat(values, starts)
    lengths = np.diff(indptr)
    shifted = np.exp(values - np.repeat(peak, lengths))
    return peak + np.log(np.add.reduceat(shifted, starts))


def _iterate(alpha_step: Any, beta_step: Any, c: int, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    log_beta = np.full(c, -np.log(c))
    log_alpha = alpha_step(log_beta)
    error = np.inf
    for step in range(max_iter):
        if error <= tol:
            break
        log_alpha = alpha_step(log_beta)
        new_beta = beta_step(log_alpha)
        if step % ERROR_EVERY == 0:
            error = float(np.abs(np.exp(log_beta - new_beta) - 1.0).sum())
        log_beta = new_beta
    return log_alpha, log_beta
