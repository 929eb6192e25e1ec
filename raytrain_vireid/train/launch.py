"""Driver side of a run: check the input, prepare data once, start Ray, the memory actor and the TorchTrainer.

``fit(config)`` is what ``python -m raytrain_vireid.run`` calls. The run folder is
``<run.storage_path>/<run.name>/`` and is shared with Ray Train (its checkpoints live there): running
again with the same name and storage path resumes from the latest checkpoint (Ray Train V2 restores
its checkpoint manager from the folder), provided the configuration only differs in ``train.epochs``
or ``run.*``. All input is checked before the folder is touched.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import ray
import ray.train
from ray.train.torch import TorchTrainer

from raytrain_vireid.config import Config, config_from_dict, data_kind, dump_config, read_yaml
from raytrain_vireid.data import carve_validation, ensure_synthetic, load_manifest, parse_data_spec, train_table
from raytrain_vireid.data.images import read_resized
from raytrain_vireid.errors import UserError
from raytrain_vireid.memory.actor import create_memory_actor, stop_memory_actor
from raytrain_vireid.methods import get_method
from raytrain_vireid.pseudo.descriptors import DESCRIPTORS, cross_modality_neighbours
from raytrain_vireid.train.checkpoint import load_init_weights
from raytrain_vireid.train.evaluation import TestSet
from raytrain_vireid.train.loop import FINAL_EVAL_FILE, build_model_from_config, train_loop_per_worker
from raytrain_vireid.train.progress import log, resolve_mode
from raytrain_vireid.train.ray_logging import SETUP_HOOK
from raytrain_vireid.train.report import read_metrics, write_report

CONFIG_FILE = "config.yaml"
RESUMABLE_KEYS = ("train.epochs",)  # besides run.*: settings a resumed run may change


@dataclass
class PreparedData:
    """The training table (``index`` = row position) and where/how to evaluate.

    ``val`` holds identities carved from the training split when ``eval.select_on`` is ``val``: they are
    left out of training and score every epoch (model selection, Tune); the test set is scored last only.
    """

    train: pa.Table
    testset: TestSet
    val: pa.Table | None = None


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, Any]
    final: dict[str, Any]
    report: Path | None


def prepare_data(config: Config) -> PreparedData:
    """Load (or generate, for ``synthetic``) the dataset's manifest once, in the driver."""
    d = config.data
    spec = parse_data_spec(d.spec)
    options = dict(cache_dir=d.cache_dir, verify=d.verify, on_bad_image=d.on_bad_image)
    if spec.kind == "synthetic":
        params = {key: value for key, value in (("ids", d.synthetic_ids), ("images_per_cam", d.synthetic_images_per_cam),
                                                ("seed", d.synthetic_seed)) if value is not None}
        root = str(ensure_synthetic(cache_dir=d.cache_dir, **params))
        manifest = load_manifest(f"sysu:{root}", **options)
        protocol = "sysu"
    else:
        manifest = load_manifest(d.spec, **options)
        root, protocol = str(spec.root), spec.kind
    trials = (spec.trial or 1,) if protocol == "regdb" else tuple(range(config.eval.trials))
    train, val = train_table(manifest), None
    if config.eval.select_on == "val":
        train, val = carve_validation(train, config.eval.val_fraction, seed=config.train.seed)
    return PreparedData(train=train, testset=TestSet(protocol, root, trials), val=val)


def prior_descriptor(config: Config, table: pa.Table, chunk: int = 256) -> np.ndarray | None:
    """``pseudo.prior`` of every training row (table order) at the training resolution, or None without one (and for
    ``--supervised``, whose labels are the truth and whose only loss is the identity classifier's)."""
    if config.pseudo.prior is None or config.supervised:
        return None
    describe, paths = DESCRIPTORS[config.pseudo.prior], table["path"].to_pylist()
    h, w = config.data.height, config.data.width
    return np.concatenate([describe(read_resized(paths[i : i + chunk], h, w)) for i in range(0, len(paths), chunk)])


def prior_neighbours(config: Config, table: pa.Table, prior: np.ndarray | None) -> np.ndarray | None:
    """Each row's ``pseudo.prior_k`` nearest rows of the other modality in the prior's space, for the
    ``loss.prior_cross`` term (None when the term is off or there is no prior)."""
    if prior is None or config.loss.get("prior_cross", 0.0) <= 0:
        return None
    return cross_modality_neighbours(prior, table["modality"].to_numpy(), config.pseudo.prior_k)


def check_config(config: Config) -> None:
    """Checks that need more than the config's own types."""
    get_method(config.method)
    if config.run.num_workers > config.train.ids_per_modality:
        raise UserError(f"train.ids_per_modality: {config.train.ids_per_modality} identities per batch cannot be "
                        f"split over run.num_workers={config.run.num_workers} workers")
    if config.run.address not in ("local", "auto") and "://" not in config.run.address:
        raise UserError(f"run.address: {config.run.address!r} is not local, auto or a ray://host:port URL")


def run_name(config: Config) -> str:
    return config.run.name or f"{config.method}-{data_kind(config.data.spec)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k != "run"}
    out["train"] = {k: v for k, v in out.get("train", {}).items() if f"train.{k}" not in RESUMABLE_KEYS}
    return out


