"""What ``run.image_cache_mb`` saves: one worker's extraction of its training shard, images decoded every time against
images kept from the previous extraction (``train.extract.ImageCache``), in one process on this machine.

A Ray worker of the default command (``--num-workers W``, one CPU each) extracts its shard (1/W of the training set,
flip-averaged, test transform) once per epoch, and the test set's share at every evaluation. Here the default
configuration's untrained network (float32, one torch thread, as a worker has) extracts shard 0 of W ``--repeats``
times each way, the two ways alternated so that a slow minute of a shared machine hits both; one untimed pass fills
the cache first. Prints the median seconds per pass of each way, their ratio, the cache's size, and whether the
features of both ways are bit-identical (they must be).

    python benchmarks/extract_cache.py [--num-workers 2] [--repeats 5] [--ids N] [--cache-dir DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import machine  # noqa: E402

from raytrain_vireid.config import build_config  # noqa: E402
from raytrain_vireid.errors import UserArgumentParser, run_cli  # noqa: E402
from raytrain_vireid.train.extract import ImageCache, extract_features, shard_rows  # noqa: E402
from raytrain_vireid.train.launch import prepare_data  # noqa: E402
from raytrain_vireid.train.loop import build_model_from_config  # noqa: E402


def measure(num_workers: int, repeats: int, ids: int | None, cache_dir: str | None) -> list[str]:
    """The lines this benchmark prints."""
    overrides = ["train.precision=fp32"] + ([f"data.synthetic_ids={ids}"] if ids else []) + (
        [f"data.cache_dir={cache_dir}"] if cache_dir else [])
    config = build_config("baseline", overrides=overrides)
    torch.set_num_threads(1)
    train = prepare_data(config).train
    shard = train.take(pa.array(shard_rows(train.num_rows, 0, num_workers)))
    torch.manual_seed(config.train.seed)
    model = build_model_from_config(config).eval()
    cache = ImageCache(config.run.image_cache_mb)

    def extract(image_cache: ImageCache | None) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        features = extract_features(model, shard, torch.device("cpu"), height=config.data.height,
                                    width=config.data.width, image_cache=image_cache)
        return time.perf_counter() - start, features[model.heads[0]]

    _, reference = extract(cache)  # fills the cache (untimed)
    decoded, cached, identical = [], [], True
    for _ in range(repeats):
        for image_cache, times in ((None, decoded), (cache, cached)):
            seconds, features = extract(image_cache)
            times.append(seconds)
            identical &= np.array_equal(features, reference)
    slow, fast = statistics.median(decoded), statistics.median(cached)
    return [
        f"machine: {machine()}",
        f"- shard 0 of {num_workers}: {shard.num_rows} training images at {config.data.height}x{config.data.width}, "
        f"flip-averaged, float32, 1 torch thread; {repeats} passes each way, alternated",
        f"- decoded every pass: {slow:.2f} s per pass (median; {min(decoded):.2f}-{max(decoded):.2f})",
        f"- from the cache: {fast:.2f} s per pass (median; {min(cached):.2f}-{max(cached):.2f}); "
        f"{cache.used / 2**20:.0f} MB cached of a {config.run.image_cache_mb:.0f} MB budget",
        f"- saved: {slow - fast:.2f} s per extraction ({100 * (slow - fast) / slow:.0f} %), {slow / fast:.2f}x",
        f"- features bit-identical both ways: {'yes' if identical else 'NO'}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = UserArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-workers", type=int, default=2, help="the shard is 1/W of the training set")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ids", type=int, default=None, help="synthetic identities (default: the generator's)")
    parser.add_argument("--cache-dir", default=None, help="synthetic data cache (default: the user's)")
    args = parser.parse_args(argv)
    if args.num_workers < 1 or args.repeats < 1:
        parser.error("--num-workers and --repeats must be at least 1")
    print("\n".join(measure(args.num_workers, args.repeats, args.ids, args.cache_dir)))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
