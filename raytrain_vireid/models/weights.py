"""Reading checkpoint files and loading the matching tensors into a model, with a clear report."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from raytrain_vireid.errors import UserError

log = logging.getLogger(__name__)

_NESTED_KEYS = ("state_dict", "model")
_WRAPPER_PREFIXES = ("module.",)


@dataclass
class LoadReport:
    """What a weight load did: keys loaded, model keys left missing, file keys unused, shape mismatches."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts plus the first few names of each problem list."""

        def head(names: list[str]) -> str:
            return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

        parts = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape-mismatched", self.mismatched)):
            if keys:
                parts.append(f"{len(keys)} {name} ({head(keys)})")
        return "; ".join(parts)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint of tensors (``weights_only``) and return its flat state dict.

    Accepts a plain state dict or one nested under ``"state_dict"``/``"model"``; strips a ``module.``
    prefix left by DataParallel/DDP. Raises UserError naming the path when missing or unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: pretrained weights file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for a bad file
        raise UserError(f"{path}: cannot read weights file ({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
    for key in _NESTED_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise UserError(f"{path}: weights file holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> LoadReport:
    """Copy every tensor of ``state`` whose name and shape match ``module``; log and return the report.

    Raises UserError when nothing matched (wrong architecture or wrong file), naming ``source``.
    """
    own = module.state_dict()
    report = LoadReport(source=source)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)}!={tuple(own[key].shape)}")
        else:
            usable[key] = value
    if not usable:
        raise UserError(f"{source}: no tensor in the weights file matches the model "
                        f"({len(state)} tensors, e.g. {', '.join(list(state)[:3]) or 'none'})")
    module.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = [k for k in own if k not in usable]
    log.info("pretrained weights %s", report.summary())
    return report
