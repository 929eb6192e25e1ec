"""Backend selection: cpu, auto falling back to cpu, gpu refusing clearly without its extras."""

import importlib.util

import numpy as np
import pytest
import scipy.sparse

from raytrain_vireid.errors import UserError
from raytrain_vireid.pseudo.backend import get_backend, repeat_each, segment_sums

HAS_GPU_EXTRAS = importlib.util.find_spec("cupy") is not None and importlib.util.find_spec("cuml") is not None


def test_cpu_backend_is_numpy_and_scipy():
    backend = get_backend("cpu")
    assert backend.name == "cpu" and not backend.is_gpu
    assert backend.xp is np and backend.sparse is scipy.sparse
    moved = backend.asarray([1, 2], dtype=np.float32)
    assert moved.dtype == np.float32
    assert isinstance(backend.to_numpy(moved), np.ndarray)
    matrix = backend.sparse_to_scipy(scipy.sparse.coo_matrix(np.eye(2)))
    assert matrix.format == "csr"


@pytest.mark.skipif(HAS_GPU_EXTRAS, reason="GPU extras installed")
def test_auto_falls_back_to_cpu_and_gpu_names_what_is_missing():
    assert get_backend("auto").name == "cpu"
    with pytest.raises(UserError, match=r"cluster backend 'gpu' needs .*; install the GPU extras with: pip install"):
        get_backend("gpu")


def test_unknown_backend_name_is_a_user_error():
    with pytest.raises(UserError, match=r"cluster backend 'tpu' is not one of auto, cpu, gpu"):
        get_backend("tpu")


class _NotNumpy:
    """NumPy under another name: drives the CuPy branch of ``repeat_each`` on the CPU."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("xp", [np, _NotNumpy()], ids=["numpy", "search-branch"])
def test_repeat_each_matches_np_repeat(xp):
    values, counts = np.array([5, 6, 7, 8]), np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(repeat_each(values, counts, xp), [5, 5, 7, 7, 7, 8])
    assert repeat_each(values[:0], counts[:0], xp).shape == (0,)


@pytest.mark.parametrize("xp", [np, _NotNumpy()], ids=["numpy", "running-sum-branch"])
def test_segment_sums_match_np_add_reduceat(xp):
    values = np.array([0.5, 0.25, 1.0, 2.0, 0.125, 4.0], dtype=np.float32)
    starts = np.array([0, 2, 3, 5])
    out = segment_sums(values, starts, xp)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.75, 1.0, 2.125, 4.0])
    assert segment_sums(values[:0], starts[:0], xp).shape == (0,)
