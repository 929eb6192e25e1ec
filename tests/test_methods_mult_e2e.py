"""MULT end to end with 2 real Ray workers on tiny synthetic data: stage 1 at epoch 0, stage 2 (label
propagation, six memories, OCLR; odd epoch = infrared label space) at epoch 1."""

from __future__ import annotations

import pytest

from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


@pytest.mark.slow
def test_mult_two_workers(tmp_path, cache, ray_local, tiny_config):
    config = tiny_config(tmp_path, cache, "mult", 2, "train.warmup_epochs=0", method="mult")
    result = fit(config)
    history = read_metrics(result.run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["memory_drift"] == 0 for row in history)
    assert "loss_intra_global" in history[0] and "loss_oclr_global" not in history[0]
    assert history[1]["loss_oclr_global"] > 0 and history[1]["loss_ma_global"] > 0
    assert len([p for p in result.run_dir.glob("checkpoint_*") if (p / "state.pt").is_file()]) >= 1
    assert "mAP" in history[-1] and result.final["epoch"] == 1
