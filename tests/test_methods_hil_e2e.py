"""HIL end to end with 2 real Ray workers on tiny synthetic data (every cross-modal term from epoch 0)."""

from __future__ import annotations

import pytest

from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


@pytest.mark.slow
def test_hil_two_workers(tmp_path, cache, ray_local, tiny_config):
    config = tiny_config(tmp_path, cache, "hil", 2, "train.warmup_epochs=0", "stage.cross_epoch=0",
                         "stage.stage2_epoch=0", "model.vit_size=tiny", "method_params.mccl_switch_epoch=1",
                         method="hil")
    result = fit(config)
    history = read_metrics(result.run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["memory_drift"] == 0 for row in history)
    assert all(row["loss_shared_deep"] > 0 for row in history)
    assert any(key.startswith("loss_mccl") for key in history[-1])
    assert result.final["epoch"] == 1
