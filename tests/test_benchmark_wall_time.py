"""``benchmarks/wall_time.py``: the verdict against the 600-s bar, the per-phase sums and the ratio to the untrained
network are read from the run folder the default command leaves; bad input stops before anything is run."""

import json
import subprocess
import sys

from raytrain_vireid.train.report import MetricsLogger

EPOCHS = [
    {"mAP": 0.04},  # epoch -1: the untrained network
    {"time_extract": 10.0, "time_ship": 0.5, "time_relabel": 2.0, "time_train": 30.0, "images_per_s": 180.0},
    {"time_extract": 11.0, "time_ship": 0.5, "time_relabel": 3.0, "time_train": 32.0, "time_eval": 4.0,
     "images_per_s": 170.0, "mAP": 0.1},
]


def finished_run(run_dir):
    with MetricsLogger(run_dir) as logger:
        for epoch, metrics in enumerate(EPOCHS, start=-1):
            logger.log(epoch, metrics)
    (run_dir / "final_eval.json").write_text(json.dumps({"epoch": 1, "precision": "bf16", "rows": []}))
    return {"status": "ok", "wall_s": 0.0, "epochs": 2, "all": {"mAP": 0.1}, "untrained_mAP": 0.04}


def test_summary_reads_the_run_folder_and_judges_the_bar(tmp_path, benchmark_script):
    wall_time = benchmark_script("wall_time")
    result = finished_run(tmp_path)
    lines = wall_time.summary(tmp_path, {**result, "wall_s": 599.4}, "cached")
    assert lines[0].startswith("- wall time of the command: **599 s** (10.0 min) against 600 s: met")
    assert "- precision `train.precision: auto` chose: bf16" in lines
    assert "- phases (sum over epochs): extract 21 s, ship 1 s, relabel 5 s, train 62 s, eval 4 s" in lines
    assert "- training images/s per epoch: 170–180" in lines
    assert lines[-1] == "- all-search mAP: 10.00 % at the last epoch (epoch 1), 4.00 % untrained: 2.50x (bar: 2x)"
    over = wall_time.summary(tmp_path, {**result, "wall_s": 600.0}, "cached")
    assert "against 600 s: not met on this machine" in over[0]


def test_a_failed_command_is_reported_with_its_wall_time_and_nothing_read(tmp_path, benchmark_script):
    wall_time = benchmark_script("wall_time")
    failed = {"status": "failed (exit 1, see x.log)", "wall_s": 12.0}
    lines = wall_time.summary(tmp_path / "absent", failed, "not checked")
    assert lines[-1] == "- run: failed (exit 1, see x.log)" and "12 s" in lines[0]


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, benchmark_script):
    wall_time = benchmark_script("wall_time")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert wall_time.bf16_instructions(cpuinfo) == "avx512_bf16, amx_bf16"
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert wall_time.bf16_instructions(cpuinfo).startswith("none")


def test_an_existing_cold_cache_gives_one_line_exit_2_and_runs_nothing(tmp_path, benchmark_script):
    (tmp_path / "synthetic-cache").mkdir()
    script = benchmark_script("wall_time").__file__
    result = subprocess.run([sys.executable, script, "--storage-path", str(tmp_path), "--cold-cache"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --cold-cache: ") and "exists" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic-cache"]
