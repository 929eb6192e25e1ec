"""The search CLI: bad input is rejected before any trial starts; a real ASHA search on tiny data."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "raytrain_vireid.tune", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


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
