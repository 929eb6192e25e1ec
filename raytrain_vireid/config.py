"""Run configuration: nested dataclasses, YAML load/dump, ``key=value`` overrides, strict validation.

Resolution order (later wins): built-in defaults below → the method's recipe
(``raytrain_vireid/recipes/<method>.yaml``: the paper's SYSU-MM01 settings at the top level) → the
profile every recipe shares for the chosen kind of data, if any (``recipes/profiles/<kind>.yaml``: the
CPU settings of the embedded synthetic data) → the recipe's ``datasets.<kind>`` section (``regdb``,
``llcm``, ``synthetic``: the paper's RegDB settings, or the method's own CPU adjustments) →
``--config FILE.yaml`` → command-line flags → ``--set key=value``.
Unknown keys are rejected with the list of valid ones. Every run folder gets the fully resolved
``config.yaml``, which loads back unchanged with ``--config``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import UserError

RECIPES_DIR = Path(__file__).parent / "recipes"
PROFILES_DIR = RECIPES_DIR / "profiles"  # settings every recipe shares for one kind of data (synthetic.yaml)
METHODS = ("baseline", "mult", "salcr", "sdcl", "hil")
PRECISIONS = ("fp32", "bf16", "auto")  # train.precision (models/precision.py resolves them)


@dataclass
class DataConfig:
    """Where the images come from and how they are loaded."""

    spec: str = "synthetic"  # synthetic | sysu:PATH | regdb:PATH[:TRIAL] | llcm:PATH
    height: int = 128
    width: int = 64
    cache_dir: str | None = None  # manifests and the synthetic tree; default ~/.cache/raytrain_vireid
    loader_workers: int = 0  # DataLoader worker processes per Ray worker
    verify: bool = False  # decode every image when building the manifest
    on_bad_image: str = "error"  # error | skip
    synthetic_ids: int | None = None  # None: the generator's default size
    synthetic_images_per_cam: int | None = None
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    """Backbone and heads."""

    arch: str = "resnet"  # resnet | vit
    depth: int = 18  # ResNet depth: 18 | 34 | 50
    pretrained: str | None = None  # None (from scratch) | imagenet | PATH to a local state dict
    last_stride: int = 1
    gem_p: float = 3.0
    vit_size: str = "tiny"  # tiny | base
    vit_stem: str = "linear"  # ViT patch embedding: linear | ics (TransReID-SSL's IBN conv stem)
    drop_path: float = 0.0
    parts: int = 0  # SALCR part branch: number of horizontal parts (0 = off)


@dataclass
class AugmentConfig:
    """Per-view augmentation policies (names from raytrain_vireid.data.transforms).

    ``stage2`` maps a view to the policy that replaces its own from ``stage.stage2_epoch`` on (views not
    named keep theirs); warm-up epochs always use the stage-1 policies.
    """

    visible: list[str] = field(default_factory=lambda: ["erasing"])
    visible_aug: list[str] = field(default_factory=lambda: ["channel_exchange", "erasing"])
    infrared: list[str] = field(default_factory=lambda: ["adaptive_gray", "erasing"])
    stage2: dict[str, list[str]] = field(default_factory=dict)

    def policy(self, view: str, stage: int) -> list[str]:
        """The policy of ``view`` in training stage ``stage`` (1 or 2)."""
        if stage == 2 and view in self.stage2:
            return self.stage2[view]
        return getattr(self, view)


@dataclass
class TrainConfig:
    """Optimisation schedule and batch composition."""

    epochs: int = 8
    iters_per_epoch: int = 40
    iters_per_epoch_stage2: int | None = None  # None: same as iters_per_epoch
    ids_per_modality: int = 8  # P pseudo-identities per modality per batch (global, split over ranks)
    instances: int = 4  # K images per pseudo-identity
    optimizer: str = "adam"  # adam | sgd
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    sgd_momentum: float = 0.9
    lr_milestones: list[int] = field(default_factory=lambda: [20, 60])
    lr_gamma: float = 0.1
    seed: int = 0
    init_checkpoint: str | None = None  # warm start (e.g. a stage-1 checkpoint); weights only
    warmup_epochs: int = 0  # unsupervised instance-contrastive warm-up epochs before clustering
    # fp32 | bf16 | auto: the network's forward passes (training, extraction, evaluation) under bfloat16 autocast;
    # auto = bf16 on a CUDA GPU with bf16, and on a CPU with AVX512-BF16 where a probe of the training step finds it
    # faster; fp32 elsewhere. Losses, memories and clustering features stay float32 (models/precision.py).
    precision: str = "fp32"


@dataclass
class PseudoConfig:
    """Per-epoch pseudo-labelling (runs in the memory actor)."""

    backend: str = "auto"  # auto | cpu | gpu
    # k1 and eps: one value for both modalities, or one per modality ({visible: 15, infrared: 10}).
    k1: int | dict[str, int] = 30
    k2: int = 6
    eps: float | dict[str, float] = 0.6
    min_samples: int = 4
    k1_visible_stage2: int | None = None  # SDCL: visible k1 switches to 15 at stage 2
    association: str | None = "hungarian"  # stage-2 cross-modality association
    association_params: dict[str, Any] = field(default_factory=dict)
    feature_dtype: str = "float16"  # float16 | float32: how the actor stores instance features
    # Embed visible images from their luminance (3 equal channels) for relabelling: the clusters, the association
    # and the memories' initial entries then follow shape and pattern, not hue and background colour. Training
    # views and evaluation keep colour. Off by default: on the synthetic demo it ends within the spread (README).
    visible_gray: bool = False
    # Average each image's features with its horizontal flip's for relabelling (as the evaluation always does).
    # false: one forward pass per image, half the extraction phase; the public USL-VI-ReID code (ADCA, PGM, and the
    # methods built on them) extracts its clustering features without the flip. On by default: the measured default.
    flip: bool = True
    # Diagnostic only (like --supervised, the truth then reaches training): stage-2 cross labels point at the
    # other modality's cluster whose majority identity is the image's own, in place of the association's hard
    # labels (an associator's soft targets, MULT's, stay as they are).
    oracle_association: bool = False
    # Diagnostic only: the true identities replace the clusters within each modality (cross labels between them
    # from the stage-2 epoch on), so the method's own losses and memories train on perfect pseudo-labels; its cross
    # labels are already the truth, so oracle_association then changes nothing.
    oracle_clusters: bool = False
    # A hand-crafted descriptor of every training image (null | hog: raytrain_vireid/pseudo/descriptors.py), computed
    # once by the driver and blended into the features that are clustered and associated, squared distances
    # (1 - w)·d_network + w·d_prior. w = prior_weight at epoch 0, falling linearly to 0 at epoch prior_epochs (0: w
    # stays prior_weight). A cold start for networks without pretrained weights; no labels involved.
    prior: str | None = None
    prior_weight: float = 0.5
    prior_epochs: int = 0
    prior_k: int = 5  # cross-modality neighbours per row in the prior's space (the loss.prior_cross term)
    prior_association: bool = False  # the stage-2 associator sees the prior alone (clusters: the blend's)

    def prior_weight_at(self, epoch: int) -> float:
        """w of the prior at ``epoch`` (0 without a prior)."""
        if self.prior is None:
            return 0.0
        if self.prior_epochs == 0:
            return self.prior_weight
        return self.prior_weight * max(0.0, 1.0 - epoch / self.prior_epochs)


@dataclass
class MemoryConfig:
    """Cluster/instance memories."""

    temperature: float = 0.05
    momentum: float = 0.1
    momentum_epoch0: float | None = None  # epoch-0 momentum warm-up (SDCL RegDB uses 0.99)
    instance_momentum: float = 0.9


@dataclass
class StageConfig:
    """Epoch thresholds that switch terms on."""

    stage2_epoch: int = 4  # cross-modality association and shared memory from this epoch
    cross_epoch: int = 0  # cross-modality neighbour terms from this epoch (SDCL ht)


@dataclass
class EvalConfig:
    """Evaluation during and after training."""

    every: int = 1  # evaluate every N epochs (and always after the last)
    untrained: bool = False  # also evaluate the network before training (logged as epoch -1)
    trials: int = 10
    select_on: str = "last"  # last | val (validation identities carved from training ids)
    val_fraction: float = 0.2


@dataclass
class RunSettings:
    """Where and how the job runs."""

    num_workers: int = 2
    use_gpu: bool = False
    address: str = "local"  # local | auto | ray://host:port
    storage_path: str = "runs"
    name: str | None = None
    max_failures: int = 0
    cpus_per_worker: float = 1.0
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    actor_resources: dict[str, float] = field(default_factory=dict)  # e.g. {memory_actor: 1} on KubeRay
    keep_checkpoints: int = 2
    progress: str = "auto"  # auto | bar | plain
    # Per training worker: decoded, resized images kept in memory as 8-bit pixels for the next extraction or
    # evaluation of the same rows, as many as fit (train.extract.ImageCache; 0: decode every time). Features are
    # bit-identical either way. A 288x144 image takes 124 KB: a SYSU-MM01 shard of 2 workers needs about 1.4 GB.
    image_cache_mb: float = 512.0


@dataclass
class Config:
    """The whole run configuration."""

    method: str = "baseline"
    supervised: bool = False  # diagnostic upper bound: train with the true identities
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunSettings = field(default_factory=RunSettings)
    loss: dict[str, float] = field(default_factory=dict)  # method loss weights by term name
    method_params: dict[str, Any] = field(default_factory=dict)  # method-specific knobs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------
# Strict conversion from plain dicts


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; UserError naming ``key`` otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise UserError(f"{key}: must not be null")
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except UserError:
                continue
        raise UserError(f"{key}: {value!r} is not a valid {' or '.join(_type_name(o) for o in options)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise UserError(f"{key}: expected a mapping of settings, got {value!r}")
        return _from_mapping(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _from_mapping(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise UserError(
            f"unknown setting {where}{unknown[0]!s}; valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; mappings merge, everything else replaces (free-form dicts merge too)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted setting names (free-form dict sections end in ``.*``)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, name + "."))
        elif typing.get_origin(tp) is dict:
            keys.append(name + ".*")
        else:
            keys.append(name)
    return keys


# --------------------------------------------------------------------------------------------
# Files and overrides


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; UserError naming the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: config file does not exist") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    return dict(data)


def recipe_path(method: str) -> Path:
    return RECIPES_DIR / f"{method}.yaml"


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → nested dict; the value is parsed as YAML (so 0.5, true, [1, 2], null work)."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {text!r}: empty setting name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def _check_override_path(override: Mapping[str, Any], cls: type = Config, prefix: str = "") -> None:
    """Reject a dotted override whose path is not a setting (free-form dict sections accept any key)."""
    hints = typing.get_type_hints(cls)
    for key, value in override.items():
        name = f"{prefix}{key}"
        if key not in hints:
            valid = ", ".join(valid_keys(cls, prefix))
            raise UserError(f"unknown setting {name}; valid keys: {valid}")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            _check_override_path(value, hints[key], name + ".")


def build_config(
    method: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve defaults → recipe → config file → ``extra`` (CLI flags) → ``--set`` overrides."""
    file_values = read_yaml(config_file) if config_file else {}
    extra = dict(extra or {})
    override_values: dict[str, Any] = {}
    for text in overrides:
        parsed = parse_override(text)
        _check_override_path(parsed)
        override_values = _merge(override_values, parsed)
    chosen = (
        override_values.get("method")
        or extra.get("method")
        or method
        or file_values.get("method")
        or "baseline"
    )
    if chosen not in METHODS:
        raise UserError(f"unknown method {chosen!r}; valid methods: {', '.join(METHODS)}")
    merged: dict[str, Any] = Config().to_dict()
    recipe = recipe_path(chosen)
    if recipe.exists():
        recipe_values = read_yaml(recipe)
        profiles = recipe_values.pop("datasets", {}) or {}
        spec = _nested_get("data.spec", override_values, extra, file_values) or DataConfig.spec
        kind = data_kind(spec)
        shared = PROFILES_DIR / f"{kind}.yaml"
        merged = _merge(merged, recipe_values)
        if shared.is_file():
            merged = _merge(merged, read_yaml(shared))
        merged = _merge(merged, profiles.get(kind, {}))
    for layer in (file_values, extra, override_values):
        merged = _merge(merged, layer)
    merged["method"] = chosen
    config = _from_mapping(Config, merged)
    validate(config)
    return config


