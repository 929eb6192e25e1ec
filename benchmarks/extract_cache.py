"""What ``run.image_cache_mb`` saves: one worker's extraction of its training shard, images decoded every time against
images kept from the previous extraction (``train.extract.ImageCache``), in one process on this machine; and, for
scale, the same extraction through the field's one-image pipeline (Resize → ToTensor → Normalize per image in the
loader), which ``data.transforms.EvalTransform`` replaced by uint8 pixels finished a batch at a time.

A Ray worker of the default command (``--num-workers W``, one CPU each) extracts its shard (1/W of the training set,
flip-averaged, test transform) once per epoch, and the test set's share at every evaluation. Here the default
configuration's untrained network (float32, one torch thread, as a worker has) extracts shard 0 of W ``--repeats``
times each way, the three ways alternated so that a slow minute of a shared machine hits all; one untimed pass fills
the cache first. Prints the median seconds per pass of each way, the savings, the cache's size, and whether the
features of all ways are bit-identical (they must be).

    python benchmarks/extract_cache.py [--num-workers 2] [--repeats 5] [--ids N] [--cache-dir DIR] [--budget-mb MB]

``--budget-mb`` (default: ``run.image_cache_mb``) below the shard's size keeps only part of it, as on real data.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import machine  # noqa: E402

from raytrain_vireid.config import build_config  # noqa: E402
from raytrain_vireid.data.datasets import ImageDataset  # noqa: E402
from raytrain_vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from raytrain_vireid.errors import UserArgumentParser, run_cli  # noqa: E402
from raytrain_vireid.models.features import embed  # noqa: E402
from raytrain_vireid.train.extract import ImageCache, extract_features, shard_rows  # noqa: E402
from raytrain_vireid.train.launch import prepare_data  # noqa: E402
from raytrain_vireid.train.loop import build_model_from_config  # noqa: E402


def one_image_pipeline(model: torch.nn.Module, shard: pa.Table, height: int, width: int) -> np.ndarray:
    """The first head's features of ``shard`` (table order) with every image made a normalised float tensor in the
    loader, one at a time, as the field's pipelines do: the reference for what ``EvalTransform`` changes."""
    transform = T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out = np.zeros((shard.num_rows, model.feature_dims[model.heads[0]]), dtype=np.float32)
    modality = shard["modality"].to_numpy()
    for m in np.unique(modality):
        rows = np.flatnonzero(modality == m)
        position = 0
        for images, _ in DataLoader(ImageDataset(shard.take(pa.array(rows)), transform), batch_size=128):
            features = embed(model, images, int(m))[model.heads[0]]
            out[rows[position : position + len(images)]] = features.numpy()
            position += len(images)
    return out


def measure(num_workers: int, repeats: int, ids: int | None, cache_dir: str | None,
            budget_mb: float | None = None) -> list[str]:
    """The lines this benchmark prints."""
    overrides = ["train.precision=fp32"] + ([f"data.synthetic_ids={ids}"] if ids else []) + (
        [f"data.cache_dir={cache_dir}"] if cache_dir else [])
    config = build_config("baseline", overrides=overrides)
    torch.set_num_threads(1)
    train = prepare_data(config).train
    shard = train.take(pa.array(shard_rows(train.num_rows, 0, num_workers)))
    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config).eval()
    budget = config.run.image_cache_mb if budget_mb is None else budget_mb
    cache = ImageCache(budget)

    def extract(image_cache: ImageCache | None) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        features = extract_features(model, shard, torch.device("cpu"), height=config.data.height,
                                    width=config.data.width, image_cache=image_cache)
        return time.perf_counter() - start, features[model.heads[0]]

    def field_pipeline() -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        features = one_image_pipeline(model, shard, config.data.height, config.data.width)
        return time.perf_counter() - start, features

    _, reference = extract(cache)  # fills the cache (untimed)
    per_image, decoded, cached, identical = [], [], [], True
    for _ in range(repeats):
        ways = ((field_pipeline, per_image), (lambda: extract(None), decoded), (lambda: extract(cache), cached))
        for way, times in ways:
            seconds, features = way()
            times.append(seconds)
            identical &= np.array_equal(features, reference)
    field, slow, fast = statistics.median(per_image), statistics.median(decoded), statistics.median(cached)
    return [
        f"machine: {machine()}",
        f"- shard 0 of {num_workers}: {shard.num_rows} training images at {config.data.height}x{config.data.width}, "
        f"flip-averaged, float32, 1 torch thread; {repeats} passes each way, alternated",
        f"- the field's one-image pipeline, decoded every pass: {field:.2f} s per pass "
        f"(median; {min(per_image):.2f}-{max(per_image):.2f})",
        f"- decoded every pass: {slow:.2f} s per pass (median; {min(decoded):.2f}-{max(decoded):.2f}); "
        f"{slow - field:+.2f} s ({100 * (slow - field) / field:+.0f} %) against the one-image pipeline",
        f"- from the cache: {fast:.2f} s per pass (median; {min(cached):.2f}-{max(cached):.2f}); "
        f"{sum(map(len, cache.entries.values()))} of {shard.num_rows} images cached, "
        f"{cache.used / 2**20:.1f} MB of a {budget:g} MB budget",
        f"- saved by the cache: {slow - fast:.2f} s per extraction ({100 * (slow - fast) / slow:.0f} %), "
        f"{slow / fast:.2f}x; by both against the one-image pipeline: {field - fast:.2f} s "
        f"({100 * (field - fast) / field:.0f} %)",
        f"- features bit-identical all three ways: {'yes' if identical else 'NO'}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = UserArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-workers", type=int, default=2, help="the shard is 1/W of the training set")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ids", type=int, default=None, help="synthetic identities (default: the generator's)")
    parser.add_argument("--cache-dir", default=None, help="synthetic data cache (default: the user's)")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="image cache budget (default: run.image_cache_mb)")
    args = parser.parse_args(argv)
    if args.num_workers < 1 or args.repeats < 1:
        parser.error("--num-workers and --repeats must be at least 1")
    if args.budget_mb is not None and args.budget_mb < 0:
        parser.error("--budget-mb must be at least 0")
    print("\n".join(measure(args.num_workers, args.repeats, args.ids, args.cache_dir, args.budget_mb)))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
