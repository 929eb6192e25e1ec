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

from raytrain_vireid.errors import UserError
from raytrain_vireid.train.checkpoint import (load_init_weights, load_state, rank_rng_state, rng_state, save_state,
                                             to_numpy, to_tensors)
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
    random.seed("0/1")
    rank1 = rng_state()  # another rank's stream
    expected_rank1 = random.random()
    np.random.seed(5)
    random.seed(6)
    actor_state = {"features": {"global": np.ones((3, 2), np.float16)}, "filled": np.ones(3, bool)}
    save_state(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=7, actor_state=actor_state,
               history=[{"epoch": 7, "mAP": 0.5}], rng=[rng_state(), rank1], precision="bf16")
    expected_numpy, expected_python = np.random.rand(), random.random()

    state = load_state(tmp_path)  # weights_only=True inside
    assert state["epoch"] == 7 and state["history"] == [{"epoch": 7, "mAP": 0.5}] and state["precision"] == "bf16"
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
    set_rng_state(rank_rng_state(state["rng"], 0))
    assert (np.random.rand(), random.random()) == (expected_numpy, expected_python)
    set_rng_state(rank_rng_state(state["rng"], 1))  # each rank gets its own stream back
    assert random.random() == expected_rank1 != expected_python
    assert rank_rng_state(state["rng"], 2) is None  # a rank the saved group did not have
    assert rank_rng_state(state["rng"][0], 2) is state["rng"][0]  # an older single-state checkpoint serves all
    assert state["actor"]["features"]["global"].dtype == np.float16


def test_warm_start_copies_weights_and_refuses_another_models_checkpoint(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.1)
    save_state(tmp_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=3, actor_state={}, history=[],
               rng=[])
    fresh = torch.nn.Linear(4, 2)
    load_init_weights(fresh, tmp_path)  # the checkpoint folder (state.pt inside) ...
    assert torch.equal(fresh.weight, model.weight)
    with pytest.raises(UserError, match=r"train.init_checkpoint: .*state.pt: not a checkpoint of this model \(RuntimeError"):
        load_init_weights(torch.nn.Linear(5, 2), tmp_path / "state.pt")  # ... or the file; wrong shapes
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(UserError, match=r"notes.json: not a checkpoint of this model \(UnpicklingError"):
        load_init_weights(fresh, tmp_path / "notes.json")
    with pytest.raises(UserError, match="is not a checkpoint folder or state.pt file"):
        load_init_weights(fresh, tmp_path / "missing")


def _transform_names(images, view: str) -> list[str]:
    return [type(t).__name__ for t in images.transforms[view].transforms]


def test_stage2_pipelines_follow_the_configured_policy_and_warmup_stays_on_stage1():
    from types import SimpleNamespace

    import pyarrow as pa

    from raytrain_vireid.config import build_config
    from raytrain_vireid.methods import get_method
    from raytrain_vireid.train.batches import EpochImages
    from raytrain_vireid.train.loop import Worker

    config = build_config(method="mult", overrides=[
        "augment.visible=[linear, erasing]", "augment.visible_aug=[color_jitter, channel_exchange]",
        "augment.infrared=[color_jitter, adaptive_gray]",
        "augment.stage2={visible: [erasing], visible_aug: [channel_exchange], infrared: [adaptive_gray]}",
        "stage.stage2_epoch=3", "train.warmup_epochs=4"])
    table = pa.table({"path": ["a.jpg", "b.jpg"]})
    stage1, stage2 = EpochImages(table, config, 1), EpochImages(table, config, 2)
    assert "LinearTransform" in _transform_names(stage1, "visible")
    assert "LinearTransform" not in _transform_names(stage2, "visible")
    assert "ChannelRandomErasing" in _transform_names(stage2, "visible")
    for view in ("visible_aug", "infrared"):  # ColorJitter (inside RandomApply) only in stage 1
        assert "RandomApply" in _transform_names(stage1, view)
        assert _transform_names(stage2, view).count("RandomApply") == (1 if view == "visible_aug" else 0)
    # The worker's choice: warm-up epochs (0-3) on the stage-1 policy even past stage.stage2_epoch, then stage 2.
    worker = SimpleNamespace(config=config, table=table, images={},
                             method=get_method("mult")(config, ("global",), [0, 1]))
    chosen = {epoch: Worker.epoch_images(worker, epoch) for epoch in range(6)}
    assert "LinearTransform" in _transform_names(chosen[3], "visible")
    assert "LinearTransform" not in _transform_names(chosen[4], "visible")
    assert chosen[4] is chosen[5] and chosen[0] is chosen[3]  # built once per stage


