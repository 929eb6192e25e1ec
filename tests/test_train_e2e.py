"""The real trainer end to end on tiny synthetic data: local mode (0 workers) and 2 Ray workers with resume.

``tiny_config``, ``cache`` and ``ray_local`` are the shared fixtures of ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import psutil
import pytest
import torch

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.methods import get_method
from raytrain_vireid.models import SDCLViT, TwoStreamResNet
from raytrain_vireid.pseudo.engine import relabel
from raytrain_vireid.train.checkpoint import load_state
from raytrain_vireid.train.launch import fit, prepare_data, prior_descriptor
from raytrain_vireid.train.loop import FINAL_EVAL_FILE
from raytrain_vireid.train.report import read_metrics


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_local_mode_run_trains_evaluates_and_reports(tmp_path, cache, ray_local, tiny_config, precision):
    result = fit(tiny_config(tmp_path, cache, "local", 0, f"train.precision={precision}"))
    history = read_metrics(result.run_dir)
    assert json.loads((result.run_dir / FINAL_EVAL_FILE).read_text())["precision"] == precision
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["memory_drift"] == 0 for row in history)
    assert history[1]["clusters_visible"] > 0 and "mAP" in history[1]
    assert {row["name"] for row in result.final["rows"]} == {"sysu all", "sysu indoor"}
    assert (result.run_dir / "report.md").is_file() and (result.run_dir / "config.yaml").is_file()


@pytest.mark.parametrize("method", ["baseline", "sdcl"])  # sdcl: its instance features and the term's, one fetch
def test_prior_labels_the_first_epoch_and_adds_its_term(tmp_path, cache, ray_local, tiny_config, method):
    """``pseudo.prior`` at weight 1 from epoch 0 (no warm-up): the first clustering is the engine's on the driver's
    descriptor alone, and ``loss.prior_cross`` is logged every epoch, beside the method's own terms."""
    config = tiny_config(tmp_path, cache, "prior", 0, "pseudo.prior=hog", "pseudo.prior_weight=1.0",
                         "pseudo.prior_epochs=0", "loss.prior_cross=1.0", "train.warmup_epochs=0", method=method)
    result = fit(config)
    history = read_metrics(result.run_dir)
    table = prepare_data(config).train
    modality = table["modality"].to_numpy()
    heads = (SDCLViT if config.model.arch == "vit" else TwoStreamResNet).heads  # sdcl's ViT: deep and shallow
    noise = {head: np.random.default_rng(0).standard_normal((table.num_rows, 8)).astype(np.float32) for head in heads}
    expected = relabel(noise, modality, get_method(method)(config, heads, modality).relabel_plan(0),
                       prior=prior_descriptor(config, table))
    assert history[0]["clusters_visible"] == expected.num_clusters[VISIBLE]
    assert history[0]["clusters_infrared"] == expected.num_clusters[INFRARED]
    assert all(row["loss_prior_cross"] > 0 and row["memory_drift"] == 0 for row in history)


@pytest.mark.slow
def test_two_workers_checkpoint_and_resume(tmp_path, cache, ray_local, tiny_config):
    first = fit(tiny_config(tmp_path, cache, "ddp", 2, "eval.untrained=true", "train.iters_per_epoch=10"))
    run_dir = first.run_dir
    history = read_metrics(run_dir)
    assert [row["epoch"] for row in history] == [-1, 0, 1]  # -1: the untrained network
    assert all(row["memory_drift"] == 0 for row in history[1:])  # replicas identical on both ranks
    checkpoints = [p for p in run_dir.glob("checkpoint_*") if (p / "state.pt").is_file()]
    assert len(checkpoints) == 2
    assert history[-1]["mAP"] > history[0]["mAP"]  # training helped
    streams = load_state(max(checkpoints))["rng"]
    assert len(streams) == 2 and streams[0]["python"] != streams[1]["python"]  # each rank resumes its own stream

    # train.precision=auto is resolved once per run: the resumed run takes its checkpoint's, whatever a new probe says
    latest = max(checkpoints) / "state.pt"
    state = torch.load(latest, weights_only=True)
    first_precision = json.loads((run_dir / FINAL_EVAL_FILE).read_text())["precision"]
    assert state["precision"] == first_precision
    torch.save({**state, "precision": "fp32" if first_precision == "bf16" else "bf16"}, latest)

    second = fit(tiny_config(tmp_path, cache, "ddp", 2, "eval.untrained=true", "train.iters_per_epoch=10",
                             "train.epochs=3"))
    resumed = read_metrics(run_dir)
    assert [row["epoch"] for row in resumed] == [-1, 0, 1, 2]
    assert resumed[:3] == history  # nothing before epoch 2 was evaluated or trained again
    assert second.final["epoch"] == 2
    assert json.loads((run_dir / FINAL_EVAL_FILE).read_text())["precision"] != first_precision


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(tmp_path, cache, ray_local, tiny_config):
    """FailureConfig(max_failures=1): SIGKILL one worker during epoch 1; the run restarts the worker group from the
    epoch-0 checkpoint and finishes, and epoch 0 is not trained again. With the baseline's synthetic default prior, so
    its neighbours reach both workers and the restarted group too."""
    config = tiny_config(tmp_path, cache, "fault", 2, "train.epochs=3", "train.iters_per_epoch=8", "run.max_failures=1",
                         "pseudo.prior=hog", "loss.prior_cross=1.0")
    metrics_file = tmp_path / "fault" / "metrics.csv"
    killed: list[int] = []

    def kill_one_worker_after_first_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics_file.exists() and len(read_metrics(metrics_file)) >= 1):
            time.sleep(0.2)
        time.sleep(3)  # the controller registers checkpoints on a 2 s poll
        # Ray's processes are descendants of this test process (ray.init started them); the train workers'
        # process titles name their actor class.
        workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
        if workers:
            os.kill(workers[-1].pid, signal.SIGKILL)
            killed.append(workers[-1].pid)

    killer = threading.Thread(target=kill_one_worker_after_first_checkpoint, daemon=True)
    killer.start()
    result = fit(config)
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    history = read_metrics(result.run_dir)
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert result.final["epoch"] == 2
    assert all(row["loss_prior_cross"] > 0 for row in history[1:])  # epoch 0 is the warm-up, without the term
