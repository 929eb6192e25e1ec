from pathlib import Path

import pytest
import yaml

from raytrain_vireid.config import build_config, parse_override
from raytrain_vireid.errors import UserError
from raytrain_vireid.search_space import format_value, load_space, parse_space, to_tune

SPACES_DIR = Path(__file__).resolve().parents[1] / "tune_spaces"


def _space(**space):
    return {"method": "baseline", "space": space}


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_validates(path):
    space = load_space(path)
    assert space.method == path.stem and space.metric == "mAP" and space.mode == "max"
    assert {"pseudo.eps", "pseudo.k1", "pseudo.k2", "memory.temperature", "memory.momentum", "train.lr"} <= set(
        space.dimensions
    )


def test_one_space_per_method():
    assert {p.stem for p in SPACES_DIR.glob("*.yaml")} == {"baseline", "mult", "salcr", "hil", "sdcl"}


def test_sample_overrides_build_the_sampled_config():
    space = parse_space(
        {
            "method": "sdcl",
            "base": {"train": {"epochs": 3}, "pseudo.backend": "cpu"},
            "space": {
                "train.lr": {"loguniform": [1e-5, 1e-3]},
                "pseudo.k1": {"randint": [20, 41]},
                "augment.infrared": {"choice": [["erasing"], ["adaptive_gray"]]},
                "loss.cnl_cross": {"grid": [0.25, 0.5]},
                "pseudo.association_params.rho": {"uniform": [0.3, 0.8]},
            },
        }
    )
    overrides = space.sample_overrides(
        {"train.lr": 1.5e-05, "pseudo.k1": 33, "augment.infrared": ["adaptive_gray"], "loss.cnl_cross": 0.5,
         "pseudo.association_params.rho": 0.42, "unrelated": 1}
    )
    assert overrides[:3] == ["method=sdcl", "train.epochs=3", "pseudo.backend=cpu"]
    config = build_config(overrides=overrides)
    assert config.method == "sdcl" and config.train.epochs == 3 and config.pseudo.backend == "cpu"
    assert config.train.lr == 1.5e-05 and config.pseudo.k1 == 33
    assert config.augment.infrared == ["adaptive_gray"] and config.loss["cnl_cross"] == 0.5  # beside the recipe's
    assert config.pseudo.association_params["rho"] == 0.42
    with pytest.raises(UserError, match="no sampled value for space setting pseudo.k1"):
        space.sample_overrides({"train.lr": 1e-4})


@pytest.mark.parametrize("value", [1e-05, 3.5e-4, 0.1, 2, True, None, "a b", "yes", [1, 2], {"x": 1.5e-7}])
def test_format_value_round_trips_through_override_parsing(value):
    assert parse_override(f"k={format_value(value)}") == {"k": value}


def test_to_tune_maps_each_distribution():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space(
        _space(
            **{
                "train.lr": {"loguniform": [1e-4, 1e-2]},
                "pseudo.eps": {"uniform": [0.4, 0.7]},
                "pseudo.k1": {"randint": [20, 31]},
                "memory.temperature": {"choice": [0.05, 0.1]},
                "memory.momentum": {"grid": [0.1, 0.2]},
            }
        )
    )
    tuned = to_tune(space)
    assert isinstance(tuned["train.lr"], Float) and (tuned["train.lr"].lower, tuned["train.lr"].upper) == (1e-4, 1e-2)
    assert isinstance(tuned["pseudo.eps"], Float)
    assert isinstance(tuned["pseudo.k1"], Integer) and (tuned["pseudo.k1"].lower, tuned["pseudo.k1"].upper) == (20, 31)
    assert isinstance(tuned["memory.temperature"], Categorical)
    assert tuned["memory.temperature"].categories == [0.05, 0.1]
    assert tuned["memory.momentum"] == {"grid_search": [0.1, 0.2]}


