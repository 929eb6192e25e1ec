"""``train_loop_per_worker``: the per-worker training loop run by Ray Train's TorchTrainer.

Per epoch: extract this rank's shard → memory actor → barrier → rank 0 relabels → barrier → every
rank takes the LabelSet → the method builds its memories → ``iters`` steps (sampler batch → model →
method loss → backward → all-gathered memory update) → evaluation (rank 0) → ``ray.train.report``
with a checkpoint written by rank 0. Warm-up epochs (``train.warmup_epochs``) replace the relabel
step by instance contrast. Training images get the augmentation policies of the epoch's stage
(``augment.stage2`` from the method's stage 2; warm-up epochs stay on stage 1). Everything
method-specific is a hook of ``methods.base.Method``; the one method-independent term, the hand-crafted prior's
cross-modality neighbours (``loss.prior_cross``, ``methods.prior``), is added to the method's loss outside
warm-up epochs.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray.train
import ray.train.torch
import torch
from torch import nn

from raytrain_vireid.config import Config, config_from_dict
from raytrain_vireid.data.synthetic import default_cache_dir
from raytrain_vireid.memory.actor import get_memory_actor
from raytrain_vireid.methods import get_method
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch, Method
from raytrain_vireid.methods.prior import PriorNeighbourTerm
from raytrain_vireid.methods.supervised import SupervisedIdentity
from raytrain_vireid.methods.warmup import InstanceWarmup
from raytrain_vireid.models import build_model, param_groups
from raytrain_vireid.models.identity import WithIdentityClassifier
from raytrain_vireid.models.precision import (DTYPES, RememberedChoice, autocast, autocast_dtype, cpu_identity,
                                              float32_outputs, precision_name)
from raytrain_vireid.train.batches import EpochImages
from raytrain_vireid.train.checkpoint import (load_init_weights, load_scheduler_state, load_state, rank_rng_state,
                                             rng_state, save_state, set_rng_state)
from raytrain_vireid.train.distributed import (all_gather_objects, all_gather_rows, all_reduce_mean, barrier,
                                               broadcast_buffers, spread)
from raytrain_vireid.eval.evaluate import EvalResult
from raytrain_vireid.train.evaluation import TestSet, epoch_metrics, evaluate_model, final_table, validate_model
from raytrain_vireid.train.extract import ImageCache, extract_features, shard_rows
from raytrain_vireid.train.progress import log, make_progress
from raytrain_vireid.train.report import MetricsLogger

FINAL_EVAL_FILE = "final_eval.json"
PRECISION_FILE = "precision_auto.json"  # train.precision auto's remembered decisions, in the data cache folder


def build_model_from_config(config: Config) -> nn.Module:
    """The configured backbone (``model.*``; ViT sized to ``data.height × data.width``)."""
    m = config.model
    if m.arch == "vit":
        return build_model("vit", config=f"vit_{m.vit_size}", pretrained=m.pretrained,
                           image_size=(config.data.height, config.data.width), drop_path=m.drop_path, stem=m.vit_stem)
    return build_model("resnet", depth=m.depth, pretrained=m.pretrained, last_stride=m.last_stride, gem_p=m.gem_p,
                       parts=m.parts)


def build_optimizer(config: Config, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam or SGD over the trainable parameters, MultiStepLR stepped once per epoch.

    ``fused=True``: PyTorch's one-kernel update (CPU and CUDA). Left to itself PyTorch takes the per-parameter loop
    on the CPU; on a 2-core Xeon VM the multi-tensor (``foreach``) update still took 13 % of a training step of the
    synthetic default, and the fused one does the same arithmetic 3 to 4 times faster (benchmarks/README.md). It rounds
    differently in the last bit, so runs' digits differ from those of the loop (and of commits before it).
    """
    t = config.train
    groups = param_groups(model, t.lr, t.weight_decay)
    if t.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.sgd_momentum, fused=True)
    else:
        optimizer = torch.optim.Adam(groups, lr=t.lr, fused=True)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, t.lr_milestones, t.lr_gamma)


def build_method(config: Config, net: nn.Module, table: pa.Table) -> tuple[Method, nn.Module]:
    """The run's step hooks and the network they train: the configured method, or with ``supervised`` the upper
    bound (:class:`SupervisedIdentity`, whose identity classifier is attached to the network)."""
    modality = table["modality"].to_numpy().astype(np.int8)
    if config.supervised:
        method = SupervisedIdentity(config, tuple(net.heads), modality, table["pid"].to_numpy())
        return method, WithIdentityClassifier(net, method.num_ids)
    return get_method(config.method)(config, tuple(net.heads), modality), net


