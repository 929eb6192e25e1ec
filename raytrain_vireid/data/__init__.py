"""Datasets: readers of the official layouts → one manifest, the synthetic persons, transforms, samplers.

The public names load their submodule on first use (PEP 562), so that
``python -m raytrain_vireid.data.synthetic`` does not import the module it is about to run.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ImageDataset": "datasets",
    "DataSpec": "manifest", "carve_validation": "manifest", "load_manifest": "manifest",
    "parse_data_spec": "manifest", "renumber": "manifest", "test_table": "manifest", "train_table": "manifest",
    "read_llcm": "sources", "read_regdb": "sources", "read_sysu": "sources",
    "DEFAULT_SYNTHETIC": "synthetic", "ensure_synthetic": "synthetic", "generate": "synthetic",
    "EvalTransform": "transforms", "build_transform": "transforms",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
