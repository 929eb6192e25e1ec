"""``python -m raytrain_vireid.tune``: search settings with Ray Tune (ASHA by default) over full training runs.

Example::

    python -m raytrain_vireid.tune --space tune_spaces/baseline.yaml --num-samples 8 --num-workers 1

Each trial is a function that builds one Ray Train ``TorchTrainer`` run (Train V2 pattern) whose
per-epoch reports reach Tune through ``TuneReportCallback``, so ASHA can stop bad trials early. Trials
are scored on a validation split carved from the training identities (``--select-on val``, the
default), never on the test set. The search folder ``<storage-path>/<name>/`` receives
``results.csv``, ``results.md``, ``mAP_per_epoch.png`` and ``best.yaml`` (a full configuration that
``python -m raytrain_vireid.run --config best.yaml`` takes unchanged). Running the same command again
resumes an interrupted search (``Tuner.restore``).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from raytrain_vireid.config import Config, build_config, dump_config, load_config
from raytrain_vireid.errors import UserArgumentParser, UserError, run_cli
from raytrain_vireid.search_space import SearchSpace, format_value, load_space

BASE_CONFIG_FILE = "base_config.yaml"
TRIALS_DIR = "trials"


def build_parser() -> argparse.ArgumentParser:
    p = UserArgumentParser(prog="python -m raytrain_vireid.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search space YAML (see tune_spaces/)")
    p.add_argument("--num-samples", type=int, default=8, help="trials to sample (each grid point counts once)")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs every trial runs before it may stop")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA: keep 1/factor of trials per rung")
    p.add_argument("--max-concurrent", type=int, default=1, help="trials running at once")
    p.add_argument("--select-on", choices=("val", "last"), default="val",
                   help="val (default): score trials on identities carved from the training split")
    p.add_argument("--data", help="synthetic | sysu:PATH | regdb:PATH[:TRIAL] | llcm:PATH")
    p.add_argument("--epochs", type=int, help="epochs per trial (the ASHA budget)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed setting for every trial (repeatable)")
    p.add_argument("--use-gpu", action="store_true", default=None)
    p.add_argument("--address", help="local (default), auto, or ray://host:port")
    p.add_argument("--storage-path", default="runs", help="folder holding the search folder")
    p.add_argument("--name", help="search name (default: tune-<method>-<timestamp>); an existing one resumes")
    return p


@dataclass
class SearchPlan:
    """Everything a search needs, checked before any trial starts."""

    space: SearchSpace
    base: Config
    search_dir: Path
    num_samples: int
    max_epochs: int


def plan_search(args: argparse.Namespace) -> SearchPlan:
    """Validate the space, the fixed settings and every range endpoint; no Ray, no files touched."""
    if args.num_samples < 1:
        raise UserError(f"--num-samples: must be >= 1, got {args.num_samples}")
    if args.max_concurrent < 1:
        raise UserError(f"--max-concurrent: must be >= 1, got {args.max_concurrent}")
    if args.grace_period < 1 or args.reduction_factor <= 1:
        raise UserError("--grace-period must be >= 1 and --reduction-factor > 1")
    # ASHA decides on the metric of every epoch: evaluate every epoch.
    fixed = [*args.overrides, f"eval.select_on={args.select_on}", "eval.every=1"]
    space = load_space(args.space, overrides=fixed)
    extra: dict[str, Any] = {"run": {"num_workers": args.num_workers}}
    if args.data:
        extra["data"] = {"spec": args.data}
    if args.epochs:
        extra["train"] = {"epochs": args.epochs}
    if args.use_gpu:
        extra["run"]["use_gpu"] = True
    if args.address:
        extra["run"]["address"] = args.address
    base = build_config(method=space.method, overrides=[*space.base_overrides(), *fixed], extra=extra)
    name = args.name or f"tune-{base.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    search_dir = Path(args.storage_path).expanduser().resolve() / name
    return SearchPlan(space, base, search_dir, args.num_samples, base.train.epochs)


def run_trial(params: dict[str, Any], *, base_file: str, trials_dir: str) -> None:
    """One Tune trial: the base configuration plus this trial's values, trained with Ray Train."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raytrain_vireid.train.launch import fit

    trial_id = ray.tune.get_context().get_trial_id()
    overrides = [f"{key}={format_value(value)}" for key, value in params.items()]
    overrides += [f"run.name=trial_{trial_id}", f"run.storage_path={trials_dir}", "run.address=auto"]
    config = build_config(config_file=base_file, overrides=overrides)
    fit(config, callbacks=[TuneReportCallback()])