def data_kind(spec: str) -> str:
    """``sysu:/data/SYSU-MM01`` → ``sysu``; ``synthetic`` → ``synthetic``."""
    return str(spec).split(":", 1)[0]


def _nested_get(dotted: str, *layers: Mapping[str, Any]) -> Any:
    """The value of ``dotted`` in the first layer that sets it."""
    for layer in layers:
        node: Any = layer
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def load_config(path: str | Path) -> Config:
    """Load a resolved ``config.yaml`` (as written into a run folder) unchanged."""
    return build_config(config_file=path)


def _choice(value: Any, allowed: Iterable[Any], key: str) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def per_modality(value: Any, key: str) -> dict[str, Any]:
    """``{"visible": .., "infrared": ..}`` of a setting that is one value or such a mapping."""
    if not isinstance(value, Mapping):
        return {"visible": value, "infrared": value}
    if set(value) != {"visible", "infrared"}:
        raise UserError(f"{key}: a per-modality value needs exactly the keys visible and infrared, got {sorted(value)}")
    return dict(value)


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    _choice(config.model.arch, ("resnet", "vit"), "model.arch")
    _choice(config.model.depth, (18, 34, 50), "model.depth")
    _choice(config.model.vit_size, ("tiny", "base"), "model.vit_size")
    _choice(config.model.vit_stem, ("linear", "ics"), "model.vit_stem")
    _choice(config.train.optimizer, ("adam", "sgd"), "train.optimizer")
    _choice(config.train.precision, PRECISIONS, "train.precision")
    _choice(config.pseudo.backend, ("auto", "cpu", "gpu"), "pseudo.backend")
    _choice(config.pseudo.feature_dtype, ("float16", "float32"), "pseudo.feature_dtype")
    _choice(config.data.on_bad_image, ("error", "skip"), "data.on_bad_image")
    _choice(config.eval.select_on, ("last", "val"), "eval.select_on")
    _choice(config.run.progress, ("auto", "bar", "plain"), "run.progress")
    for key, value in (
        ("data.height", config.data.height),
        ("data.width", config.data.width),
        ("train.epochs", config.train.epochs),
        ("train.iters_per_epoch", config.train.iters_per_epoch),
        ("train.ids_per_modality", config.train.ids_per_modality),
        ("train.instances", config.train.instances),
        ("train.lr", config.train.lr),
        ("pseudo.k2", config.pseudo.k2),
        ("pseudo.min_samples", config.pseudo.min_samples),
        ("memory.temperature", config.memory.temperature),
        ("eval.every", config.eval.every),
        ("eval.trials", config.eval.trials),
    ):
        _positive(value, key)
    for key, value in (
        ("train.weight_decay", config.train.weight_decay),
        ("train.warmup_epochs", config.train.warmup_epochs),
        ("data.loader_workers", config.data.loader_workers),
        ("run.num_workers", config.run.num_workers),
        ("run.max_failures", config.run.max_failures),
        ("run.image_cache_mb", config.run.image_cache_mb),
        ("stage.stage2_epoch", config.stage.stage2_epoch),
        ("stage.cross_epoch", config.stage.cross_epoch),
        ("pseudo.prior_epochs", config.pseudo.prior_epochs),
        ("loss.prior_cross", config.loss.get("prior_cross", 0.0)),
    ):
        _positive(value, key, allow_zero=True)
    if not 0.0 <= config.memory.momentum < 1.0:
        raise UserError(f"memory.momentum: must be in [0, 1), got {config.memory.momentum}")
    if not 0.0 < config.eval.val_fraction < 1.0:
        raise UserError(f"eval.val_fraction: must be in (0, 1), got {config.eval.val_fraction}")
    if config.pseudo.prior is not None:
        from .pseudo.descriptors import DESCRIPTORS  # NumPy only

        _choice(config.pseudo.prior, DESCRIPTORS, "pseudo.prior")
    _positive(config.pseudo.prior_k, "pseudo.prior_k")
    if config.loss.get("prior_cross", 0.0) > 0 and config.pseudo.prior is None:
        raise UserError("loss.prior_cross: needs a prior descriptor (set pseudo.prior, or loss.prior_cross=0)")
    if not 0.0 <= config.pseudo.prior_weight <= 1.0:
        raise UserError(f"pseudo.prior_weight: must be in [0, 1], got {config.pseudo.prior_weight}")
    k1 = per_modality(config.pseudo.k1, "pseudo.k1")
    for key, values in (("pseudo.k1", k1), ("pseudo.eps", per_modality(config.pseudo.eps, "pseudo.eps"))):
        for value in values.values():
            _positive(value, key)
    k1_min = min(k1.values())
    if config.pseudo.k2 > k1_min:
        raise UserError(f"pseudo.k2: must be <= pseudo.k1 ({k1_min}), got {config.pseudo.k2}")
    _validate_augment(config.augment)


def _validate_augment(augment: AugmentConfig) -> None:
    """Known view names in ``augment.stage2`` and known augmentation items (``name`` or ``name:p``) everywhere."""
    from .data.transforms import VIEWS, _parse_item  # the transforms' own names and parser (imports torchvision)

    unknown = sorted(set(augment.stage2) - set(VIEWS))
    if unknown:
        raise UserError(f"augment.stage2.{unknown[0]}: unknown view; valid views: {', '.join(VIEWS)}")
    policies = {**{view: getattr(augment, view) for view in VIEWS},
                **{f"stage2.{view}": policy for view, policy in augment.stage2.items()}}
    for key, policy in policies.items():
        for item in policy:
            try:
                _parse_item(item)
            except UserError as exc:
                raise UserError(f"augment.{key}: {exc}") from None


def dump_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config.to_yaml())
    tmp.replace(path)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. inside a Ray worker), validated."""
    config = _from_mapping(Config, values)
    validate(config)
    return config
