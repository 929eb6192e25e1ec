"""Mixed precision (``train.precision``): which autocast dtype a run computes its network in, and the context.

Only the network's forward pass runs under autocast (its convolutions and matrix products in bfloat16); its outputs
are cast back to float32 before any loss, memory update or feature extraction, so logits against the memories,
memory entries and clustering features stay float32. bfloat16 needs no loss scaling. ``fp32`` leaves every number
as it was.

``auto`` takes bfloat16 on a CUDA GPU that supports it. On a CPU it takes it only where the CPU has the instructions
and a probe of the run's own training step measures it clearly faster: having them does not make it faster (the
two-stream ResNet-18 step at 64x32 ran 1.6x faster in bfloat16 on a 2-core AMD EPYC with AVX512-BF16, but 7-11 %
slower on a 2-core Intel Xeon with AMX, benchmarks/synthetic_results.md).
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager, Mapping

import torch

from raytrain_vireid.config import PRECISIONS
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
# ``auto`` on a CPU: bfloat16 must run the probed step this many times faster than float32. The margin keeps timing
# noise from flipping the choice between two runs on one machine, where the gain is small anyway.
AUTO_MIN_SPEEDUP = 1.2


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16
    (which AMX CPUs also have). Elsewhere bfloat16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # torch has no public query of the CPU's instruction sets; without this private one, assume none
    query = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return device.type == "cpu" and query is not None and bool(query())


def best_time(call: Callable[[], None], repeats: int = 2) -> float:
    """The shortest wall time of ``repeats`` calls of ``call``, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def autocast_dtype(precision: str, device: torch.device,
                   step: Callable[[torch.dtype | None], None] | None = None) -> torch.dtype | None:
    """``torch.bfloat16`` or None (float32) for ``precision`` on ``device``.

    ``auto``: bfloat16 on a CUDA GPU that supports it; on a CPU with native bfloat16, only if ``step(dtype)`` (one
    training step at that autocast dtype, which must leave the run's state alone) takes bfloat16 at least
    ``AUTO_MIN_SPEEDUP`` times faster than float32; float32 elsewhere, and on such a CPU without a ``step``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    if not native_bf16(device):
        return None
    if device.type == "cuda":
        return torch.bfloat16
    if step is None:
        return None
    faster = best_time(lambda: step(None)) >= AUTO_MIN_SPEEDUP * best_time(lambda: step(torch.bfloat16))
    return torch.bfloat16 if faster else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` on ``device`` in ``dtype``; a no-op context for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16`` or ``fp32``: what a run resolved ``train.precision`` to (the inverse of ``DTYPES``)."""
    return next(name for name, value in DTYPES.items() if value == dtype)


def float32_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``outputs`` with every floating-point tensor in float32 (others, and float32 tensors, as they are)."""
    return {key: value.float() if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in outputs.items()}
