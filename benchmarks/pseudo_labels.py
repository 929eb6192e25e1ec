"""Benchmark: sparse k-reciprocal Jaccard + DBSCAN against the dense reference, on synthetic blobs.

Times every phase of the sparse path (kNN, reciprocal sets + expansion, weights, query expansion,
Jaccard min-sum, DBSCAN) in this process and, for N <= --dense-max, runs the dense loop reference
(tests/jaccard_reference.py) plus scikit-learn DBSCAN on the dense matrix in a FRESH subprocess on the
same features and the same kNN, so each implementation's peak RSS is its own. Peak memory is the
kernel's high-water mark VmHWM (/proc/self/status) read after each phase: it only grows, so the phase
that raises it is the one that set the peak. Prints speed and memory ratios, max |d_sparse - d_dense|
over all N² pairs, and label agreement (ARI, exact equality).

    .venv/bin/python benchmarks/pseudo_labels.py --n 20000 --dim 2048
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE_DIR = HERE.parent / "tests"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="number of points")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension")
    parser.add_argument("--clusters", type=int, default=0, help="number of blobs (default n // 20)")
    parser.add_argument("--noise", type=float, default=0.6, help="blob spread (norm of the noise vector)")
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--min-samples", type=int, default=4)
    parser.add_argument("--cutoff", action="store_true", help="keep only pairs with d <= eps (as relabel does)")
    parser.add_argument("--dense-max", type=int, default=20000, help="run the dense reference up to this N")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense-worker", metavar="DIR", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_threads(threads: int) -> None:
    """Thread count for BLAS / OpenMP; must run before NumPy is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: reset by exec, unlike ru_maxrss which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PhaseClock:
    """Wall time and peak-RSS high-water mark after each named phase."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def run(self, name, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows.append((name, time.perf_counter() - start, peak_rss_mb()))
        return out

    def seconds(self, name: str) -> float:
        return sum(sec for phase, sec, _ in self.rows if phase == name)

    def print(self, title: str) -> None:
        print(f"\n{title}")
        print(f"  {'phase':<28}{'seconds':>10}{'peak RSS MB':>14}")
        for name, sec, rss in self.rows:
            print(f"  {name:<28}{sec:>10.2f}{rss:>14.0f}")


def machine_line() -> str:
    import faiss
    import numpy
    import scipy
    import sklearn

    from raytrain_vireid.cpu import cpu_model

    model = cpu_model() or "unknown CPU"
    return (
        f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}, NumPy {numpy.__version__}, "
        f"SciPy {scipy.__version__}, scikit-learn {sklearn.__version__}, faiss {faiss.__version__}"
    )


def blobs(n: int, dim: int, clusters: int, noise: float, seed: int):
    """L2-normalised Gaussian blobs around random unit centres; returns (features, true blob id)."""
    import numpy as np

    from raytrain_vireid.pseudo.knn import l2_normalize

    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((clusters, dim), dtype=np.float32))
    truth = rng.integers(0, clusters, n)
    features = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 8192):  # blocks keep the float32 noise temporaries small
        stop = min(n, start + 8192)
        noise_block = rng.standard_normal((stop - start, dim), dtype=np.float32) * (noise / dim**0.5)
        features[start:stop] = l2_normalize(centres[truth[start:stop]] + noise_block)
    return features, truth


def run_sparse(args: argparse.Namespace, features, clock: PhaseClock):
    from raytrain_vireid.pseudo import jaccard
    from raytrain_vireid.pseudo.backend import get_backend
    from raytrain_vireid.pseudo.cluster import dbscan
    from raytrain_vireid.pseudo.knn import knn_search

    backend = get_backend("cpu")
    knn = clock.run("kNN (faiss IndexFlatL2)", knn_search, features, args.k1, backend=backend)
    rows, cols = clock.run("reciprocal sets + expansion", jaccard.expanded_pairs, knn[1], args.k1)
    v = clock.run("weights (softmax)", jaccard.weights, features, rows, cols, backend=backend)
    del rows, cols
    v = clock.run("query expansion", jaccard.query_expansion, v, knn[1], args.k2, backend=backend)
    cutoff = args.eps if args.cutoff else None
    dist = clock.run("Jaccard min-sum", jaccard.min_sum_distance, v, backend=backend, cutoff=cutoff)
    del v
    labels = clock.run("DBSCAN (sklearn, sparse)", dbscan, dist, args.eps, args.min_samples, backend=backend)
    return knn, dist, labels


def dense_worker(folder: Path) -> None:
    """Subprocess body: dense reference + dense DBSCAN, compared with the saved sparse results."""
    import numpy as np
    import scipy.sparse
    from sklearn.cluster import DBSCAN
    from sklearn.metrics import adjusted_rand_score

    sys.path.insert(0, str(REFERENCE_DIR))
    from jaccard_reference import dense_jaccard

    config = json.loads((folder / "config.json").read_text())
    features, rank = np.load(folder / "features.npy"), np.load(folder / "rank.npy")
    sparse = scipy.sparse.load_npz(folder / "sparse.npz").tocsr()
    sparse_labels = np.load(folder / "labels.npy")
    clock = PhaseClock()
    dense = clock.run("dense Jaccard (reference)", dense_jaccard, features, rank, config["k1"], config["k2"])
    labels = clock.run(
        "DBSCAN (sklearn, dense)",
        DBSCAN(eps=config["eps"], min_samples=config["min_samples"], metric="precomputed").fit_predict,
        dense,
    )
    max_diff, missed = 0.0, 0
    for start in range(0, dense.shape[0], 1024):  # compare in row blocks: absent sparse entries are 1
        block = sparse[start : start + 1024]
        full = np.ones(block.shape, dtype=np.float32)
        rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        full[rows, block.indices] = block.data
        ref = dense[start : start + 1024]
        if config["cutoff"] is None:
            max_diff = max(max_diff, float(np.abs(full - ref).max()))
        else:  # only pairs <= cutoff are stored: compare those, and count close pairs that were left out
            stored = full < 1
            max_diff = max(max_diff, float(np.abs(full - ref)[stored].max()))
            missed += int(((ref <= config["cutoff"]) & ~stored).sum())
    result = {
        "rows": clock.rows,
        "max_abs_diff": max_diff,
        "missed_close_pairs": missed,
        "ari": float(adjusted_rand_score(labels, sparse_labels)),
        "labels_equal": bool(np.array_equal(labels, sparse_labels)),
    }
    print(json.dumps(result))


def run_dense(args: argparse.Namespace, features, knn, dist, labels) -> dict:
    import numpy as np
    import scipy.sparse

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "features.npy", features)
        np.save(folder / "rank.npy", knn[1])
        scipy.sparse.save_npz(folder / "sparse.npz", dist, compressed=False)
        np.save(folder / "labels.npy", labels)
        config = {"k1": args.k1, "k2": args.k2, "eps": args.eps, "min_samples": args.min_samples}
        config["cutoff"] = args.eps if args.cutoff else None
        (folder / "config.json").write_text(json.dumps(config))
        cmd = [sys.executable, __file__, "--dense-worker", tmp, "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    if args.dense_worker:
        dense_worker(Path(args.dense_worker))
        return 0
    import faiss
    from sklearn.metrics import adjusted_rand_score

    faiss.omp_set_num_threads(args.threads)
    clusters = args.clusters or max(1, args.n // 20)
    print(f"machine: {machine_line()}; threads {args.threads}")
    print(
        f"data: N={args.n}, dim={args.dim}, {clusters} Gaussian blobs on the sphere (noise {args.noise}); "
        f"k1={args.k1}, k2={args.k2}, eps={args.eps}, min_samples={args.min_samples}, "
        f"cutoff={'eps' if args.cutoff else 'none (all d < 1)'}"
    )
    features, truth = blobs(args.n, args.dim, clusters, args.noise, args.seed)
    base_rss = peak_rss_mb()
    clock = PhaseClock()
    knn, dist, labels = run_sparse(args, features, clock)
    clock.print(f"sparse path (this process; peak RSS after making the features: {base_rss:.0f} MB)")
    knn_s = clock.seconds("kNN (faiss IndexFlatL2)")
    total = sum(sec for _, sec, _ in clock.rows)
    clusters_found = int(labels.max()) + 1
    print(f"  total {total:.2f} s = {total / knn_s:.2f} x the kNN alone ({knn_s:.2f} s)")
    print(
        f"  graph: {dist.nnz} stored pairs ({dist.nnz / args.n:.1f} per row, "
        f"{(dist.data.nbytes + dist.indices.nbytes + dist.indptr.nbytes) / 2**20:.0f} MiB); "
        f"{clusters_found} clusters, {(labels < 0).mean():.3f} outliers, "
        f"ARI vs true blobs {adjusted_rand_score(truth, labels):.3f}"
    )
    if args.n > args.dense_max:
        print(f"\ndense reference skipped (N > --dense-max {args.dense_max})")
        return 0
    dense = run_dense(args, features, knn, dist, labels)
    dense_clock = PhaseClock()
    dense_clock.rows = [tuple(row) for row in dense["rows"]]
    dense_clock.print("dense reference (fresh subprocess, same features and kNN)")
    sparse_jaccard = total - knn_s - clock.seconds("DBSCAN (sklearn, sparse)")
    dense_jaccard_s = dense_clock.seconds("dense Jaccard (reference)")
    sparse_peak = max(rss for _, _, rss in clock.rows)
    dense_peak = max(rss for _, _, rss in dense_clock.rows)
    print(
        f"\nJaccard (after kNN): sparse {sparse_jaccard:.2f} s vs dense {dense_jaccard_s:.2f} s "
        f"-> {dense_jaccard_s / sparse_jaccard:.1f}x faster"
    )
    print(f"peak RSS: sparse {sparse_peak:.0f} MB vs dense {dense_peak:.0f} MB -> {dense_peak / sparse_peak:.1f}x less")
    print(
        f"max |d_sparse - d_dense| over all pairs: {dense['max_abs_diff']:.2e}; "
        f"close pairs missing from the sparse graph: {dense['missed_close_pairs']}"
    )
    print(f"DBSCAN labels: ARI {dense['ari']:.6f}, exactly equal: {dense['labels_equal']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
