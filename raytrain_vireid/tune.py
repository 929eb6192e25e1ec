"""``python -m raytrain_vireid.tune``: search settings with Ray Tune (ASHA by default) over full training runs.

Example::

    python -m raytrain_vireid.tune --space tune_spaces/baseline.yaml --num-samples 8 --num-workers 1

Each trial is a function that builds one Ray Train ``TorchTrainer`` run (Train V2 pattern) whose
per-epoch reports reach Tune through ``TuneReportCallback``, so ASHA can stop bad trials early (its time
axis is the epochs the run has done, :data:`EPOCHS_KEY`). A trial Tune stops aborts its Train run
first, so its workers, placement group and memory actor are gone before the next trial starts
(:class:`_TrialRun`). Trials are scored on a validation split carved from the training identities
(``--select-on val``, the default), never on the test set. The search folder ``<storage-path>/<name>/``
receives ``results.csv``, ``results.md``, ``mAP_per_epoch.png`` and ``best.yaml`` (a full configuration
that ``python -m raytrain_vireid.run --config best.yaml`` takes unchanged). Ctrl-C stops the search
(its trials ``unfinished`` in the results, exit 130); running the same command again resumes it with ``Tuner.restore``: finished
trials are kept, an interrupted one resumes from its own run folder. Ray does not save the scheduler,
so :func:`resumable_asha` refills ASHA's rungs from the trials' run folders.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from raytrain_vireid.config import Config, build_config, dump_config, load_config
from raytrain_vireid.errors import UserArgumentParser, UserError, run_cli
from raytrain_vireid.search_space import SearchSpace, format_value, load_space

BASE_CONFIG_FILE = "base_config.yaml"
TRIALS_DIR = "trials"
# Epochs a trial's Train run has completed, added to every result: ASHA's time axis. Not Tune's
# training_iteration, which restarts at 1 when a restored trial's run resumes from its own checkpoint.
EPOCHS_KEY = "epochs_done"
UNFINISHED = "unfinished"  # status of a trial the search was interrupted in (Ctrl-C); running it again resumes it


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
    # ASHA decides on the metric of every epoch: evaluate every epoch. The untrained network's test score would
    # be the same in every trial, so trials skip it unless the space's base or --set asks for it.
    defaults = ["eval.untrained=false"]
    fixed = [*args.overrides, f"eval.select_on={args.select_on}", "eval.every=1"]
    space = load_space(args.space, overrides=[*defaults, *fixed])
    extra: dict[str, Any] = {"run": {"num_workers": args.num_workers}}
    if args.data:
        extra["data"] = {"spec": args.data}
    if args.epochs:
        extra["train"] = {"epochs": args.epochs}
    if args.use_gpu:
        extra["run"]["use_gpu"] = True
    if args.address:
        extra["run"]["address"] = args.address
    base = build_config(method=space.method, overrides=[*defaults, *space.base_overrides(), *fixed], extra=extra)
    name = args.name or f"tune-{base.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    search_dir = Path(args.storage_path).expanduser().resolve() / name
    return SearchPlan(space, base, search_dir, args.num_samples, base.train.epochs)


# Logical CPUs of a trial's own function. It is only the Train driver (it prepares the data table once, then
# waits on the Train run); the run's workers and memory actor are reserved by Ray Train and the actor itself.
TRIAL_DRIVER_CPUS = 0.25


class _TrialRun:
    """The one Train run of this trial actor's process (Tune gives every trial a fresh actor: reuse_actors=False).

    When Tune stops a trial (ASHA's cut, Ctrl-C) it calls the trainable's ``cleanup()`` and then ends the
    actor, which also ends the Train controller that the actor owns. A controller that dies that way leaves
    its worker group's placement group behind: its lifetime is the job's, i.e. the whole search. Ray's
    PlacementGroupCleaner would remove it, but it watches the controller through the State API, which needs
    the dashboard (``ray[default]``), absent from a plain install and off in our local Ray; the next trial
    then waits for CPUs that never come back (ray-project/ray#54305). So ``cleanup()`` aborts the run the way
    Ray Train expects (``abort()`` removes the placement group and stops the cleaner) and waits until
    ``fit()`` has stopped the memory actor, before the trial's resources are handed to the next trial. The
    controller's handle comes from :func:`_controller_callback` as soon as the controller runs, so a trial
    stopped before its first report (Ctrl-C during start-up) is aborted too.
    """

    def __init__(self) -> None:
        self.controller_box: Any = None  # ray.util.queue.Queue(1): the Train controller's handle, once known
        self.finished = threading.Event()
        self.stopping = False

    def stop(self, timeout_s: float = 60.0) -> None:
        """Abort the Train run if it is still going and wait (bounded) for ``fit()`` to clean up."""
        import ray

        if self.controller_box is None or self.finished.is_set():
            return
        self.stopping = True
        controller = self._controller(timeout_s)
        if controller is None:  # fit() ended (or never started a controller) within the timeout: nothing to abort
            return
        try:
            ray.get(controller.abort.remote(), timeout=timeout_s)
        except Exception:  # abort() ends by exiting the controller actor: its caller sees the actor die
            pass
        self.finished.wait(timeout_s)

    def _controller(self, timeout_s: float) -> Any:
        """The Train controller's handle, waiting (bounded) while ``fit()`` is still starting it."""
        deadline = time.monotonic() + timeout_s
        while not self.finished.is_set() and time.monotonic() < deadline:
            try:
                return self.controller_box.get(timeout=0.5)
            except Exception:  # ray.util.queue.Empty: the controller has not started yet
                continue
        return None


_RUN = _TrialRun()


def _stop_trial_run() -> None:
    _RUN.stop()


def run_trial(params: dict[str, Any], *, base_file: str, trials_dir: str) -> None:
    """One Tune trial: the base configuration plus this trial's values, trained with Ray Train."""
    import ray.tune
    from ray.util.queue import Queue

    from raytrain_vireid.train.launch import fit

    trial_id = ray.tune.get_context().get_trial_id()
    overrides = [f"{key}={format_value(value)}" for key, value in params.items()]
    overrides += [f"run.name=trial_{trial_id}", f"run.storage_path={trials_dir}", "run.address=auto"]
    config = build_config(config_file=base_file, overrides=overrides)
    _RUN.controller_box = Queue(1, actor_options={"num_cpus": 0})
    try:
        fit(config, callbacks=[_controller_callback(_RUN.controller_box), _report_callback()])
    except Exception:
        if not _RUN.stopping:  # a trial Tune stopped ends with its aborted run's error: not the trial's fault
            raise
    finally:
        _RUN.finished.set()


def _controller_callback(controller_box: Any) -> Any:
    """A controller callback that hands the Train controller's handle to the trial (``_TrialRun.stop``) as soon as
    the controller runs, before it reserves the worker group. Ray Train passes ``RunConfig`` callbacks that are not
    ``UserCallback``s to the controller as they are; ``ControllerCallback`` is its developer API for that."""
    import ray
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class ControllerHandleCallback(ControllerCallback):
        def __init__(self, box: Any) -> None:
            self._box = box

        def after_controller_start(self, train_run_context: Any) -> None:  # runs in the controller
            self._box.put_nowait(ray.get_runtime_context().current_actor)

    return ControllerHandleCallback(controller_box)


def _report_callback() -> Any:
    """``TuneReportCallback`` that adds :data:`EPOCHS_KEY` (epochs done: ASHA's time axis) to each result."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class TrialReportCallback(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:  # runs in the controller
            if "epoch" in metrics[0]:
                metrics = [{**metrics[0], EPOCHS_KEY: int(metrics[0]["epoch"]) + 1}, *metrics[1:]]
            super().after_report(run_context, metrics, checkpoint)

    return TrialReportCallback()


def make_trainable(base_file: str, trials_dir: str) -> Any:
    """The Tune trainable: :func:`run_trial` as a function trainable whose ``cleanup()`` stops its Train run,
    reserving :data:`TRIAL_DRIVER_CPUS` for the trial's own function."""
    from ray import tune
    from ray.tune.trainable import wrap_function

    base = wrap_function(partial(run_trial, base_file=base_file, trials_dir=trials_dir), name="trial")

    class trial(base):  # noqa: N801 (Tune names trials and their folders after the class: trial_<id>)
        def cleanup(self) -> None:
            try:
                _stop_trial_run()
            finally:
                super().cleanup()

    return tune.with_resources(trial, {"CPU": TRIAL_DRIVER_CPUS})


def start_search_ray(plan: SearchPlan, max_concurrent: int) -> None:
    """Join ``run.address``, or start a local Ray for ``max_concurrent`` trials (each: Train workers, memory actor
    and driver) plus one run's worth of headroom, so that a trial is never held up while the one before it lets go."""
    from raytrain_vireid.train.launch import start_ray

    run = plan.base.run
    headroom = run.num_workers * run.cpus_per_worker + run.actor_cpus
    start_ray(plan.base, runs=max_concurrent, extra_cpus=max_concurrent * TRIAL_DRIVER_CPUS + headroom)


def run_search(plan: SearchPlan, args: argparse.Namespace) -> Any:
    """Start or resume the Tune experiment and wait for it."""
    from ray import tune

    from raytrain_vireid.search_space import to_tune

    metric, mode = plan.space.metric, plan.space.mode
    trials_dir = plan.search_dir / TRIALS_DIR
    base_file = plan.search_dir / BASE_CONFIG_FILE
    trainable = make_trainable(str(base_file), str(trials_dir))
    start_search_ray(plan, args.max_concurrent)
    if tune.Tuner.can_restore(str(plan.search_dir)):
        print(f"resuming search {plan.search_dir}")
        return tune.Tuner.restore(str(plan.search_dir), trainable, resume_errored=True).fit()
    plan.search_dir.mkdir(parents=True, exist_ok=True)
    dump_config(plan.base, base_file)
    # stop_last_trials=False: a trial that reaches max_t (= its epochs) uncut ends on its own, as a normal run
    # (report.md and all). Tune stops the trials ASHA cuts at a rung; when max_t = grace × factor^k the top rung
    # is at max_t itself, and a trial cut there has already run (and reported) every epoch: it counts as completed.
    scheduler = (
        resumable_asha(str(trials_dir), time_attr=EPOCHS_KEY, max_t=plan.max_epochs, grace_period=args.grace_period,
                       reduction_factor=args.reduction_factor, stop_last_trials=False)
        if args.scheduler == "asha" else tune.schedulers.FIFOScheduler()
    )
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune(plan.space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=plan.num_samples, scheduler=scheduler,
                                    max_concurrent_trials=args.max_concurrent, reuse_actors=False),
        run_config=tune.RunConfig(name=plan.search_dir.name, storage_path=str(plan.search_dir.parent)),
    )
    return tuner.fit()


def resumable_asha(trials_dir: str, **kwargs: Any) -> Any:
    """``ASHAScheduler(**kwargs)`` whose rungs survive ``Tuner.restore``.

    Ray does not save the scheduler with the experiment (``TuneController.__getstate__`` drops it), so a restored
    search would start with empty rungs and the trials finished before the interruption would no longer count
    toward a cut. Each trial added to this scheduler first records what its run folder already holds (the
    ``metrics.csv`` of ``<trials_dir>/trial_<id>``, empty for a new trial), as if those results had just arrived.
    """
    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            super().on_trial_add(tune_controller, trial)
            bracket = self._trial_info[trial.trial_id]
            for epochs, value in run_history(Path(trials_dir) / f"trial_{trial.trial_id}", self._metric).items():
                bracket.on_result(trial, epochs, self._metric_op * value)

    return ResumableASHA(**kwargs)


def run_history(run_dir: Path, metric: str) -> dict[int, float]:
    """``{epochs done: metric}`` from a run folder's ``metrics.csv`` (nothing if there is none yet)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    history = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            epoch, value = row.get("epoch"), row.get(metric)
            if epoch and value and float(epoch) >= 0:  # epoch -1: the untrained network, not a result Tune saw
                history[int(float(epoch)) + 1] = float(value)
    return history


def summarize(results: Any, plan: SearchPlan) -> list[dict[str, Any]]:
    """One row per trial, best first: sampled values, epochs run, last metric, whether ASHA stopped it."""
    metric = plan.space.metric
    rows = []
    for result in results:
        history = _history(result.metrics_dataframe, metric)
        epochs = max(history, default=0)
        last = (result.metrics or {}).get(metric)
        trial_id = (result.metrics or {}).get("trial_id")
        if result.error:
            status = "error"
        elif epochs >= plan.max_epochs:
            status = "completed"
        else:  # Tune marks the result on which a scheduler stopped a trial done; Ctrl-C leaves it as it was
            status = "stopped early" if (result.metrics or {}).get("done") else UNFINISHED
        rows.append({
            "trial": f"trial_{trial_id}" if trial_id else Path(result.path).name,
            **{key: result.config.get(key) for key in plan.space.dimensions},
            "epochs": epochs,
            metric: float(last) if last is not None else float("nan"),
            "status": status,
            "_history": history,
            "_trial_id": trial_id,
        })
    sign = 1 if plan.space.mode == "max" else -1
    rows.sort(key=lambda r: -sign * r[metric] if r[metric] == r[metric] else float("inf"))
    return rows


def _history(frame: Any, metric: str) -> dict[int, float]:
    """``{epochs done: metric}`` from a trial's results (the last value wins if a resumed run repeated an epoch)."""
    if frame is None or metric not in frame or EPOCHS_KEY not in frame:
        return {}
    rows = frame[[EPOCHS_KEY, metric]].dropna()
    return {int(epoch): float(value) for epoch, value in zip(rows[EPOCHS_KEY], rows[metric])}


def write_results(rows: list[dict[str, Any]], plan: SearchPlan) -> Path | None:
    """results.csv, results.md, mAP_per_epoch.png and best.yaml in the search folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = plan.space.metric
    columns = [key for key in rows[0] if not key.startswith("_")] if rows else []
    with open(plan.search_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    # The best configuration is the best trial that ran the whole budget; one ASHA stopped early never did.
    best = next((r for r in rows if r["status"] == "completed" and r[metric] == r[metric]), None) or next(
        (r for r in rows if r["status"] != "error" and r[metric] == r[metric]), None)
    scored_on = ("validation identities carved from the training split" if plan.base.eval.select_on == "val"
                 else "the test protocol")
    best_line = (f"Best configuration (`best.yaml`): {best['trial']} ({best['status']}, {best['epochs']} epochs)."
                 if best else "No trial finished.")
    (plan.search_dir / "results.md").write_text(
        f"# Search {plan.search_dir.name}\n\nMetric: `{metric}` ({plan.space.mode}) after each trial's last epoch, "
        f"scored on {scored_on}; `epochs` is where the trial ended (the budget is {plan.max_epochs}).\n\n"
        + "\n".join(lines) + f"\n\n{best_line}\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ax.plot(list(row["_history"]), list(row["_history"].values()), marker="o", label=f"{row['trial']} ({row['status']})")
    ax.set_xlabel("epochs trained")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plan.search_dir / "mAP_per_epoch.png", dpi=100)
    plt.close(fig)
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
    unfinished = sum(row["status"] == UNFINISHED for row in rows)
    if unfinished:  # Ctrl-C: Tune saved the search
        print(f"search interrupted with {unfinished} trial(s) unfinished; run the same command again to resume it",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    # Run the importable module's main: what Tune ships to the trial actors (run_trial, the trainable) is then
    # pickled by reference to raytrain_vireid.tune instead of by value from __main__.
    from raytrain_vireid import tune as _tune

    raise SystemExit(run_cli(_tune.main))
