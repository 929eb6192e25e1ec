"""Checkpoint contents: plain tensors and dicts in one ``state.pt``, loadable with ``weights_only=True``.

Holds the model (unwrapped), optimizer, LR scheduler, the epoch just finished, RNG states and the
memory actor's state (its NumPy arrays stored as tensors).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrain_vireid.errors import UserError

STATE_FILE = "state.pt"


def to_tensors(value: Any) -> Any:
    """NumPy arrays → tensors, recursively through dicts, lists and tuples."""
    if isinstance(value, np.ndarray):
        # Object-store reads are read-only views, which torch cannot wrap: copy those.
        return torch.from_numpy(np.ascontiguousarray(value) if value.flags.writeable else value.copy())
    if isinstance(value, dict):
        return {k: to_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_tensors(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_numpy(value: Any) -> Any:
    """Tensors → NumPy arrays, recursively (inverse of :func:`to_tensors`)."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy(v) for v in value)
    return value


def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy and Python random states as plain NumPy/Python values (picklable, so ranks can
    gather them; :func:`save_state` turns them into tensors)."""
    return {"torch": torch.get_rng_state().numpy(), "numpy": np.random.get_state(), "python": random.getstate()}


def rank_rng_state(saved: list[dict[str, Any]] | dict[str, Any], rank: int) -> dict[str, Any] | None:
    """This rank's entry of a checkpoint's ``rng`` (one state per rank, in rank order); a single dict (an older
    checkpoint) serves every rank; None when the saved group had fewer ranks than ``rank + 1``."""
    if isinstance(saved, dict):
        return saved
    return saved[rank] if rank < len(saved) else None


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.as_tensor(state["torch"]))
    np.random.set_state(to_numpy(state["numpy"]))
    random.setstate(state["python"])


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    state = scheduler.state_dict()
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = dict(state["milestones"])
    return state


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    state = dict(state)
    if isinstance(state.get("milestones"), dict):
        state["milestones"] = Counter(state["milestones"])
    scheduler.load_state_dict(state)


def save_state(directory: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, actor_state: dict[str, Any],
               history: list[dict[str, float]], rng: list[dict[str, Any]], precision: str = "fp32") -> Path:
    """Write ``directory/state.pt``; ``model`` must already be unwrapped from DDP; ``rng``: every rank's
    :func:`rng_state`, in rank order (each rank draws its own augmentation stream); ``precision``: what the run's
    ``train.precision`` resolved to (``fp32`` or ``bf16``), kept by a resumed run."""
    path = Path(directory) / STATE_FILE
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler_state(scheduler),
        "epoch": int(epoch),
        "rng": to_tensors(list(rng)),
        "actor": to_tensors(actor_state),
        "history": history,
        "precision": precision,
    }, path)
    return path


def load_state(directory: str | Path) -> dict[str, Any]:
    """Read ``directory/state.pt`` on the CPU (``weights_only=True``); the actor state comes back as NumPy."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    state["actor"] = to_numpy(state["actor"])
    return state


def load_init_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Warm start (``train.init_checkpoint``): copy the model weights of a run checkpoint (a folder holding
    ``state.pt``, or the file itself) into ``model``; optimizer, schedule and epoch start fresh."""
    file = Path(path) / STATE_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UserError(f"train.init_checkpoint: {path} is not a checkpoint folder or {STATE_FILE} file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    except Exception as exc:  # torch raises pickle, zip and runtime (key/shape mismatch) errors for a wrong file
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"train.init_checkpoint: {file}: not a checkpoint of this model "
                        f"({type(exc).__name__}: {first_line})") from exc
