"""SDCL end to end with 2 real Ray workers on tiny synthetic data: stage 1 (epoch 0) and stage 2 (epoch 1)."""

from __future__ import annotations

import pytest

from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


@pytest.mark.slow
def test_sdcl_two_workers_both_stages(tmp_path, cache, ray_local, tiny_config):
    config = tiny_config(tmp_path, cache, "sdcl", 2, "train.warmup_epochs=0", "stage.cross_epoch=0",
                         "model.vit_size=tiny", "pseudo.association_params.k=4", "pseudo.association_params.smooth_k=3",
                         method="sdcl")
    result = fit(config)
    history = read_metrics(result.run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["memory_drift"] == 0 for row in history)  # cluster and instance memories identical on both ranks
    stage1, stage2 = history
    assert stage1["loss_cnl_intra"] > 0 and stage1["loss_cnl_cross"] > 0 and "loss_intra_deep" in stage1
    assert stage2["loss_cnl_cross"] > 0 and stage2["loss_shared_deep"] > 0 and "loss_intra_deep" not in stage2
    assert "mAP" in stage2 and "cross_coverage_visible" in stage2
    assert any((p / "state.pt").is_file() for p in result.run_dir.glob("checkpoint_*"))
    assert result.final["epoch"] == 1
