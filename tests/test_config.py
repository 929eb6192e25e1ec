import pytest

from raytrain_vireid.config import Config, build_config, dump_config, load_config, parse_override, valid_keys
from raytrain_vireid.errors import UserError


def test_overrides_are_typed_and_nested():
    config = build_config(overrides=["train.epochs=3", "pseudo.eps=0.5", "train.lr_milestones=[2, 4]", "loss.cnl=0.5"])
    assert config.train.epochs == 3 and config.pseudo.eps == 0.5
    assert config.train.lr_milestones == [2, 4] and config.loss["cnl"] == 0.5


def test_k1_and_eps_take_one_value_per_modality():
    config = build_config(overrides=["pseudo.k1={visible: 15, infrared: 10}", "pseudo.eps={visible: 0.55, infrared: 0.6}"])
    assert config.pseudo.k1 == {"visible": 15, "infrared": 10} and config.pseudo.eps == {"visible": 0.55, "infrared": 0.6}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown setting train.epoch; valid keys: train.epochs"),
        ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
        ("model.arch=transformer", "model.arch: 'transformer' is not one of resnet, vit"),
        ("pseudo.k2=40", "pseudo.k2: must be <= pseudo.k1"),
        ("pseudo.k1={visible: 20, infrared: 3}", "pseudo.k2: must be <= pseudo.k1 (3)"),
        ("pseudo.eps={visible: 0.6}", "pseudo.eps: a per-modality value needs exactly the keys visible and infrared"),
        ("pseudo.eps={visible: 0.6, infrared: 0}", "pseudo.eps: must be > 0, got 0.0"),
        ("memory.momentum=1.5", "memory.momentum: must be in [0, 1)"),
        ("nonsense", "expected key=value"),
        ("method=foo", "unknown method 'foo'"),
        ("pseudo.prior=sift", "pseudo.prior: 'sift' is not one of hog"),
        ("pseudo.prior_weight=1.5", "pseudo.prior_weight: must be in [0, 1], got 1.5"),
        ("pseudo.prior_k=0", "pseudo.prior_k: must be > 0, got 0"),
        ("pseudo.prior_epochs=-1", "pseudo.prior_epochs: must be >= 0, got -1"),
        ("run.image_cache_mb=-1", "run.image_cache_mb: must be >= 0, got -1"),
        ("train.precision=fp16", "train.precision: 'fp16' is not one of fp32, bf16, auto"),
    ],
)
def test_bad_overrides_name_the_setting(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        build_config(overrides=[override])


def test_prior_weight_schedule_and_the_term_needs_a_prior():
    config = build_config(overrides=["pseudo.prior=hog", "pseudo.prior_weight=0.8", "pseudo.prior_epochs=4"])
    assert [config.pseudo.prior_weight_at(e) for e in (0, 1, 4, 9)] == pytest.approx([0.8, 0.6, 0.0, 0.0])
    constant = build_config(overrides=["pseudo.prior=hog", "pseudo.prior_weight=0.3", "pseudo.prior_epochs=0"])
    assert constant.pseudo.prior_weight_at(0) == constant.pseudo.prior_weight_at(50) == 0.3
    off = build_config(overrides=["pseudo.prior=null", "loss.prior_cross=0"])
    assert off.pseudo.prior_weight_at(0) == 0.0
    with pytest.raises(UserError, match="loss.prior_cross: needs a prior descriptor"):
        build_config(overrides=["pseudo.prior=null", "loss.prior_cross=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = build_config(overrides=["train.epochs=2", "pseudo.association=null"])
    dump_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_config_file_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="config file does not exist"):
        build_config(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        build_config(config_file=bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  epochs: 2\n  speed: 9\n")
    with pytest.raises(UserError, match="unknown setting train.speed"):
        build_config(config_file=wrong)


def test_valid_keys_lists_every_leaf():
    keys = valid_keys()
    assert "pseudo.eps" in keys and "loss.*" in keys and "run.num_workers" in keys
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    assert Config().method == "baseline"


def test_recipe_dataset_profiles_follow_the_data_spec():
    synthetic = build_config()
    sysu = build_config(overrides=["data.spec=sysu:/data/SYSU-MM01"])
    regdb = build_config(overrides=["data.spec=regdb:/data/RegDB:3"])
    assert (synthetic.model.depth, synthetic.data.height) == (18, 64)
    assert (sysu.model.depth, sysu.model.pretrained, sysu.data.height, sysu.train.epochs) == (50, "imagenet", 288, 80)
    assert (synthetic.train.precision, sysu.train.precision) == ("auto", "fp32")  # the papers' runs are float32
    assert (regdb.pseudo.eps, regdb.train.iters_per_epoch) == (0.3, 100)
    # Explicit settings still win over the profile.
    assert build_config(overrides=["data.spec=regdb:/d", "pseudo.eps=0.4"]).pseudo.eps == 0.4


def test_stage2_augmentation_policy_replaces_named_views_only():
    config = build_config(method="salcr", overrides=["data.spec=sysu:/data/SYSU-MM01"])
    assert config.augment.policy("visible", 1) == ["linear", "erasing"]
    assert config.augment.policy("visible", 2) == ["erasing"]  # SALCR stage 2: no LinearTransform on v
    assert config.augment.policy("infrared", 2) == config.augment.policy("infrared", 1)
    mult = build_config(method="mult", overrides=["data.spec=sysu:/data/SYSU-MM01"])
    assert "color_jitter" in mult.augment.policy("visible_aug", 1)
    assert all("color_jitter" not in mult.augment.policy(v, 2) for v in ("visible_aug", "infrared"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.stage2.thermal=[erasing]", "augment.stage2.thermal: unknown view; valid views: visible, visible_aug, infrared"),
        ("augment.stage2.visible=[blur]", "augment.stage2.visible: augmentation 'blur': unknown; valid names"),
        ("augment.stage2.infrared=[erasing:2]", "augment.stage2.infrared: augmentation 'erasing:2': probability must be in"),
        ("augment.visible_aug=[sharpen]", "augment.visible_aug: augmentation 'sharpen': unknown"),
    ],
)
def test_bad_augmentation_policies_are_one_clear_error(override, message):
    with pytest.raises(UserError) as info:
        build_config(overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)
