"""Trainer pieces that need no Ray: all-gather across two gloo processes, checkpoint round trip, batches."""

from __future__ import annotations

import os
import random
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raytrain_vireid.train.checkpoint import load_state, save_state, to_numpy, to_tensors
from raytrain_vireid.train.distributed import all_gather_rows, all_reduce_mean, barrier


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gather_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = torch.arange(3 + rank, dtype=torch.float32).reshape(-1, 1) + 10 * rank  # 3 rows, then 4 rows
        gathered = all_gather_rows(local)
        mean = all_reduce_mean(float(rank), torch.device("cpu"))
        barrier()
        torch.save({"gathered": gathered, "mean": mean}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_gather_rows_uneven_ranks_in_rank_order(tmp_path):
    mp.spawn(_gather_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    expected = torch.tensor([0, 1, 2, 10, 11, 12, 13], dtype=torch.float32).reshape(-1, 1)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(result["gathered"], expected)
        assert result["mean"] == 0.5


def test_single_process_helpers_are_identity():
    x = torch.randn(5, 3)
    assert all_gather_rows(x) is x
    assert all_reduce_mean(2.5, torch.device("cpu")) == 2.5
    barrier()  # no process group: nothing to wait for


def test_tensor_numpy_round_trip_keeps_dtypes_and_nesting():
    state = {"features": {"global": np.arange(6, dtype=np.float16).reshape(2, 3)}, "filled": np.array([True, False]),
             "labelset": {"labels": np.array([-1, 3], dtype=np.int64), "epoch": np.int64(4), "cross": None}}
    back = to_numpy(to_tensors(state))
    assert back["features"]["global"].dtype == np.float16
    np.testing.assert_array_equal(back["features"]["global"], state["features"]["global"])
    np.testing.assert_array_equal(back["filled"], [True, False])
    assert back["labelset"]["epoch"] == 4 and back["labelset"]["cross"] is None


def test_checkpoint_round_trip_restores_training_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1, 3], 0.1)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    scheduler.step()
    np.random.seed(5)
    random.seed(6)
    actor_state = {"features": {"global": np.ones((3, 2), np.float16)}, "filled": np.ones(3, bool)}
    save_state(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=7, actor_state=actor_state,
               history=[{"epoch": 7, "mAP": 0.5}])
    expected_numpy, expected_python = np.random.rand(), random.random()

    state = load_state(tmp_path)  # weights_only=True inside
    assert state["epoch"] == 7 and state["history"] == [{"epoch": 7, "mAP": 0.5}]
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(state["model"])
    assert torch.equal(fresh.weight, model.weight)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    fresh_opt.load_state_dict(state["optimizer"])
    fresh_sched = torch.optim.lr_scheduler.MultiStepLR(fresh_opt, [1, 3], 0.1)
    from raytrain_vireid.train.checkpoint import load_scheduler_state, set_rng_state

    load_scheduler_state(fresh_sched, state["scheduler"])
    assert fresh_sched.last_epoch == 2 and fresh_opt.param_groups[0]["lr"] == pytest.approx(0.01)
    fresh_sched.step()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.001)  # the milestone at 3 survived
    np.random.rand(), random.random()  # move the generators on, then rewind them
    set_rng_state(state["rng"])
    assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)
    assert state["actor"]["features"]["global"].dtype == np.float16
