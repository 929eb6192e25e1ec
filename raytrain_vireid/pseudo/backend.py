"""One backend object per process: the array module and the heavy-step implementations.

CPU: NumPy, SciPy sparse, faiss-cpu, scikit-learn. GPU: CuPy, cupyx sparse, GPU faiss, cuML.
Array code elsewhere in :mod:`raytrain_vireid.pseudo` is written once against ``backend.xp``.
Nothing here imports torch or Ray.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import UserError

BACKEND_NAMES = ("auto", "cpu", "gpu")
GPU_INSTALL_HINT = "install the GPU extras with: pip install 'raytrain-vireid[gpu]'"


@dataclass(frozen=True)
class Backend:
    """The array module (``xp``) and sparse module for one device kind."""

    name: str  # "cpu" or "gpu"
    xp: ModuleType
    sparse: ModuleType

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        """Move ``array`` to this backend (no copy when it is already there with that dtype)."""
        return self.xp.asarray(array, dtype=dtype)

    def to_numpy(self, array: Any) -> np.ndarray:
        """Bring an array of this backend back to host memory as NumPy."""
        if self.is_gpu and not isinstance(array, np.ndarray):
            return array.get()
        return np.asarray(array)

    def sparse_to_scipy(self, matrix: Any) -> Any:
        """Bring a sparse matrix of this backend back to a SciPy CSR matrix."""
        return matrix.get().tocsr() if self.is_gpu else matrix.tocsr()


def _missing_gpu_parts() -> list[str]:
    missing = [name for name in ("cupy", "cuml") if importlib.util.find_spec(name) is None]
    if "cupy" not in missing:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                missing.append("a CUDA device")
        except Exception:  # CUDA driver or runtime absent: the same answer for the user
            missing.append("a CUDA device")
    return missing


@lru_cache(maxsize=None)
def get_backend(name: str = "auto") -> Backend:
    """Return the backend for ``name`` (``auto``, ``cpu`` or ``gpu``).

    ``auto`` takes the GPU only when CuPy, cuML and a CUDA device are all present;
    ``gpu`` raises :class:`UserError` naming what is missing.
    """
    if name not in BACKEND_NAMES:
        raise UserError(f"cluster backend {name!r} is not one of {', '.join(BACKEND_NAMES)}")
    if name == "cpu":
        return _cpu_backend()
    missing = _missing_gpu_parts()
    if missing:
        if name == "gpu":
            raise UserError(f"cluster backend 'gpu' needs {', '.join(missing)}; {GPU_INSTALL_HINT}")
        return _cpu_backend()
    cupy = importlib.import_module("cupy")
    return Backend("gpu", cupy, importlib.import_module("cupyx.scipy.sparse"))


def _cpu_backend() -> Backend:
    return Backend("cpu", np, importlib.import_module("scipy.sparse"))


def faiss_module(gpu: bool) -> ModuleType | None:
    """The faiss module if it is installed (and has GPU support when ``gpu``), else ``None``."""
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        return None
    if gpu and not hasattr(faiss, "StandardGpuResources"):
        return None
    return faiss


def repeat_each(values: Any, counts: Any, xp: Any) -> Any:
    """``values[i]`` repeated ``counts[i]`` times, as ``np.repeat``.

    CuPy's ``repeat`` accepts only host-side counts, so on the GPU the same result comes from a
    binary search of every output position in the running total of ``counts``.
    """
    if xp is np:
        return np.repeat(values, counts)
    ends = xp.cumsum(counts)
    total = int(ends[-1]) if ends.shape[0] else 0
    return values[xp.searchsorted(ends, xp.arange(total), side="right")]


def segment_sums(values: Any, starts: Any, xp: Any) -> Any:
    """Sums of ``values[starts[i]:starts[i+1]]`` (the last segment runs to the end), as ``np.add.reduceat``.

    CuPy has no ``reduceat``: on the GPU the sums are differences of a float64 running sum.
    """
    if xp is np:
        return np.add.reduceat(values, starts) if starts.shape[0] else values[:0]
    running = xp.concatenate([xp.zeros(1, dtype=xp.float64), xp.cumsum(values, dtype=xp.float64)])
    ends = xp.concatenate([starts[1:], xp.asarray([values.shape[0]], dtype=starts.dtype)])
    return (running[ends] - running[starts]).astype(values.dtype)