def test_gather_batch_keeps_trailing_shapes_of_part_outputs():
    from raytrain_vireid.methods.base import Batch
    from raytrain_vireid.train.loop import gather_batch

    batch = Batch(index=torch.arange(6), view=torch.tensor([0, 0, 1, 1, 2, 2]), labels=torch.arange(6),
                  cross=-torch.ones(6, dtype=torch.long))
    features = {"global": torch.randn(6, 4), "pg": torch.randn(6, 3, 4, requires_grad=True)}
    out = gather_batch(batch, features)  # single process: all-gather is the identity
    assert out.features["pg"].shape == (6, 3, 4) and not out.features["pg"].requires_grad
    assert torch.equal(out.features["pg"], features["pg"].detach()) and torch.equal(out.features["global"], features["global"])
    assert torch.equal(out.labels, batch.labels) and torch.equal(out.view, batch.view)


def test_feature_extraction_leaves_the_global_torch_generator_alone(tmp_path):
    """Evaluating must not change training: the crops and flips draw from torch's global generator."""
    import pyarrow as pa
    from PIL import Image

    from raytrain_vireid.models import build_model
    from raytrain_vireid.train.extract import extract_features

    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 64), (40 * i, 10, 200)).save(path)
        paths.append(str(path))
    table = pa.table({"path": paths, "modality": pa.array([0, 0, 1, 1], pa.int8())})
    model = build_model("resnet", depth=18, pretrained=None).eval()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    features = extract_features(model, table, torch.device("cpu"), height=64, width=32, batch_size=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(np.isfinite(values).all() and values.shape[0] == 4 for values in features.values())


def random_images(tmp_path):
    """Four random 64×32 images on disk (two visible, two infrared): their pixels and their table."""
    import pyarrow as pa
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for _ in range(4)]
    paths = [tmp_path / f"c{i}.png" for i in range(4)]
    for image, path in zip(pixels, paths):
        Image.fromarray(image).save(path)
    return pixels, pa.table({"path": [str(p) for p in paths], "modality": pa.array([0, 0, 1, 1], pa.int8())})


