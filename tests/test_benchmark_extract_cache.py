"""``benchmarks/extract_cache.py`` measures both ways on the same shard and checks that they agree bit for bit."""

import re
import subprocess
import sys


def test_it_times_both_ways_and_finds_the_features_identical(tmp_path, benchmark_script):
    lines = benchmark_script("extract_cache").measure(num_workers=2, repeats=2, ids=6, cache_dir=str(tmp_path))
    assert lines[0].startswith("machine: ") and "2 passes each way, alternated" in lines[1]
    decoded, cached = (float(re.search(r": ([\d.]+) s per pass", line).group(1)) for line in lines[2:4])
    assert decoded > 0 and cached > 0
    assert re.search(r"; [1-9]\d* MB cached of a 512 MB budget", lines[3])  # it did keep the shard
    assert lines[-1] == "- features bit-identical both ways: yes"


def test_bad_arguments_are_one_line_and_exit_status_2(benchmark_script):
    script = benchmark_script("extract_cache").__file__
    done = subprocess.run([sys.executable, script, "--repeats", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--repeats must be at least 1" in done.stderr and "Traceback" not in done.stderr
