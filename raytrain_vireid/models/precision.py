"""Mixed precision (``train.precision``): which autocast dtype a run computes its network in, and the context.

Only the network's forward pass runs under autocast (its convolutions and matrix products in bfloat16); its outputs
are cast back to float32 before any loss, memory update or feature extraction, so logits against the memories,
memory entries and clustering features stay float32. bfloat16 needs no loss scaling. ``fp32`` leaves every number
as it was.

``auto`` takes bfloat16 on a CUDA GPU that supports it. On a CPU it takes it only where the CPU has the instructions
and a probe of the run's own training step measures it clearly faster: having them does not make it faster (the
two-stream ResNet-18 step at 64x32 ran 1.6x faster in bfloat16 on a 2-core AMD EPYC with AVX512-BF16, but 7-11 %
slower on a 2-core Intel Xeon with AMX, benchmarks/synthetic_results.md). That probe is a timing, so where the two
are close two runs on one machine could choose differently (it chose bfloat16 for one of four runs on that Xeon) and
their numbers would not compare: the decision is remembered per machine and workload (:class:`RememberedChoice`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping

import torch

from raytrain_vireid.config import PRECISIONS
from raytrain_vireid.cpu import CPUINFO, cpuinfo
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


def probed_speedup(step: Callable[[torch.dtype | None], None], rounds: int = 3) -> float:
    """How many times faster ``step(torch.bfloat16)`` runs than ``step(None)`` (float32): the ratio of their shortest
    wall times, after one untimed warm-up call each, over ``rounds`` timed calls each. The two alternate, so that a
    slow spell of a shared machine slows both rather than one."""
    best = {None: math.inf, torch.bfloat16: math.inf}
    for dtype in best:
        step(dtype)
    for _ in range(rounds):
        for dtype in best:
            start = time.perf_counter()
            step(dtype)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[None] / best[torch.bfloat16]


def cpu_identity(path: Path = CPUINFO) -> dict[str, Any]:
    """What tells this machine's CPUs apart for a timing: model name, logical CPUs, and a digest of the instruction
    set flags (a hypervisor may hide some of one model's); ``platform.processor()`` where there is no cpuinfo."""
    try:
        fields = cpuinfo(path)
    except OSError:
        fields = {}
    return {"model": fields.get("model name") or platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "flags": hashlib.sha256(fields.get("flags", "").encode()).hexdigest()[:16]}


class RememberedChoice:
    """``auto``'s probed CPU decision for one workload on one machine, kept in a JSON file between runs.

    ``key`` names the workload and the machine (e.g. the network, its batch and image size, :func:`cpu_identity`,
    torch's version and threads). The first run probes and writes its decision; later runs with the same key take
    it without probing, so runs on one machine compute in one precision. Delete the file to probe again. A file that
    cannot be read counts as empty and one that cannot be written only costs the next run a probe (a warning each).
    """

    def __init__(self, path: str | Path, key: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.key = dict(key)
        self.digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.note = ""  # how the last load/save went, for the run's log

    def _entries(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            warnings.warn(f"{self.path}: unreadable, probing again ({exc})", stacklevel=3)
            return {}
        return entries if isinstance(entries, dict) else {}

    def load(self) -> str | None:
        """The remembered precision name for this key, or None."""
        entry = self._entries().get(self.digest)
        name = entry.get("precision") if isinstance(entry, dict) else None
        if name not in DTYPES:
            return None
        self.note = f"as probed before on this machine: {self.path}"
        return name

    def save(self, name: str, bf16_speedup: float) -> None:
        """Remember ``name``, chosen where bfloat16 ran ``bf16_speedup`` times float32's speed (atomic write)."""
        entries = self._entries()
        entries[self.digest] = {"precision": name, "bf16_speedup": round(bf16_speedup, 3), "key": self.key}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entries, indent=1, default=str))
            os.replace(tmp, self.path)
        except OSError as exc:
            warnings.warn(f"{self.path}: cannot remember the precision decision ({exc})", stacklevel=2)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.note = f"probed: bfloat16 at {bf16_speedup:.2f}x float32's speed"
            return
        self.note = f"probed: bfloat16 at {bf16_speedup:.2f}x float32's speed; remembered in {self.path}"


def autocast_dtype(precision: str, device: torch.device, step: Callable[[torch.dtype | None], None] | None = None,
                   remembered: RememberedChoice | None = None) -> torch.dtype | None:
    """``torch.bfloat16`` or None (float32) for ``precision`` on ``device``.

    ``auto``: bfloat16 on a CUDA GPU that supports it; on a CPU with native bfloat16, only if ``step(dtype)`` (one
    training step at that autocast dtype, which must leave the run's state alone) takes bfloat16 at least
    ``AUTO_MIN_SPEEDUP`` times faster than float32 (:func:`probed_speedup`); float32 elsewhere, and on such a CPU
    without a ``step``. With ``remembered``, a decision it holds replaces the probe, and a probed one is saved to it.
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
    known = remembered.load() if remembered is not None else None
    if known is not None:
        return DTYPES[known]
    speedup = probed_speedup(step)
    dtype = torch.bfloat16 if speedup >= AUTO_MIN_SPEEDUP else None
    if remembered is not None:
        remembered.save(precision_name(dtype), speedup)
    return dtype


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
