"""Test-protocol evaluation of the model on one worker (rank 0): per-epoch metrics and the final table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import pyarrow as pa

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.eval.evaluate import EvalResult, evaluate, evaluate_pairs
from raytrain_vireid.train.extract import ImageCache, Progress, test_embedding


@dataclass(frozen=True)
class TestSet:
    """Which protocol to run on which dataset root (``trials=None``: the protocol's default trials)."""

    protocol: str
    root: str
    trials: tuple[int, ...] | None = None


def evaluate_model(model: nn.Module, device: torch.device, testset: TestSet, *, height: int, width: int,
                   loader_workers: int = 0, progress: Progress | None = None, rank: int = 0,
                   world_size: int = 1, amp_dtype: torch.dtype | None = None,
                   image_cache: ImageCache | None = None) -> EvalResult:
    """Run ``testset``'s protocol with the model's flip-averaged features (all heads concatenated).

    With ``world_size`` > 1 every rank calls this: the images are embedded in shares and all-gathered.
    """
    embed = test_embedding(model, device, rank, world_size, height=height, width=width,
                           loader_workers=loader_workers, progress=progress, amp_dtype=amp_dtype,
                           image_cache=image_cache)
    return evaluate(testset.protocol, testset.root, embed, trials=testset.trials)


def validate_model(model: nn.Module, device: torch.device, table: pa.Table, *, height: int, width: int,
                   loader_workers: int = 0, progress: Progress | None = None, rank: int = 0,
                   world_size: int = 1, amp_dtype: torch.dtype | None = None,
                   image_cache: ImageCache | None = None) -> EvalResult:
    """Score identities carved from the training split: infrared queries against every visible image."""
    embed = test_embedding(model, device, rank, world_size, height=height, width=width,
                           loader_workers=loader_workers, progress=progress, amp_dtype=amp_dtype,
                           image_cache=image_cache)
    features = embed(table)
    modality, pids = table["modality"].to_numpy(), table["pid"].to_numpy()
    query, gallery = modality == INFRARED, modality == VISIBLE
    return evaluate_pairs(features[query], features[gallery], pids[query], pids[gallery])


def epoch_metrics(result: EvalResult) -> dict[str, float]:
    """Headline ``mAP``/``r1``/``mINP`` (first setting) plus ``<setting>_<metric>`` for every setting."""
    first = next(iter(result.settings.values())).mean.metrics()
    out = {key: first[key] for key in ("mAP", "r1", "mINP")}
    for name, setting in result.settings.items():
        out.update({f"{name}_{key}": value for key, value in setting.mean.metrics().items()})
    return out


def final_table(result: EvalResult) -> dict[str, Any]:
    """``{"rows": [...], "cmc": {...}}`` as ``train.report.write_report`` expects."""
    rows, cmc = [], {}
    for name, setting in result.settings.items():
        label = f"{result.protocol} {name}"
        rows.append({"name": label, **setting.mean.metrics()})
        cmc[label] = [float(v) for v in setting.mean.cmc]
    return {"rows": rows, "cmc": cmc}
