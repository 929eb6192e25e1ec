"""``benchmarks/train_throughput.py`` compares like with like: its plain loop trains the trainer's batches."""

import pytest

from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


def test_the_plain_loop_takes_the_same_steps_as_a_one_worker_trainer_run(tmp_path, cache, ray_local, tiny_config,
                                                                          benchmark_script):
    # The benchmark's ratio means something only if both sides run the same model, batches, augmentations and
    # loss: the plain loop's mean loss must be the trainer's epoch loss, to float rounding.
    throughput = benchmark_script("train_throughput")
    sets = ("supervised=true", "train.epochs=1", "train.precision=fp32")
    plain_config = tiny_config(tmp_path, cache, "plain", 0, *sets)
    plain = throughput.plain_loop(plain_config, plain_config.train.iters_per_epoch)
    fit(tiny_config(tmp_path, cache, "ray", 0, *sets))
    (row,) = read_metrics(tmp_path / "ray")
    assert plain.loss == pytest.approx(row["loss"], rel=1e-6)
    assert plain.images_per_s > 0