def _start_ray(plan: SearchPlan, max_concurrent: int) -> None:
    import ray

    run = plan.base.run
    if run.address != "local":
        ray.init(address=run.address)
        return
    per_trial = 1 + run.num_workers * run.cpus_per_worker + run.actor_cpus  # trial driver + workers + actor
    needed = int(max_concurrent * per_trial + 0.999)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False)


def run_search(plan: SearchPlan, args: argparse.Namespace) -> Any:
    """Start or resume the Tune experiment and wait for it."""
    from functools import partial

    from ray import tune

    from raytrain_vireid.search_space import to_tune

    metric, mode = plan.space.metric, plan.space.mode
    trials_dir = plan.search_dir / TRIALS_DIR
    base_file = plan.search_dir / BASE_CONFIG_FILE
    trainable = partial(run_trial, base_file=str(base_file), trials_dir=str(trials_dir))
    _start_ray(plan, args.max_concurrent)
    if tune.Tuner.can_restore(str(plan.search_dir)):
        print(f"resuming search {plan.search_dir}")
        return tune.Tuner.restore(str(plan.search_dir), trainable, resume_errored=True).fit()
    plan.search_dir.mkdir(parents=True, exist_ok=True)
    dump_config(plan.base, base_file)
    scheduler = (
        tune.schedulers.ASHAScheduler(time_attr="training_iteration", max_t=plan.max_epochs,
                                      grace_period=args.grace_period, reduction_factor=args.reduction_factor)
        if args.scheduler == "asha" else tune.schedulers.FIFOScheduler()
    )
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune(plan.space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=plan.num_samples, scheduler=scheduler,
                                    max_concurrent_trials=args.max_concurrent),
        run_config=tune.RunConfig(name=plan.search_dir.name, storage_path=str(plan.search_dir.parent)),
    )
    return tuner.fit()


def summarize(results: Any, plan: SearchPlan) -> list[dict[str, Any]]:
    """One row per trial, best first: sampled values, epochs run, last metric, whether ASHA stopped it."""
    metric = plan.space.metric
    rows = []
    for result in results:
        history = result.metrics_dataframe
        epochs = 0 if history is None or metric not in history else int(history[metric].notna().sum())
        last = (result.metrics or {}).get(metric)
        status = "error" if result.error else ("stopped early" if epochs < plan.max_epochs else "completed")
        rows.append({
            "trial": Path(result.path).name,
            **{key: result.config.get(key) for key in plan.space.dimensions},
            "epochs": epochs,
            metric: float(last) if last is not None else float("nan"),
            "status": status,
            "_history": [] if history is None or metric not in history else history[metric].dropna().tolist(),
            "_trial_id": (result.metrics or {}).get("trial_id"),
        })
    sign = 1 if plan.space.mode == "max" else -1
    rows.sort(key=lambda r: -sign * r[metric] if r[metric] == r[metric] else float("inf"))
    return rows


def write_results(rows: list[dict[str, Any]], plan: SearchPlan) -> Path | None:
    """results.csv, results.md, mAP_per_epoch.png and best.yaml in the search folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = plan.space.metric
    columns = [key for key in rows[0] if not key.startswith("_")] if rows else []
    with open(plan.search_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    (plan.search_dir / "results.md").write_text(
        f"# Search {plan.search_dir.name}\n\nMetric: `{metric}` ({plan.space.mode}), scored on "
        f"{'validation identities carved from the training split' if plan.base.eval.select_on == 'val' else 'the last epoch'}."
        "\n\n" + "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ax.plot(range(1, len(row["_history"]) + 1), row["_history"], marker="o", label=row["trial"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plan.search_dir / "mAP_per_epoch.png", dpi=100)
    plt.close(fig)
    best = next((r for r in rows if r["status"] != "error" and r[metric] == r[metric]), None)
    if best is None:
        return None
    trial_config = plan.search_dir / TRIALS_DIR / f"trial_{best['_trial_id']}" / "config.yaml"
    config = load_config(trial_config)
    config.run.name, config.run.storage_path, config.run.address = None, "runs", "local"
    path = plan.search_dir / "best.yaml"
    dump_config(config, path)
    return path


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_search(args)
    results = run_search(plan, args)
    rows = summarize(results, plan)
    best = write_results(rows, plan)
    print((plan.search_dir / "results.md").read_text())
    print(f"best configuration: {best}" if best else "no trial finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