@pytest.mark.parametrize(
    "data, message",
    [
        (_space(**{"pseudo.epsilon": {"uniform": [0.4, 0.7]}}),
         r"space.pseudo.epsilon: unknown setting \(did you mean pseudo.eps\?\)"),
        (_space(**{"pseudo.eps": {"normal": [0.5, 0.1]}}), "space.pseudo.eps: unknown distribution 'normal'"),
        (_space(**{"pseudo.eps": {"uniform": [0.7, 0.4]}}),
         r"space.pseudo.eps: empty range: lo \(0.7\) must be below hi \(0.4\)"),
        (_space(**{"pseudo.eps": {"uniform": [0.5, 0.5]}}), "space.pseudo.eps: empty range"),
        (_space(**{"train.lr": {"loguniform": [0, 1e-3]}}), "space.train.lr: loguniform needs lo > 0"),
        (_space(**{"pseudo.k1": {"uniform": [10.0, 30.0]}}),
         "space.pseudo.k1: uniform samples floats but this setting is an integer"),
        (_space(**{"pseudo.eps": {"randint": [1, 3]}}), "space.pseudo.eps: randint is for integer settings"),
        (_space(**{"loss.oclr": {"randint": [1, 3]}}), "space.loss.oclr: randint is for integer settings"),
        (_space(**{"pseudo.k1": {"randint": [10.5, 30]}}), "space.pseudo.k1: randint needs integer bounds"),
        (_space(**{"model.arch": {"uniform": [0, 1]}}),
         "space.model.arch: uniform needs a numeric setting, this one is str"),
        (_space(**{"memory.temperature": {"choice": []}}), "space.memory.temperature: choice needs a non-empty list"),
        (_space(**{"pseudo.eps": {"uniform": [0.4]}}), r"space.pseudo.eps: uniform needs \[lo, hi\]"),
        (_space(**{"pseudo.eps": 0.5}), "space.pseudo.eps: expected exactly one distribution"),
        (_space(**{"model.arch": {"choice": ["resnet", "cnn"]}}),
         "space.model.arch: value 'cnn' is rejected: model.arch: 'cnn' is not one of"),
        (_space(**{"memory.momentum": {"uniform": [0.5, 1.0]}}),
         r"space.memory.momentum: value 1.0 is rejected: memory.momentum: must be in \[0, 1\)"),
        (_space(**{"pseudo.k2": {"randint": [4, 32]}}),
         "space.pseudo.k2: value 31 is rejected: pseudo.k2: must be <= pseudo.k1"),
        (_space(**{"loss": {"choice": [{}]}}), "space.loss: unknown setting"),
        (_space(), "space: is empty"),
        ({"method": "baseline", "space": {"pseudo.eps": {"uniform": [0.4, 0.7]}}, "base": {"pseudo": {"eps": 0.5}}},
         "space.pseudo.eps: is also fixed in base"),
        ({"method": "baseline", "space": {"pseudo.eps": {"uniform": [0.4, 0.7]}}, "base": {"train.epoch": 3}},
         "base.train.epoch: unknown setting"),
        ({"method": "baseline", "space": {"pseudo.eps": {"uniform": [0.4, 0.7]}}, "base": {"train.epochs": "x"}},
         "base: train.epochs: expected an integer"),
        ({"method": "sdcl", "space": {"pseudo.eps": {"uniform": [0.4, 0.7]}}, "base": {"method": "mult"}},
         "base.method: set the method at the top level"),
        ({"method": "nope", "space": {}}, "method: 'nope' is not one of baseline"),
        ({"method": "baseline", "mode": "maximise", "space": {}}, "mode: 'maximise' is not one of max, min"),
        ({"method": "baseline", "spaces": {}}, "unknown top-level key 'spaces'"),
    ],
)
def test_bad_spaces_are_rejected_naming_the_key(data, message):
    with pytest.raises(UserError, match=message) as info:
        parse_space(data, source="s.yaml")
    assert str(info.value).startswith("s.yaml: ") and "\n" not in str(info.value)


def test_load_space_file_errors(tmp_path):
    with pytest.raises(UserError, match="search-space file does not exist"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: not valid YAML at line"):
        load_space(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_space(**{"pseudo.eps": {"uniform": [0.4, 0.7]}})))
    assert load_space(good).dimensions["pseudo.eps"].values == (0.4, 0.7)


def test_caller_overrides_take_part_in_validation():
    # The baseline's synthetic recipe has k1 15 (visible) and 10 (infrared): k2 up to 9 is valid there.
    data = _space(**{"pseudo.k2": {"randint": [4, 10]}})
    assert parse_space(data).dimensions["pseudo.k2"].candidates() == [4, 9]
    message = r"space.pseudo.k2: value 9 is rejected: pseudo.k2: must be <= pseudo.k1 \(8\)"
    with pytest.raises(UserError, match=message):
        parse_space(data, overrides=["pseudo.k1=8"])


def test_numpy_scalars_from_a_sampler_format_as_plain_numbers():
    import numpy as np

    assert format_value(np.int64(33)) == "33" and parse_override(f"k={format_value(np.float64(1e-5))}") == {"k": 1e-5}