def check_resume(run_dir: Path, config: Config) -> bool:
    """True when ``run_dir`` holds an earlier run of the same configuration (resume); UserError when it holds
    something else."""
    if not run_dir.exists():
        return False
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: exists but is not a run folder (no {CONFIG_FILE}); choose another --name")
    try:
        previous = config_from_dict(read_yaml(path))
    except UserError as exc:
        raise UserError(f"{path}: cannot resume, unreadable run configuration ({exc})") from None
    key = config_difference(previous, config)
    if key is not None:
        raise UserError(f"{run_dir}: exists with a different configuration ({key}); only train.epochs and run.* may "
                        "change when resuming; choose another --name")
    return True


def config_difference(previous: Config, config: Config) -> str | None:
    """The first setting (``key: old -> new``) in which ``config`` differs from ``previous`` beyond what a resumed
    run may change (``train.epochs``, ``run.*``), or None."""
    old, new = _comparable(previous.to_dict()), _comparable(config.to_dict())
    return None if old == new else _first_difference(old, new)


def _first_difference(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def local_cpus(config: Config, *, runs: int = 1, extra_cpus: float = 0.0) -> int:
    """Logical CPUs of a private local Ray for ``runs`` concurrent runs of ``config`` (each: its Train workers
    and its memory actor) plus ``extra_cpus`` (the Tune CLI: its trial drivers and headroom), and never fewer
    than the machine has."""
    run = config.run
    needed = runs * (run.num_workers * run.cpus_per_worker + run.actor_cpus) + extra_cpus
    return max(os.cpu_count() or 1, math.ceil(needed - 1e-9))


def start_ray(config: Config, *, runs: int = 1, extra_cpus: float = 0.0) -> None:
    """Join ``run.address`` (auto / URL), or start a private local Ray sized by :func:`local_cpus`.

    The one place both CLIs size a local Ray: ``run`` with the defaults, ``tune`` with ``runs`` = trials at once.
    Its processes run :mod:`raytrain_vireid.train.ray_logging`'s setup hook.
    """
    if ray.is_initialized():
        return
    address = config.run.address
    if address != "local":
        ray.init(address=address)
        return
    ray.init(address="local", num_cpus=local_cpus(config, runs=runs, extra_cpus=extra_cpus), include_dashboard=False,
             runtime_env={"worker_process_setup_hook": SETUP_HOOK})


def fit(config: Config, callbacks: Sequence[Any] = ()) -> RunResult:
    """Train ``config`` with Ray Train (resuming when its run folder exists) and write the report.

    ``callbacks`` go to Ray Train's ``RunConfig`` (the Tune CLI passes ``TuneReportCallback``).
    """
    check_config(config)
    name = run_name(config)
    config.run.name = name
    run_dir = Path(config.run.storage_path).expanduser().resolve() / name
    resuming = check_resume(run_dir, config)
    data = prepare_data(config)
    prior = prior_descriptor(config, data.train)
    probe = build_model_from_config(config)  # fails early (UserError) on bad pretrained weights
    if config.train.init_checkpoint:  # and on a warm start that is not this model's checkpoint
        load_init_weights(probe, config.train.init_checkpoint)
    feature_dims, heads = dict(probe.feature_dims), tuple(probe.heads)
    del probe
    start_ray(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, run_dir / CONFIG_FILE)
    log(f"{'resuming' if resuming else 'starting'} run {run_dir} ({data.train.num_rows} training images, heads {heads})")
    actor_name = f"memory-{name}"
    actor = create_memory_actor(
        actor_name, num_cpus=config.run.actor_cpus, num_gpus=config.run.actor_gpus,
        resources=config.run.actor_resources,
        modality=data.train["modality"].to_numpy(), feature_dims=feature_dims, true_pids=data.train["pid"].to_numpy(),
        feature_dtype=config.pseudo.feature_dtype, backend=config.pseudo.backend, supervised=config.supervised,
        oracle_association=config.pseudo.oracle_association, oracle_clusters=config.pseudo.oracle_clusters,
        prior=prior)
    neighbours = prior_neighbours(config, data.train, prior)
    del prior  # the actor holds its own copy: at 10^6 images the descriptor is gigabytes
    try:
        result = _trainer(config, data, run_dir, actor_name, callbacks, neighbours).fit()
    finally:
        stop_memory_actor(actor, actor_name)
    final = _read_final(run_dir)
    report = write_report(run_dir, read_metrics(run_dir), final, config.to_dict()) if final else None
    return RunResult(run_dir=run_dir, metrics=dict(result.metrics or {}), final=final, report=report)


def _trainer(config: Config, data: PreparedData, run_dir: Path, actor_name: str,
             callbacks: Sequence[Any] = (), neighbours: np.ndarray | None = None) -> TorchTrainer:
    run = config.run
    resources = {"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})}
    loop_config = {
        "config": config.to_dict(),
        "train_table": data.train,
        "testset": data.testset.__dict__,
        "val_table": data.val,
        "run_dir": str(run_dir),
        "actor_name": actor_name,
        "progress": resolve_mode(run.progress),
        "prior_neighbours": neighbours,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=run.num_workers, use_gpu=run.use_gpu,
                                               resources_per_worker=resources if run.num_workers else None),
        run_config=ray.train.RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            callbacks=list(callbacks)),
    )


def _read_final(run_dir: Path) -> dict[str, Any]:
    path = run_dir / FINAL_EVAL_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