def imagenet_normalised(images):
    """(B, 3, H, W) pixels in [0, 1] as the test transform normalises them."""
    from raytrain_vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return (images - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def test_visible_gray_extraction_embeds_the_luminance_of_visible_images_only(tmp_path):
    """``pseudo.visible_gray``: a visible image is embedded as its luminance (0.2989 R + 0.5870 G + 0.1140 B in all
    three channels, the channel ops' definition) would be; infrared is untouched; Python's random stream too."""
    import random

    from raytrain_vireid import VISIBLE
    from raytrain_vireid.models import build_model
    from raytrain_vireid.models.features import embed
    from raytrain_vireid.train.extract import extract_features

    pixels, table = random_images(tmp_path)
    model = build_model("resnet", depth=18, pretrained=None).eval()
    kwargs = dict(height=64, width=32, batch_size=4)
    random.seed(5)
    before = random.getstate()
    as_gray = extract_features(model, table, torch.device("cpu"), visible_gray=True, **kwargs)["global"]
    assert random.getstate() == before
    in_colour = extract_features(model, table, torch.device("cpu"), **kwargs)["global"]

    rgb = torch.from_numpy(np.stack(pixels[:2])).permute(0, 3, 1, 2).float() / 255
    luminance = (0.2989 * rgb[:, 0] + 0.5870 * rgb[:, 1] + 0.1140 * rgb[:, 2]).unsqueeze(1).expand(-1, 3, -1, -1)
    reference = embed(model, imagenet_normalised(luminance), VISIBLE)["global"].numpy()
    np.testing.assert_allclose(as_gray[:2], reference, atol=1e-5)
    np.testing.assert_array_equal(as_gray[2:], in_colour[2:])
    assert np.abs(as_gray[:2] - in_colour[:2]).max() > 1e-2


def test_extraction_without_flip_embeds_each_image_once(tmp_path):
    """``pseudo.flip=false``: each image's own features, not their average with its mirror image's."""
    from raytrain_vireid import INFRARED, VISIBLE
    from raytrain_vireid.models import build_model
    from raytrain_vireid.models.features import embed
    from raytrain_vireid.train.extract import extract_features

    pixels, table = random_images(tmp_path)
    model = build_model("resnet", depth=18, pretrained=None).eval()
    kwargs = dict(height=64, width=32, batch_size=4)
    unflipped = extract_features(model, table, torch.device("cpu"), flip=False, **kwargs)["global"]
    flipped = extract_features(model, table, torch.device("cpu"), **kwargs)["global"]
    for modality, rows in ((VISIBLE, slice(0, 2)), (INFRARED, slice(2, 4))):
        images = imagenet_normalised(torch.from_numpy(np.stack(pixels[rows])).permute(0, 3, 1, 2).float() / 255)
        np.testing.assert_allclose(unflipped[rows], embed(model, images, modality, flip=False)["global"].numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(flipped[rows], embed(model, images, modality)["global"].numpy(), atol=1e-5)
    assert np.abs(unflipped - flipped).max() > 1e-3


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fused_optimizer_steps_match_the_per_parameter_loop(optimizer):
    """build_optimizer's fused update is PyTorch's per-parameter loop in one kernel: fed the same gradients, the
    parameters agree to float32 rounding (1e-7 after three steps; Adam's β₂ at 0.99, its ε at 1e-6, AMSGrad or an
    SGD momentum 1 % higher each fail it). Each step's gradients come from the fused copy and are given to
    the loop's as they are: through the network a last-bit difference can flip an Adam update of a near-zero
    gradient, which says nothing about the update's arithmetic."""
    from raytrain_vireid.config import build_config
    from raytrain_vireid.models import param_groups
    from raytrain_vireid.train.loop import build_model_from_config, build_optimizer

    config = build_config(overrides=[f"train.optimizer={optimizer}", "train.weight_decay=0.01"])
    torch.manual_seed(0)
    nets = [build_model_from_config(config) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    before = [p.detach().clone() for p in nets[0].parameters()]
    built, _ = build_optimizer(config, nets[0])
    assert all(group["fused"] for group in built.param_groups)
    groups, t = param_groups(nets[1], config.train.lr, config.train.weight_decay), config.train
    reference = (torch.optim.Adam(groups, lr=t.lr, foreach=False) if optimizer == "adam"
                 else torch.optim.SGD(groups, lr=t.lr, momentum=t.sgd_momentum, foreach=False))
    images = torch.Generator().manual_seed(1)
    nets[0].train()
    for _ in range(3):
        visible, infrared = torch.randn(4, 3, 64, 32, generator=images), torch.randn(2, 3, 64, 32, generator=images)
        built.zero_grad()
        nets[0](visible=visible, infrared=infrared)["global"].pow(3).sum().backward()
        for mine, theirs in zip(nets[0].parameters(), nets[1].parameters()):
            theirs.grad = None if mine.grad is None else mine.grad.clone()
        built.step()
        reference.step()
    assert not all(torch.equal(p, b) for p, b in zip(nets[0].parameters(), before))  # the steps moved them
    for (name, mine), theirs in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-7, msg=name)


def test_image_cache_keeps_what_fits_and_changes_no_feature(tmp_path, monkeypatch):
    """``run.image_cache_mb``: a second extraction of the same rows decodes only what did not fit in the budget
    (each modality's entry is all its images or whole batches of them, as 8-bit pixels), and the features are
    bit-identical to an uncached extraction's, in colour and in ``pseudo.visible_gray``'s luminance."""
    import pyarrow as pa
    from PIL import Image

    from raytrain_vireid.data import datasets
    from raytrain_vireid.models import build_model
    from raytrain_vireid.train.extract import ImageCache, extract_features

    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):  # 2 visible, 3 infrared
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (70, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    table = pa.table({"path": paths, "modality": pa.array([0, 0, 1, 1, 1], pa.int8())})
    model = build_model("resnet", depth=18, pretrained=None).eval()
    decoded = []
    real_open = datasets.open_image
    monkeypatch.setattr(datasets, "open_image", lambda path: decoded.append(path) or real_open(path))
    kwargs = dict(height=64, width=32, batch_size=2)
    plain = extract_features(model, table, torch.device("cpu"), **kwargs)["global"]
    gray = extract_features(model, table, torch.device("cpu"), visible_gray=True, **kwargs)["global"]
    assert not np.array_equal(gray[:2], plain[:2]) and np.array_equal(gray[2:], plain[2:])
    one_image_mb = 3 * 64 * 32 / 2**20  # uint8 pixels
    caches = {}
    for budget, second_decodes in ((5 * one_image_mb, []), (4.5 * one_image_mb, paths[4:]),
                                   (3.5 * one_image_mb, paths[2:]), (1.5 * one_image_mb, paths), (0, paths)):
        cache = caches[budget] = ImageCache(budget)
        first = extract_features(model, table, torch.device("cpu"), image_cache=cache, **kwargs)["global"]
        decoded.clear()
        second = extract_features(model, table, torch.device("cpu"), image_cache=cache, **kwargs)["global"]
        assert decoded == second_decodes, budget
        assert cache.used <= cache.budget
        np.testing.assert_array_equal(first, plain)
        np.testing.assert_array_equal(second, plain)
        decoded.clear()
        np.testing.assert_array_equal(extract_features(model, table, torch.device("cpu"), image_cache=cache,
                                                       visible_gray=True, **kwargs)["global"], gray)
        assert decoded == second_decodes, budget  # the stored pixels serve the luminance too
    other = table.take(pa.array([1, 0, 2, 3, 4]))  # visible rows in another order: a new entry, not the cached one
    decoded.clear()
    swapped = extract_features(model, other, torch.device("cpu"), image_cache=caches[5 * one_image_mb], **kwargs)
    assert decoded == [paths[1], paths[0]]
    np.testing.assert_array_equal(swapped["global"], plain[[1, 0, 2, 3, 4]])
