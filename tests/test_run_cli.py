"""``python -m raytrain_vireid.run`` bad input: one ``error:`` line, exit status 2, no traceback, run folder untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raytrain_vireid.config import build_config, dump_config


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raytrain_vireid.run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, fragments", [
    (["--method", "nosuch"], ["unknown method 'nosuch'", "baseline"]),
    (["--set", "train.nosuch=3"], ["unknown setting train.nosuch", "train.epochs"]),
    (["--set", "train.epochs=many"], ["train.epochs", "integer"]),
    (["--set", "noequals"], ["key=value"]),
    (["--config", "missing.yaml"], ["missing.yaml", "does not exist"]),
    (["--num-workers", "two"], ["--num-workers", "two"]),
    (["--num-workers", "-1"], ["run.num_workers"]),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragments):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *fragments)


def test_unreadable_config_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    assert_one_line_error(run_cli("--config", "bad.yaml", cwd=tmp_path), "bad.yaml", "not valid YAML")


def test_wrong_data_spec(tmp_path):
    result = run_cli("--data", "nosuch:/x", "--storage-path", str(tmp_path / "runs"), "--name", "r", cwd=tmp_path)
    assert_one_line_error(result, "nosuch")
    assert not (tmp_path / "runs" / "r").exists()


def test_existing_run_folder_with_other_config_is_left_untouched(tmp_path):
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    config = build_config(overrides=["run.name=demo", f"run.storage_path={tmp_path / 'runs'}"])
    dump_config(config, run_dir / "config.yaml")
    (run_dir / "metrics.csv").write_text("epoch,mAP\n0,0.1\n")
    (run_dir / "checkpoint_000000").mkdir()
    (run_dir / "checkpoint_000000" / "state.pt").write_bytes(b"\x00\x01")
    before = snapshot(run_dir)

    different = run_cli("--storage-path", str(tmp_path / "runs"), "--name", "demo", "--set", "pseudo.eps=0.5", cwd=tmp_path)
    assert_one_line_error(different, str(run_dir), "pseudo.eps")
    bad_override = run_cli("--storage-path", str(tmp_path / "runs"), "--name", "demo", "--set", "pseudo.eps=x", cwd=tmp_path)
    assert_one_line_error(bad_override, "pseudo.eps")
    assert snapshot(run_dir) == before


def test_warm_start_from_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "snapshot.json").write_text("{}")
    result = run_cli("--storage-path", str(tmp_path / "runs"), "--name", "warm", "--set", f"data.cache_dir={tmp_path}",
                     "--set", "data.synthetic_ids=12", "--set", "data.synthetic_images_per_cam=3",
                     "--set", f"train.init_checkpoint={tmp_path / 'snapshot.json'}", cwd=tmp_path)
    assert_one_line_error(result, "train.init_checkpoint", "snapshot.json", "not a checkpoint of this model")
    assert not (tmp_path / "runs" / "warm").exists()
