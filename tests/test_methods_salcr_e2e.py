"""SALCR end to end with 2 real Ray workers on tiny synthetic data: stage 1 at epoch 0 (part head idle, so DDP
must tolerate parameters without gradient), stage 2 at epoch 1 (part head re-initialised, DAGI labels,
cross-paired batches, dual-space, part and GPCR losses)."""

from __future__ import annotations

import pytest

from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


@pytest.mark.slow
def test_salcr_two_workers_both_stages(tmp_path, cache, ray_local, tiny_config):
    config = tiny_config(tmp_path, cache, "salcr", 2, "train.warmup_epochs=0", "pseudo.association_params.k=4",
                         "method_params.k_instance=20", method="salcr")
    result = fit(config)
    history = read_metrics(result.run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["memory_drift"] == 0 for row in history)  # global, part and instance memories on both ranks
    stage1, stage2 = history
    assert stage1["loss_intra_global"] > 0 and "loss_part_v" not in stage1 and "loss_global" not in stage1
    assert stage2["loss_global"] > 0 and stage2["loss_part_v"] > 0 and stage2["loss_part_r"] > 0
    assert stage2["loss_gpcr_global"] > 0 and stage2["loss_gpcr_part"] > 0
    assert "loss_intra_global" not in stage2 and stage2["cross_coverage_visible"] > 0
    assert any((p / "state.pt").is_file() for p in result.run_dir.glob("checkpoint_*"))
    assert "mAP" in stage2 and result.final["epoch"] == 1


@pytest.mark.slow
def test_part_branch_idle_under_the_baseline_two_workers(tmp_path, cache, ray_local, tiny_config):
    """A method that never trains the part branch (here the baseline, warm-up epoch then cluster epoch) still
    runs under DDP with ``model.parts`` set: the branch's parameters get no gradient in any step."""
    config = tiny_config(tmp_path, cache, "baseline-parts", 2, "model.parts=3", "stage.stage2_epoch=5")
    history = read_metrics(fit(config).run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[1]["loss_intra_global"] > 0 and all(row["memory_drift"] == 0 for row in history)
