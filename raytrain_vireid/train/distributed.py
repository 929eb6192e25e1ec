"""torch.distributed helpers that also work in a single process (Ray Train local mode, tests)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """``dist.barrier()`` when running with several processes; nothing otherwise."""
    if is_distributed():
        dist.barrier()


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (ranks may hold different row counts)."""
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place.

    DDP broadcasts them at the start of each training forward, so after the last step every rank holds its own
    batch's update; feature extraction and evaluation run the unwrapped module in eval mode on each rank's share
    of the images, and would otherwise embed the shares with different running statistics.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src)


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a Python number over ranks."""
    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def spread(value: float, device: torch.device) -> float:
    """max − min of a Python number over ranks (0 in a single process): e.g. memory checksums that must agree."""
    if not is_distributed():
        return 0.0
    values = all_gather_rows(torch.tensor([[float(value)]], dtype=torch.float64, device=device))
    return float(values.max() - values.min())
