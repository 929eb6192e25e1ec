"""``benchmarks/extract_cache.py`` measures three ways on the same shard and checks that they agree bit for bit."""

import re
import subprocess
import sys


def test_it_times_both_ways_and_finds_the_features_identical(tmp_path, benchmark_script):
    lines = benchmark_script("extract_cache").measure(num_workers=2, repeats=2, ids=6, cache_dir=str(tmp_path))
    assert lines[0].startswith("machine: ") and "2 passes each way, alternated" in lines[1]
    field, decoded, cached = (float(re.search(r": ([\d.]+) s per pass", line).group(1)) for line in lines[2:5])
    assert field > 0 and decoded > 0 and cached > 0
    cached = re.search(r"; (\d+) of (\d+) images cached, [\d.]+ MB of a 512 MB budget", lines[4])
    kept, shard = map(int, cached.groups())
    assert kept == shard > 0  # it did keep the whole shard
    assert lines[-1] == "- features bit-identical all three ways: yes"
    none = benchmark_script("extract_cache").measure(num_workers=2, repeats=1, ids=6, cache_dir=str(tmp_path),
                                                     budget_mb=0)
    assert f"; 0 of {shard} images cached, 0.0 MB of a 0 MB budget" in none[4]
    assert none[-1] == "- features bit-identical all three ways: yes"


def test_bad_arguments_are_one_line_and_exit_status_2(benchmark_script):
    script = benchmark_script("extract_cache").__file__
    done = subprocess.run([sys.executable, script, "--repeats", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--repeats must be at least 1" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, script, "--budget-mb", "-1"], capture_output=True, text=True)
    assert done.returncode == 2 and "--budget-mb must be at least 0" in done.stderr and "Traceback" not in done.stderr