def make_batch(rows_v: torch.Tensor, rows_r: torch.Tensor, labels: torch.Tensor, cross: torch.Tensor) -> Batch:
    """Rows in forward order [v; a; r] with their view, own label and cross label."""
    index = torch.cat([rows_v, rows_v, rows_r])
    view = torch.cat([torch.full_like(rows_v, VIEW_V), torch.full_like(rows_v, VIEW_A), torch.full_like(rows_r, VIEW_R)])
    return Batch(index=index, view=view, labels=labels[index], cross=cross[index])


def forward_views(model: nn.Module, x_v: torch.Tensor, x_a: torch.Tensor, x_r: torch.Tensor, device: torch.device,
                  amp_dtype: torch.dtype | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
    """The training forward pass: visible views [v; a] and infrared view r on ``device``, under autocast in
    ``amp_dtype`` if given, outputs in float32 for the losses and memories."""
    with autocast(device, amp_dtype):
        outputs = model(visible=torch.cat([x_v, x_a]).to(device), infrared=x_r.to(device), **kwargs)
    return float32_outputs(outputs)


def precision_probe(net: nn.Module, rows: int, height: int, width: int,
                    device: torch.device) -> Callable[[torch.dtype | None], None]:
    """``step(dtype)``: one training forward and backward of ``rows`` images per view at that autocast dtype, on a
    copy of ``net`` with random images from a private generator, so that probing leaves the network, its BatchNorm
    statistics and every RNG as they were (``train.precision: auto``). The copy is made at the first call: a decision
    remembered for this machine (``models.precision.RememberedChoice``) makes none."""

    @functools.cache
    def copies() -> tuple[nn.Module, torch.Tensor]:
        images = torch.rand(3, rows, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
        return copy.deepcopy(net).train(), images

    def step(dtype: torch.dtype | None) -> None:
        probe, images = copies()
        outputs = forward_views(probe, *images, device, dtype)
        sum(outputs[head].sum() for head in probe.heads).backward()
        probe.zero_grad(set_to_none=True)

    return step


def seed_rngs(seed: int, rank: int, salt: str = "") -> None:
    """Seed torch and NumPy with ``seed``, and Python's ``random`` (the augmentations' stream) per rank, so that a
    run is reproducible and its ranks draw distinct augmentations."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(f"{seed}/{rank}{salt}")


def gather_batch(batch: Batch, features: dict[str, torch.Tensor]) -> Batch:
    """All ranks' rows and detached features (each (rows, ...), any trailing shape), concatenated in rank
    order (two collectives)."""
    ints = all_gather_rows(torch.stack([batch.index, batch.view, batch.labels, batch.cross], dim=1))
    keys = list(features)
    shapes = [features[k].shape[1:] for k in keys]
    flat = [features[k].detach().float().flatten(1) for k in keys]
    feats = all_gather_rows(torch.cat(flat, dim=1))
    parts = torch.split(feats, [f.shape[1] for f in flat], dim=1)
    return Batch(index=ints[:, 0], view=ints[:, 1], labels=ints[:, 2], cross=ints[:, 3],
                 features={k: part.reshape(-1, *shape) for k, part, shape in zip(keys, parts, shapes)})


class Worker:
    """State of one training worker; ``run()`` is the whole loop."""

    def __init__(self, loop_config: dict[str, Any]) -> None:
        quiet_report_logging()
        self.config = config = config_from_dict(loop_config["config"])
        self.table: pa.Table = loop_config["train_table"]
        self.testset = TestSet(**loop_config["testset"])
        self.val_table: pa.Table | None = loop_config.get("val_table")
        self.run_dir = Path(loop_config["run_dir"])
        self.actor = get_memory_actor(loop_config["actor_name"])
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.amp_dtype: torch.dtype | None = None  # train.precision, resolved in run()
        self.progress = make_progress(loop_config["progress"], self.rank)
        if config.run.num_workers > 0:  # torch's intra-op threads = this worker's CPUs, whatever imported torch first
            torch.set_num_threads(max(1, int(config.run.cpus_per_worker)))
        seed_rngs(config.train.seed, self.rank)
        net = build_model_from_config(config)
        if config.train.init_checkpoint:
            load_init_weights(net, config.train.init_checkpoint)
        self.method, net = build_method(config, net, self.table)
        # The part branch (model.parts) gets no gradient in warm-up epochs, in SALCR's stage 1 and under every
        # other method: DDP must look for its unused parameters.
        ddp = {"find_unused_parameters": True} if config.model.parts > 0 else None
        self.model = ray.train.torch.prepare_model(net, parallel_strategy_kwargs=ddp)
        self.net = getattr(self.model, "module", self.model)
        self.heads = tuple(self.net.heads)
        self.optimizer, self.scheduler = build_optimizer(config, self.net)
        self.warmup = InstanceWarmup(config, self.heads, self.method.modality)
        neighbours = loop_config.get("prior_neighbours")
        self.prior_term = None if neighbours is None else PriorNeighbourTerm(
            neighbours, self.method.modality, self.heads[0], config.memory.temperature, config.memory.instance_momentum)
        self.images: dict[int, EpochImages] = {}  # by augmentation stage, built when first needed
        self.image_cache = ImageCache(config.run.image_cache_mb)  # the shard's and the test set's, between epochs
        self.shard = shard_rows(self.table.num_rows, self.rank, self.world)
        self.start_epoch, self.history = 0, []
        self.logger = MetricsLogger(self.run_dir) if self.rank == 0 else None

    # ---- resume ---------------------------------------------------------------------------------
    def restore(self) -> str | None:
        """Continue from Ray Train's latest checkpoint, if any (model, optimizer, schedule, RNG, actor); returns the
        precision it was trained in (None: no checkpoint, or one written before it was kept)."""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            state = load_state(directory)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(self.scheduler, state["scheduler"])
        rng = rank_rng_state(state["rng"], self.rank)
        if rng is not None:
            set_rng_state(rng)
        else:  # the group grew since the checkpoint: a fresh stream of this rank's own, not another rank's
            seed_rngs(self.config.train.seed, self.rank, f"resumed-{state['epoch']}")
        self.start_epoch, self.history = state["epoch"] + 1, list(state["history"])
        if self.rank == 0:
            ray.get(self.actor.restore.remote(state["actor"]))
        barrier()
        if self.rank == 0:
            log(f"resumed after epoch {state['epoch']}")
        return state.get("precision")

    def choose_precision(self, restored: str | None) -> None:
        """``train.precision`` resolved once per run: a resumed run keeps the one its checkpoint was trained in;
        otherwise rank 0 resolves it (for ``auto``: as remembered for this machine and step, else by probing the
        step) and every rank takes its answer."""
        name, how = restored, "as its checkpoint" if restored is not None else ""
        if name is None:
            if self.rank == 0:
                t, data = self.config.train, self.config.data
                probe = remembered = None
                if t.precision == "auto":
                    rows = max(1, t.ids_per_modality * t.instances // self.world)
                    probe = precision_probe(self.net, rows, data.height, data.width, self.device)
                    remembered = RememberedChoice(
                        Path(data.cache_dir or default_cache_dir()).expanduser() / PRECISION_FILE,
                        {"cpu": cpu_identity(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "model": self.config.to_dict()["model"], "rows": rows, "size": [data.height, data.width]})
                name = precision_name(autocast_dtype(t.precision, self.device, probe, remembered))
                how = remembered.note if remembered is not None else ""
            name = all_gather_objects(name)[0]
        self.amp_dtype = DTYPES[name]
        if self.rank == 0:
            log(f"precision: {name} (train.precision={self.config.train.precision}" + (f"; {how})" if how else ")"))

    # ---- phases ---------------------------------------------------------------------------------
    def relabel(self, epoch: int, timings: dict[str, float]) -> tuple[Any, Any, dict[str, float]]:
        """Extract → actor → pseudo-labels. Returns (hooks, labelset or None, label metrics)."""
        data = self.config.data
        start = time.perf_counter()
        features = extract_features(self.net, self.table.take(pa.array(self.shard)), self.device, height=data.height,
                                    width=data.width, loader_workers=data.loader_workers,
                                    on_bad_image=data.on_bad_image, progress=self.progress,
                                    dtype=np.dtype(self.config.pseudo.feature_dtype),
                                    visible_gray=self.config.pseudo.visible_gray, flip=self.config.pseudo.flip,
                                    amp_dtype=self.amp_dtype,
                                    image_cache=self.image_cache)
        timings["time_extract"] = time.perf_counter() - start
        start = time.perf_counter()
        ray.get(self.actor.put_features.remote(self.shard, features))
        barrier()
        timings["time_ship"] = time.perf_counter() - start
        start = time.perf_counter()
        hooks, labelset, label_metrics = self.warmup, None, {}
        if self.config.supervised or epoch >= self.config.train.warmup_epochs:  # the upper bound has labels from epoch 0
            if self.rank == 0:
                ray.get(self.actor.relabel.remote(epoch, self.method.relabel_plan(epoch)))
            barrier()
            labelset = ray.get(self.actor.labels.remote(epoch))
            # the engine's own phase timings are sub-phases of time_relabel: keep them out of the time_* breakdown
            label_metrics = {("relabel_" + k if k.startswith("time_") else k): v for k, v in labelset.metrics.items()}
            if min(labelset.num_clusters.values()) >= self.world:
                method_needs = self.method.needs_features(labelset)
                if method_needs or self.prior_term is not None:  # one fetch from the actor serves both
                    features = self.all_features(tuple(self.net.feature_dims) if method_needs else self.heads[:1])
                if method_needs:
                    self.method.on_features(features, self.device)
                self.method.on_labels(labelset, self.device)
                if self.prior_term is not None:
                    self.prior_term.on_features(features, self.device)
                hooks = self.method
            else:  # too few pseudo-identities to give every rank one: instance contrast instead, this epoch only
                if self.rank == 0:
                    log(f"epoch {epoch}: only {labelset.num_clusters} clusters per modality for {self.world} workers; "
                        "instance contrast this epoch")
                labelset = None
        if hooks is self.warmup:
            self.warmup.on_features(self.all_features(self.heads), self.device)
        timings["time_relabel"] = time.perf_counter() - start
        return hooks, labelset, label_metrics

    def all_features(self, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Every training image's features of ``keys``, from the memory actor (rows = table index)."""
        return {k: ray.get(self.actor.get_features.remote(k)) for k in keys}

    def epoch_images(self, epoch: int) -> EpochImages:
        """Training images augmented with the policies of this epoch's stage (warm-up epochs: stage 1)."""
        stage = 1 if epoch < self.config.train.warmup_epochs else self.method.stage(epoch)
        if stage not in self.images:
            self.images[stage] = EpochImages(self.table, self.config, stage)
        return self.images[stage]

    def train_epoch(self, epoch: int, hooks: Any, labelset: Any, timings: dict[str, float]) -> dict[str, float]:
        """``hooks.iters_per_epoch(epoch)`` steps; returns the mean loss terms over the epoch and ranks."""
        n = self.table.num_rows
        labels = torch.tensor(self.warmup.labels() if labelset is None else labelset.labels, dtype=torch.long)
        cross_np = None if labelset is None else labelset.cross
        cross = torch.full((n,), -1, dtype=torch.long) if cross_np is None else torch.tensor(cross_np, dtype=torch.long)
        sampler = hooks.sampler(labelset, epoch, self.rank, self.world)
        iters = hooks.iters_per_epoch(epoch)
        plan = [sampler.batch(epoch, it) for it in range(iters)]
        sums: dict[str, float] = {}
        rows_seen = 0
        gathered_keys = (*self.heads, *(self.method.gathered_outputs if hooks is self.method else ()))
        prior_term = self.prior_term if hooks is self.method else None  # not in warm-up epochs
        self.model.train()
        start = time.perf_counter()
        images = self.epoch_images(epoch).iterate(plan)
        for x_v, x_a, x_r, rows_v, rows_r in self.progress(images, f"epoch {epoch} train", iters):
            batch = make_batch(rows_v, rows_r, labels, cross)
            batch = Batch(**{k: v.to(self.device) for k, v in batch.tensors().items()})
            outputs = forward_views(self.model, x_v, x_a, x_r, self.device, self.amp_dtype,
                                    **hooks.forward_kwargs(batch, epoch))
            loss, logs = hooks.loss(outputs, batch, epoch)
            if prior_term is not None:
                term = prior_term.loss(outputs, batch)
                logs["loss_prior_cross"] = float(term.detach())
                loss = loss + self.config.loss["prior_cross"] * term
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                gathered = gather_batch(batch, {k: outputs[k] for k in gathered_keys if k in outputs})
                hooks.update_memories(gathered)
                if prior_term is not None:
                    prior_term.update(gathered)
            for key, value in {"loss": float(loss.detach()), **logs}.items():
                sums[key] = sums.get(key, 0.0) + value
            rows_seen += len(batch.index)
        broadcast_buffers(self.net)  # rank 0's BN statistics for this epoch's extraction and evaluation on every rank
        timings["time_train"] = time.perf_counter() - start
        timings["images_per_s"] = all_reduce_mean(rows_seen / max(timings["time_train"], 1e-9), self.device) * self.world
        self.scheduler.step()
        # Memory replicas must be identical on every rank: the spread of their checksums is logged (0 expected).
        memories = [hooks.memories] + ([] if prior_term is None else [prior_term.memories])
        timings["memory_drift"] = spread(sum(map(memory_checksum, memories)), self.device)
        return {key: all_reduce_mean(value / iters, self.device) for key, value in sums.items()}

    def evaluate(self, epoch: int, timings: dict[str, float]) -> dict[str, float]:
        """Every ``eval.every`` epochs and after the last one (all ranks embed, rank 0 writes).

        With ``eval.select_on: val`` the headline ``mAP``/``r1``/``mINP`` are the carved validation
        identities' and the test protocol runs after the last epoch only (as ``test_*``); otherwise the
        test protocol is the per-epoch score, and the last epoch is what is reported either way.
        """
        last = epoch == self.config.train.epochs - 1
        if not (last or (epoch + 1) % self.config.eval.every == 0):
            return {}
        start = time.perf_counter()
        scores = {} if self.val_table is None else epoch_metrics(self.validate())
        if last or self.val_table is None:
            result = self.test()
            if last and self.rank == 0:
                write_json_atomic(self.run_dir / FINAL_EVAL_FILE,
                                  {"epoch": epoch, "precision": precision_name(self.amp_dtype), **final_table(result)})
            test_scores = epoch_metrics(result)
            scores = test_scores if self.val_table is None else {**{f"test_{k}": v for k, v in test_scores.items()}, **scores}
        timings["time_eval"] = time.perf_counter() - start
        return scores

    def validate(self) -> EvalResult:
        data = self.config.data
        return validate_model(self.net, self.device, self.val_table, height=data.height, width=data.width,
                              loader_workers=data.loader_workers, progress=self.progress, rank=self.rank,
                              world_size=self.world, amp_dtype=self.amp_dtype, image_cache=self.image_cache)

    def test(self) -> EvalResult:
        data = self.config.data
        return evaluate_model(self.net, self.device, self.testset, height=data.height, width=data.width,
                              loader_workers=data.loader_workers, progress=self.progress, rank=self.rank,
                              world_size=self.world, amp_dtype=self.amp_dtype, image_cache=self.image_cache)

    def evaluate_untrained(self) -> None:
        """``eval.untrained``: score the network before any training, logged as epoch −1."""
        if self.start_epoch != 0 or not self.config.eval.untrained:
            return
        metrics = epoch_metrics(self.test())
        if self.rank == 0:
            log(summary_line(-1, metrics) + " (untrained)")
            self.logger.log(-1, metrics)
        self.history.append({"epoch": -1, **metrics})

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        """``ray.train.report`` from every rank; rank 0 attaches the checkpoint and logs the metrics."""
        self.history.append(metrics)
        rng = all_gather_objects(rng_state())  # every rank's stream, so a resumed rank continues its own
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if self.logger is not None:
                self.logger.log(epoch, {k: v for k, v in metrics.items() if k != "epoch"})
                save_state(directory, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler, epoch=epoch,
                           actor_state=ray.get(self.actor.state.remote()), history=self.history, rng=rng,
                           precision=precision_name(self.amp_dtype))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)

    def run(self) -> None:
        self.choose_precision(self.restore())
        try:
            self.evaluate_untrained()
            for epoch in range(self.start_epoch, self.config.train.epochs):
                self.method.on_epoch_start(self.net, epoch)  # after restore(): a resumed run never repeats it
                timings: dict[str, float] = {}
                lr = self.optimizer.param_groups[0]["lr"]
                hooks, labelset, label_metrics = self.relabel(epoch, timings)
                losses = self.train_epoch(epoch, hooks, labelset, timings)
                scores = self.evaluate(epoch, timings)
                metrics = {"epoch": epoch, "lr": lr, **losses, **numeric(label_metrics), **scores, **timings}
                if self.rank == 0:
                    log(summary_line(epoch, metrics))
                self.report(epoch, metrics)
        finally:
            if self.logger is not None:
                self.logger.close()


def memory_checksum(memories: nn.Module) -> float:
    """Sum of every memory entry, in float64."""
    return float(sum(float(buf.double().sum()) for buf in memories.buffers()))


def quiet_report_logging() -> None:
    """Ray Train logs every report with all its metrics at INFO; our own epoch line says the same, shorter.
    (Its logger is named after its file, so it is reached through the module; skipped if Ray moves it.)"""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logger = getattr(context, "logger", None)
    if isinstance(logger, logging.Logger):
        logger.setLevel(logging.WARNING)


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite-number entries of ``values`` (what metrics.csv and Ray's report accept)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}


def summary_line(epoch: int, metrics: dict[str, float]) -> str:
    keys = ("loss", "mAP", "r1", "clusters_visible", "clusters_infrared", "images_per_s")
    return f"epoch {epoch}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point for ``TorchTrainer``: ``loop_config`` = config dict, training table, test set, run folder,
    memory-actor name and the progress mode (built by ``train.launch``)."""
    Worker(loop_config).run()
