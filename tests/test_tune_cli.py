"""The search CLI: bad input is rejected before any trial starts; sizing and results without Ray; a real ASHA
search on tiny data, interrupted and resumed."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "raytrain_vireid.tune", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.parametrize(
    "space, message",
    [
        ({"method": "baseline", "space": {"pseudo.epsilon": {"uniform": [0.4, 0.6]}}}, "pseudo.epsilon"),
        ({"method": "baseline", "space": {"pseudo.eps": {"uniform": [0.6, 0.4]}}}, "pseudo.eps"),
        ({"method": "baseline", "space": {"pseudo.k1": {"uniform": [10.5, 20.5]}}}, "pseudo.k1"),
        ({"method": "baseline", "space": {"train.lr": {"gaussian": [0.1, 1]}}}, "gaussian"),
    ],
)
def test_bad_space_is_rejected_before_any_trial(tmp_path, space, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    result = _run("--space", str(path), "--storage-path", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "runs").exists()


def test_bad_flags_are_one_line(tmp_path):
    result = _run("--space", str(REPO / "tune_spaces" / "baseline.yaml"), "--num-samples", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--num-samples" in result.stderr and "Traceback" not in result.stderr


def _plan(tmp_path, *argv):
    from raytrain_vireid.tune import build_parser, plan_search

    args = build_parser().parse_args(["--space", str(REPO / "tune_spaces" / "baseline.yaml"), "--storage-path",
                                      str(tmp_path), "--name", "s", *argv])
    return plan_search(args)


def test_trials_score_every_epoch_on_val_and_skip_the_untrained_test_score(tmp_path):
    base = _plan(tmp_path).base
    assert (base.eval.every, base.eval.select_on, base.eval.untrained) == (1, "val", False)
    assert _plan(tmp_path, "--set", "eval.untrained=true").base.eval.untrained is True


def test_local_ray_holds_every_concurrent_trial_and_one_run_of_headroom(tmp_path, monkeypatch):
    from raytrain_vireid.train import launch
    from raytrain_vireid.tune import TRIAL_DRIVER_CPUS, start_search_ray

    started = {}
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(launch.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(launch.ray, "init", lambda **kwargs: started.update(kwargs))
    plan = _plan(tmp_path, "--num-workers", "2", "--set", "run.cpus_per_worker=1.5", "--set", "run.actor_cpus=1")
    start_search_ray(plan, max_concurrent=3)
    run = 2 * 1.5 + 1  # a trial's Train workers and memory actor
    assert started["address"] == "local" and started["num_cpus"] == int(3 * (run + TRIAL_DRIVER_CPUS) + run + 0.999)
    assert launch.local_cpus(plan.base) == 4 and launch.local_cpus(plan.base, runs=0) == 2  # `run`, and the floor


def test_results_rank_trials_say_where_asha_stopped_them_and_pick_a_completed_best(tmp_path):
    import pandas as pd

    from raytrain_vireid.config import dump_config
    from raytrain_vireid.tune import summarize, write_results

    plan = _plan(tmp_path, "--epochs", "3")
    plan.search_dir.mkdir(parents=True)

    def result(trial_id, lr, history):
        folder = plan.search_dir / "trials" / f"trial_{trial_id}"
        folder.mkdir(parents=True)
        dump_config(plan.base, folder / "config.yaml")  # what fit() leaves in every trial's run folder
        frame = pd.DataFrame({"epochs_done": [e for e, _ in history], "mAP": [m for _, m in history]})
        done = history[-1][0] < 3 and trial_id != "d"  # a scheduler's stop marks the result done; Ctrl-C does not
        return SimpleNamespace(metrics_dataframe=frame, metrics={"mAP": history[-1][1], "trial_id": trial_id,
                                                                 "done": done},
                               error=None, config={"train.lr": lr}, path=str(tmp_path / trial_id))

    # a resumed trial repeats epoch 2: its last value counts once
    results = [result("a", 1e-3, [(1, 0.30), (2, 0.35), (2, 0.36), (3, 0.40)]),
               result("b", 1e-7, [(1, 0.50)]),
               result("c", 1e-4, [(1, 0.31), (2, 0.33), (3, 0.38)]),
               result("d", 1e-4, [(1, 0.2)])]
    rows = summarize(results, plan)
    assert [(r["trial"], r["epochs"], r["status"]) for r in rows] == [
        ("trial_b", 1, "stopped early"), ("trial_a", 3, "completed"), ("trial_c", 3, "completed"),
        ("trial_d", 1, "unfinished")]
    assert rows[1]["_history"] == {1: 0.30, 2: 0.36, 3: 0.40}
    best = write_results(rows, plan)
    assert best == plan.search_dir / "best.yaml" and best.is_file()
    text = (plan.search_dir / "results.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| trial_")]
    assert table[0].startswith("| trial_b |") and table[0].endswith("| 1 | 0.5 | stopped early |"), text
    assert "(`best.yaml`): trial_a (completed, 3 epochs)" in text
    assert (plan.search_dir / "mAP_per_epoch.png").is_file() and (plan.search_dir / "results.csv").is_file()


def test_asha_rungs_are_refilled_from_the_run_folders_when_a_search_is_restored(tmp_path):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from raytrain_vireid.tune import EPOCHS_KEY, resumable_asha

    def run_folder(trial_id, scores):
        (tmp_path / f"trial_{trial_id}").mkdir()
        lines = ["epoch,mAP", "-1,0.9"] + [f"{epoch},{score}" for epoch, score in enumerate(scores)]  # -1: untrained
        (tmp_path / f"trial_{trial_id}" / "metrics.csv").write_text("\n".join(lines) + "\n")

    run_folder("a", [0.5, 0.6])  # both finished before the interruption
    run_folder("b", [0.4])
    options = dict(time_attr=EPOCHS_KEY, max_t=2, grace_period=1, reduction_factor=2, stop_last_trials=False)
    schedulers = {"resumable": resumable_asha(str(tmp_path), **options), "plain": ASHAScheduler(**options)}
    for scheduler in schedulers.values():
        scheduler.set_search_properties("mAP", "max")
        for trial_id in ("a", "b", "c"):  # what Tuner.restore does with every trial of the search
            scheduler.on_trial_add(None, SimpleNamespace(trial_id=trial_id))
    new = SimpleNamespace(trial_id="c")
    # the epoch-1 rung holds a (0.5) and b (0.4) again: c is cut below their median; Ray's own ASHA forgot them
    assert schedulers["resumable"].on_trial_result(None, new, {EPOCHS_KEY: 1, "mAP": 0.44}) == TrialScheduler.STOP
    assert schedulers["plain"].on_trial_result(None, new, {EPOCHS_KEY: 1, "mAP": 0.44}) == TrialScheduler.CONTINUE


TINY = ["data.synthetic_ids=16", "data.synthetic_images_per_cam=2", "eval.untrained=false", "data.height=64", "data.width=32",
        "train.iters_per_epoch=3", "train.ids_per_modality=4", "train.instances=2", "train.warmup_epochs=1",
        "stage.stage2_epoch=2", "pseudo.k1=6", "pseudo.k2=2", "pseudo.min_samples=2", "eval.trials=1",
        "eval.val_fraction=0.3", "run.progress=plain", "run.actor_cpus=0.5", "run.cpus_per_worker=0.5"]


def _wait_for(paths, proc, timeout_s):
    """Wait until ``paths()`` finds something (True) or ``proc`` exits / time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if paths():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_real_asha_search_stops_a_trial_resumes_and_writes_a_runnable_best_yaml(tmp_path):
    space = tmp_path / "space.yaml"
    # Run one at a time: a rate that barely moves the network, a useful one, a useful one again, a tiny one again.
    # ASHA (grace 1, reduction 2, max_t 2: rungs after 1 and 2 trained epochs, a trial is cut below the median of
    # those already recorded at its rung) cuts the second trial: after one epoch of 3 iterations lr 1e-3 scores
    # 0.369 on the carved identities and a tiny rate 0.399 (the runs are seeded, so this does not change from one
    # run to the next). The interrupted last trial, a tiny rate, then runs to the end. Those scores are float32's:
    # the synthetic profile's train.precision=auto takes bfloat16 on CPUs where it is faster, and moves them.
    space.write_text(yaml.safe_dump({"method": "baseline", "space": {"train.lr": {"grid": [1e-7, 1e-3, 1.2e-3, 1.1e-7]}}}))
    sets = [arg for key in TINY + [f"data.cache_dir={tmp_path / 'cache'}", "train.precision=fp32"] for arg in ("--set", key)]
    args = ["--space", str(space), "--num-samples", "1", "--num-workers", "1", "--grace-period", "1",
            "--reduction-factor", "2", "--max-concurrent", "1", "--epochs", "2", "--storage-path",
            str(tmp_path / "runs"), "--name", "search", *sets]
    search = tmp_path / "runs" / "search"

    # Interrupt the search (Ctrl-C) once the last trial has started, then run the same command again: it resumes
    # with Tuner.restore, keeps the three finished trials (and their places in ASHA's rungs) and runs the
    # interrupted one to the end in its own run folder.
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "raytrain_vireid.tune", *args], cwd=tmp_path, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            started = _wait_for(lambda: list(search.glob("trials/trial_*_00003/config.yaml")), first, 900)
            first.send_signal(signal.SIGINT)
            first.wait(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
    assert started and first.returncode == 130, (tmp_path / "first.log").read_text()[-3000:]
    with open(search / "results.csv") as handle:
        assert [row["status"] for row in csv.DictReader(handle)].count("unfinished") == 1
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming search {search}" in result.stdout
    output = (result.stdout + result.stderr).splitlines()
    assert any("resuming run" in line and "_00003" in line for line in output)  # the interrupted trial's own run

    with open(search / "results.csv") as handle:
        rows = {row["trial"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 4
    statuses = [row["status"] for row in rows.values()]
    assert "stopped early" in statuses and set(statuses) <= {"completed", "stopped early"}, rows
    resumed = next(row for trial, row in rows.items() if trial.endswith("_00003"))
    assert resumed["status"] == "completed" and resumed["epochs"] == "2", rows
    assert (search / "mAP_per_epoch.png").is_file()
    best = search / "best.yaml"
    assert yaml.safe_load(best.read_text())["eval"]["select_on"] == "val"
    rerun = subprocess.run([sys.executable, "-m", "raytrain_vireid.run", "--config", str(best), "--num-workers", "0",
                            "--epochs", "1", "--storage-path", str(tmp_path / "best-run"), "--name", "best"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "best-run" / "best" / "report.md").is_file()
