"""Shared fixtures of the trainer tests: ``tiny_config`` (a run that takes seconds per epoch), a per-module
synthetic-data ``cache`` folder, a local Ray instance (``ray_local``) and ``benchmark_script`` (a script of
``benchmarks/`` imported as a module)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import ray

from raytrain_vireid.config import Config, build_config
from raytrain_vireid.train.ray_logging import SETUP_HOOK

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _tiny_config(storage: Path, cache: Path, name: str, num_workers: int, *sets: str, method: str = "baseline") -> Config:
    """A run that takes seconds per epoch: 12 synthetic ids, 64×32 images, 1 warm-up epoch, stage 2 from epoch 1, no
    hand-crafted prior (``pseudo.prior``: the baseline's synthetic default; tests that want it set it back)."""
    return build_config(method=method, overrides=[
        f"run.storage_path={storage}", f"run.name={name}", f"run.num_workers={num_workers}", "run.progress=plain",
        f"data.cache_dir={cache}", "data.synthetic_ids=12", "data.synthetic_images_per_cam=3",
        "data.height=64", "data.width=32", "train.epochs=2", "train.iters_per_epoch=4", "train.warmup_epochs=1",
        "train.ids_per_modality=4", "train.instances=2", "stage.stage2_epoch=1",
        "pseudo.k1=6", "pseudo.k2=2", "pseudo.min_samples=2", "pseudo.prior=null", "loss.prior_cross=0",
        "eval.trials=1", "eval.untrained=false", *sets])


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(storage, cache, name, num_workers, *"key=value", method=...)`` -> Config."""
    return _tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"worker_process_setup_hook": SETUP_HOOK})
    yield
    ray.shutdown()


@pytest.fixture
def benchmark_script():
    """``benchmark_script(name)`` -> ``benchmarks/<name>.py`` imported as a module (the folder is not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
