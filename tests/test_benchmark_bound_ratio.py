"""``benchmarks/bound_ratio.py``: finished run folders are read, not rerun (a bound whatever its clustering and memory
settings, which a supervised run never reads: ``tests/test_methods_supervised.py``), and the bar is the ratio of the
means."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest


def finished_run(directory: Path, all_map: float, *overrides: str, supervised: bool = False,
                 precision: str | None = None) -> None:
    """A run folder as the CLI leaves it: the resolved config.yaml and final_eval.json (``precision``: what the run
    resolved ``train.precision`` to; None for a folder from before the setting, which has no such field)."""
    from raytrain_vireid.config import build_config, dump_config

    directory.mkdir(parents=True)
    dump_config(build_config("baseline", overrides=list(overrides), extra={"supervised": True} if supervised else None),
                directory / "config.yaml")
    rows = [{"name": "sysu all", "mAP": all_map, "r1": 0.0}, {"name": "sysu indoor", "mAP": 0.9, "r1": 0.0}]
    final = {"epoch": 11, "rows": rows, **({} if precision is None else {"precision": precision})}
    (directory / "final_eval.json").write_text(json.dumps(final))


def sweep_args(tmp_path: Path, *sets: str) -> argparse.Namespace:
    return argparse.Namespace(storage_path=str(tmp_path), method="baseline", num_workers=2,
                              sets=list(sets))


def test_finished_runs_are_read_and_never_rerun(tmp_path, monkeypatch, benchmark_script):
    bound_ratio = benchmark_script("bound_ratio")
    # The untrained network's score is taken before training: a folder that has it still counts as the same run.
    finished_run(tmp_path / "seed3-baseline", 0.125, "train.seed=3", "eval.untrained=true")
    finished_run(tmp_path / "seed3-baseline-supervised", 0.25, "train.seed=3", "eval.untrained=false", supervised=True)
    monkeypatch.setattr(bound_ratio, "run_cli", lambda *a, **k: pytest.fail("a finished run was started again"))
    args = sweep_args(tmp_path)
    assert bound_ratio.score(3, False, args) == (0.125, "read")
    assert bound_ratio.score(3, True, args) == (0.25, "read")


def test_a_finished_run_of_another_configuration_is_read_with_the_difference_named(
        tmp_path, monkeypatch, benchmark_script):
    bound_ratio = benchmark_script("bound_ratio")
    finished_run(tmp_path / "seed1-baseline", 0.1, "train.seed=1", "eval.untrained=false", "memory.momentum=0.5")
    monkeypatch.setattr(bound_ratio, "run_cli", lambda *a, **k: pytest.fail("a finished run was started again"))
    score, how = bound_ratio.score(1, False, sweep_args(tmp_path, "memory.momentum=0.9"))
    assert score == 0.1
    assert how == "read; its configuration differs: memory.momentum: 0.5 -> 0.9"


def test_a_bound_is_read_as_the_same_run_whatever_its_clustering_and_memory_settings(
        tmp_path, monkeypatch, benchmark_script):
    bound_ratio = benchmark_script("bound_ratio")
    finished_run(tmp_path / "seed2-baseline-supervised", 0.25, "train.seed=2", "eval.untrained=false",
                 "memory.momentum=0.5", "pseudo.k1=20", supervised=True)
    finished_run(tmp_path / "seed2-baseline", 0.125, "train.seed=2", "eval.untrained=false", "pseudo.k1=20")
    finished_run(tmp_path / "seed4-baseline-supervised", 0.25, "train.seed=4", "eval.untrained=false",
                 "train.lr=0.001", supervised=True)
    monkeypatch.setattr(bound_ratio, "run_cli", lambda *a, **k: pytest.fail("a finished run was started again"))
    args = sweep_args(tmp_path, "pseudo.prior_epochs=16")
    assert bound_ratio.score(2, True, args) == (0.25, "read")
    # The method's run reads them, and a bound's other settings still count.
    assert bound_ratio.score(2, False, args) == (0.125, "read; its configuration differs: pseudo.k1: 20 -> "
                                                       "{'visible': 15, 'infrared': 10}")
    score, how = bound_ratio.score(4, True, args)
    assert score == 0.25 and how.startswith("read; its configuration differs: train.lr: 0.001 -> ")


def test_the_bar_is_the_mean_score_over_the_mean_bound_and_failed_seeds_stay_out(benchmark_script):
    bound_ratio = benchmark_script("bound_ratio")
    # ratios 0.7 and 0.5 average 0.6, but the means give 0.08 / 0.14 = 57 %: the bar is not met.
    text = bound_ratio.table("baseline", [(0, 0.07, 0.10), (1, 0.09, 0.18), (2, None, 0.2), (3, 0.1, None)])
    assert "| 0 | 7.00 | 10.00 | 70 % |" in text
    assert "| 2 | – | 20.00 | – |" in text
    assert "| mean of 2 | 8.00 | 14.00 | **57.14 %** |" in text
    assert "Per-seed ratios: 50–70 %" in text
    assert "(not met over these 2 seeds)" in text
    assert "(met over this 1 seed)" in bound_ratio.table("baseline", [(0, 0.07, 0.10)])
    # Just under the bar is shown as such, not rounded up to it.
    just_under = bound_ratio.table("baseline", [(0, 0.05996, 0.10)])
    assert "**59.96 %**" in just_under and "(not met over this 1 seed)" in just_under


def test_a_seed_whose_two_runs_trained_in_different_precisions_is_flagged(tmp_path, benchmark_script):
    bound_ratio = benchmark_script("bound_ratio")
    finished_run(tmp_path / "seed0-baseline", 0.12, "train.seed=0", precision="fp32")
    finished_run(tmp_path / "seed0-baseline-supervised", 0.2, "train.seed=0", supervised=True, precision="bf16")
    assert bound_ratio.precision_mismatch(tmp_path, 0, "baseline") == (
        "seed 0: the method trained in fp32 and its bound in bf16, not the same budget; pin one with --set "
        "train.precision=...")
    # A folder from before train.precision trained in float32, like an fp32 run; an unfinished bound is not judged.
    finished_run(tmp_path / "seed1-baseline", 0.12, "train.seed=1", precision="fp32")
    finished_run(tmp_path / "seed1-baseline-supervised", 0.2, "train.seed=1", supervised=True)
    assert bound_ratio.precision_mismatch(tmp_path, 1, "baseline") is None
    finished_run(tmp_path / "seed2-baseline", 0.12, "train.seed=2", precision="bf16")
    assert bound_ratio.precision_mismatch(tmp_path, 2, "baseline") is None
    finished_run(tmp_path / "seed2-baseline-supervised", 0.2, "train.seed=2", supervised=True)
    assert "trained in bf16 and its bound in fp32" in bound_ratio.precision_mismatch(tmp_path, 2, "baseline")


@pytest.mark.parametrize("arguments, fragment", [
    (["--seeds", "0,x"], "--seeds: expected comma-separated integers, got '0,x'"),
    (["--set", "nosuch.key=1"], "unknown setting nosuch"),
])
def test_bad_arguments_give_one_line_exit_2_and_write_nothing(tmp_path, arguments, fragment, benchmark_script):
    storage = tmp_path / "sweep"
    script = benchmark_script("bound_ratio").__file__
    result = subprocess.run([sys.executable, script, "--storage-path", str(storage), *arguments],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not storage.exists()
