"""Training throughput: the Ray trainer (1 and 2 workers) against a plain single-process PyTorch loop.

What is measured (all in one run, on this machine):
- plain: the same model, data pipeline (``train.batches.EpochImages``), batch plan (P×K sampler), loss and
  memory updates (those of the supervised bound, see below: an identity classifier, no memories), in one Python
  process without Ray — images/s of the training steps only, at the run's ``train.precision`` and, for comparison,
  in float32 and (on a CPU with native bfloat16) in bfloat16;
- ray-1 / ray-2: ``train.launch.fit`` with 1 and 2 Ray Train workers (DDP, gloo), the ``images_per_s``
  the loop logs for its training phase (global over ranks), same settings;
- the per-epoch phase breakdown (extract, ship to actor, relabel, train, evaluate) logged by the
  unsupervised ray-1 run.
The plain loop is seeded as the trainer's rank 0 is; the mean loss of both sides is printed as the check that they
took the same steps (``tests/test_benchmark_train_throughput.py`` checks it against Ray's local mode).
Training steps use ``--supervised`` labels so that both sides run the same batches without depending
on what clustering finds; the breakdown run clusters normally.

    python benchmarks/train_throughput.py [--iters 30] [--ids 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import ray
import torch

import raytrain_vireid
from raytrain_vireid.config import Config, build_config
from raytrain_vireid.cpu import cpu_model
from raytrain_vireid.memory.actor import supervised_labelset
from raytrain_vireid.train.batches import EpochImages
from raytrain_vireid.train.extract import extract_features
from raytrain_vireid.train.launch import fit, prepare_data
from raytrain_vireid.models.precision import autocast_dtype, native_bf16
from raytrain_vireid.train.loop import (FINAL_EVAL_FILE, build_method, build_model_from_config, build_optimizer,
                                        forward_views, gather_batch, make_batch, seed_rngs)
from raytrain_vireid.train.ray_logging import SETUP_HOOK
from raytrain_vireid.train.report import read_metrics

PHASES = ("time_extract", "time_ship", "time_relabel", "time_train", "time_eval")


def machine() -> str:
    model = cpu_model() or "unknown CPU"
    return (f"{os.cpu_count()} cores, {model}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"ray {ray.__version__}, numpy {np.__version__}, raytrain_vireid {raytrain_vireid.__version__}")


def settings(storage: Path, cache: Path, name: str, workers: int, iters: int, ids: int, *extra: str) -> Config:
    return build_config(overrides=[
        f"run.storage_path={storage}", f"run.name={name}", f"run.num_workers={workers}", "run.progress=plain",
        f"data.cache_dir={cache}", f"data.synthetic_ids={ids}", "train.epochs=1", f"train.iters_per_epoch={iters}",
        "train.warmup_epochs=0", "eval.trials=1", *extra])


class PlainRun(NamedTuple):
    images_per_s: float
    loss: float  # mean over the steps: what the trainer logs as its epoch's ``loss``


def plain_loop(config: Config, iters: int) -> PlainRun:
    """Images/s of the training steps in one process: the trainer's own pieces, no Ray, no DDP, seeded as the
    trainer's rank 0 is, so that a 1-worker run of the same settings trains on the same batches."""
    data = prepare_data(config)
    seed_rngs(config.train.seed, rank=0)
    method, model = build_method(config, build_model_from_config(config), data.train)
    optimizer, _ = build_optimizer(config, model)
    modality = data.train["modality"].to_numpy().astype(np.int8)
    cpu = torch.device("cpu")
    amp_dtype = autocast_dtype(config.train.precision, cpu)  # fp32 or bf16 (main() sets it explicitly)
    feats = extract_features(model, data.train, cpu, height=config.data.height, width=config.data.width,
                             amp_dtype=amp_dtype)
    labelset = supervised_labelset(feats, modality, data.train["pid"].to_numpy(), epoch=0)
    method.on_labels(labelset, cpu)
    sampler = method.sampler(labelset, 0, 0, 1)
    plan = [sampler.batch(0, it) for it in range(iters)]
    labels, cross = torch.as_tensor(labelset.labels), torch.as_tensor(labelset.cross)
    images = EpochImages(data.train, config)
    model.train()
    rows, loss_sum, start = 0, 0.0, time.perf_counter()
    for x_v, x_a, x_r, rows_v, rows_r in images.iterate(plan):
        outputs = forward_views(model, x_v, x_a, x_r, cpu, amp_dtype)
        batch = make_batch(rows_v, rows_r, labels, cross)
        loss, _ = method.loss(outputs, batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            method.update_memories(gather_batch(batch, {h: outputs[h] for h in model.heads}))
        rows += len(batch.index)
        loss_sum += float(loss.detach())
    return PlainRun(rows / (time.perf_counter() - start), loss_sum / iters)


def ray_run(config: Config) -> dict[str, float]:
    fit(config)
    return read_metrics(Path(config.run.storage_path) / config.run.name)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=30, help="training iterations per measurement")
    parser.add_argument("--ids", type=int, default=60, help="synthetic identities")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        storage, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        supervised = ("supervised=true",)
        base = settings(storage, cache, "plain", 0, args.iters, args.ids, *supervised)
        prepare_data(base)  # generate the synthetic data before anything is timed
        torch.set_num_threads(1)  # a Ray worker with 1 CPU runs torch with 1 thread: compare like with like
        # Without native bfloat16 the CPU emulates it, far slower (a 2-core Zen 3, one thread: the two-stream
        # ResNet-18's forward and backward pass on 96 images took 56-61 s against 1.7-2.4 s in float32): the loop
        # would take half an hour, and `auto` never picks it there.
        bf16 = native_bf16(torch.device("cpu"))
        by_precision = {p: plain_loop(settings(storage, cache, "plain", 0, args.iters, args.ids, *supervised,
                                               f"train.precision={p}"), args.iters)
                        for p in (("fp32", "bf16") if bf16 else ("fp32",))}
        torch.set_num_threads(os.cpu_count() or 1)
        ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False,
                 runtime_env={"worker_process_setup_hook": SETUP_HOOK})
        try:
            one = ray_run(settings(storage, cache, "ray1", 1, args.iters, args.ids, *supervised))
            resolved = json.loads((storage / "ray1" / FINAL_EVAL_FILE).read_text())["precision"]
            plain = by_precision[resolved]  # the plain loop at the precision the Ray runs resolved train.precision to
            two = ray_run(settings(storage, cache, "ray2", 2, args.iters, args.ids, *supervised))
            phases = ray_run(settings(storage, cache, "phases", 1, args.iters, args.ids))
        finally:
            ray.shutdown()
    b = base.train
    print(f"settings: ResNet-{base.model.depth} from scratch, {base.data.height}x{base.data.width}, "
          f"P={b.ids_per_modality} x K={b.instances} per modality (2 visible views + 1 infrared view per step), "
          f"{args.iters} iterations, {args.ids} synthetic ids, 1 torch thread per process, train.precision="
          f"{b.precision} (here {resolved}; native bfloat16: {bf16})")
    print(f"plain loop in float32     : {by_precision['fp32'].images_per_s:8.1f} images/s")
    if bf16:
        print(f"plain loop in bfloat16    : {by_precision['bf16'].images_per_s:8.1f} images/s  "
              f"(ratio to float32 {by_precision['bf16'].images_per_s / by_precision['fp32'].images_per_s:.2f})")
    else:
        print("plain loop in bfloat16    : not run (no native bfloat16 on this CPU: emulated, far slower)")
    print(f"plain single-process loop : {plain.images_per_s:8.1f} images/s  (in {resolved}, as the Ray runs)")
    print(f"Ray Train, 1 worker       : {one['images_per_s']:8.1f} images/s  (ratio to plain {one['images_per_s'] / plain.images_per_s:.2f})")
    print(f"mean loss of the steps    : plain {plain.loss:.6f}, Ray 1 worker {one['loss']:.6f} (same seed, batches "
          "and augmentations: equal up to DDP's float rounding)")
    print(f"Ray Train, 2 workers      : {two['images_per_s']:8.1f} images/s  (ratio to 1 worker {two['images_per_s'] / one['images_per_s']:.2f})")
    print("per-epoch phases (1 worker, clustering on): " + ", ".join(
        f"{k[5:]} {phases[k]:.1f} s" for k in PHASES if k in phases))


if __name__ == "__main__":
    main()
