"""torch.distributed helpers with two real gloo processes: buffers broadcast from rank 0, uneven all-gathers."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from raytrain_vireid.train.distributed import all_gather_rows, broadcast_buffers, spread


def _worker(rank: int, world: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        net.train()
        net(torch.randn(8, 3) + 5 * rank)  # each rank's own batch: different running statistics
        before = spread(float(net[1].running_mean.sum()), torch.device("cpu"))
        broadcast_buffers(net)
        after = spread(float(net[1].running_mean.sum()), torch.device("cpu"))
        rows = all_gather_rows(torch.full((rank + 1, 2), float(rank)))  # 1 row from rank 0, 2 from rank 1
        results[rank] = (before, after, net[1].running_mean.tolist(), int(net[1].num_batches_tracked), rows.tolist())
    finally:
        dist.destroy_process_group()


def test_broadcast_buffers_makes_every_rank_hold_rank_0s_statistics(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    (before0, after0, mean0, tracked0, rows0), (_, after1, mean1, tracked1, rows1) = results[0], results[1]
    assert before0 > 0.1 and after0 == after1 == 0.0
    assert mean0 == mean1 and tracked0 == tracked1 == 1
    assert rows0 == rows1 == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
