"""Time the vectorised ReID metrics against the plain per-query loop reference of the tests.

    .venv/bin/python benchmarks/eval_metrics.py [--big 20000] [--loop-queries 2000]

1. SYSU-MM01 shape: 3,803 infrared queries (cams 3/6) x 301 visible gallery images (96 ids,
   cams 1/2/4/5), 10 trials (a new gallery per trial), ``eval_sysu`` vs the loop.
2. ``eval_regdb`` on a ``--big`` x ``--big`` float32 distance matrix (bounded memory: query blocks);
   the loop reference runs on the first ``--loop-queries`` rows only (the full loop takes minutes)
   and the ratio is taken on those same rows.
Features are synthetic identity centres plus noise (realistic rank structure, no ties).
Prints times (best of --repeat), the ratio, and the largest absolute difference of the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_eval_metrics import loop_reference  # noqa: E402  (the plain per-query transcription)

from raytrain_vireid.cpu import cpu_model  # noqa: E402
from raytrain_vireid.eval.metrics import eval_regdb, eval_sysu  # noqa: E402


def machine() -> str:
    model = cpu_model() or "unknown"
    return (f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}, NumPy {np.__version__}")


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def identity_features(rng, centres, pids, noise):
    feats = centres[pids] + noise * rng.standard_normal((len(pids), centres.shape[1]))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(a[0], np.float64) - b[0]))), abs(a[1] - b[1]), abs(a[2] - b[2]))


def sysu_case(repeat: int) -> None:
    rng = np.random.default_rng(0)
    ids = np.arange(96)
    centres = rng.standard_normal((96, 64))
    q_pids, q_cams = rng.choice(ids, 3803), rng.choice([3, 6], 3803)
    q = identity_features(rng, centres, q_pids, 1.2).astype(np.float64)
    trials = []
    for _ in range(10):
        g_pids, g_cams = np.repeat(ids, 4)[:301], np.tile([1, 2, 4, 5], 96)[:301]
        g = identity_features(rng, centres, g_pids, 1.2).astype(np.float64)
        trials.append((-np.matmul(q, g.T), q_pids, g_pids, q_cams, g_cams))
    vec_t, vec = best_time(lambda: [eval_sysu(*t) for t in trials], repeat)
    loop_t, loop = best_time(lambda: [loop_reference(*t, "sysu", 20, True) for t in trials], 1)
    diff = max(max_diff(a, b) for a, b in zip(vec, loop))
    print(f"eval_sysu 3803x301 x10 trials: vectorised {vec_t:.3f} s, loop {loop_t:.3f} s, "
          f"ratio {loop_t / vec_t:.1f}x, max |diff| {diff:.3g} (mAP trial 0 = {vec[0][1]:.4f})")


def big_case(n: int, loop_queries: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((n // 10, 64))
    q_pids, g_pids = rng.integers(0, n // 10, n), rng.integers(0, n // 10, n)
    q, g = identity_features(rng, centres, q_pids, 1.5), identity_features(rng, centres, g_pids, 1.5)
    distmat = -np.matmul(q, g.T)  # float32, n x n
    full_t, full = best_time(lambda: eval_regdb(distmat, q_pids, g_pids), 1)
    print(f"eval_regdb {n}x{n} float32: vectorised {full_t:.2f} s (mAP {full[1]:.4f}); "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB "
          f"(distance matrix alone {distmat.nbytes / 2**30:.2f} GiB)")
    sub = distmat[:loop_queries], q_pids[:loop_queries], g_pids
    vec_t, vec = best_time(lambda: eval_regdb(*sub), repeat)
    loop_t, loop = best_time(lambda: loop_reference(sub[0], sub[1], sub[2], None, None, "none", 20, False), 1)
    print(f"eval_regdb {loop_queries}x{n} subset: vectorised {vec_t:.3f} s, loop {loop_t:.3f} s, "
          f"ratio {loop_t / vec_t:.1f}x, max |diff| {max_diff(vec, loop):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--loop-queries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("timing: time.perf_counter, best of --repeat for the vectorised code, one run of the loop")
    sysu_case(args.repeat)
    big_case(args.big, args.loop_queries, args.repeat)


if __name__ == "__main__":
    main()
