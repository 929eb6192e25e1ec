"""Search spaces for Ray Tune: a small YAML grammar, validated before any trial starts (Ray-free).

A space file (see ``tune_spaces/``)::

    method: sdcl                 # required: one of raytrain_vireid.config.METHODS
    metric: mAP                  # optional (default mAP): the per-epoch metric Tune optimises
    mode: max                    # optional (default max): max | min
    base:                        # optional: fixed settings for every trial (nested or dotted keys)
      train: {epochs: 20}
      pseudo.backend: cpu
    space:                       # required: dotted setting -> exactly one distribution
      pseudo.eps: {uniform: [0.4, 0.7]}          # float in [lo, hi)
      train.lr: {loguniform: [1.0e-4, 1.0e-3]}   # float, log-uniform in [lo, hi), lo > 0
      pseudo.k1: {randint: [20, 41]}             # int in [lo, hi), hi exclusive like tune.randint
      memory.temperature: {choice: [0.05, 0.1]}  # one of the listed values, sampled
      loss.cnl_cross: {grid: [0.25, 0.5, 1.0]}   # every listed value (multiplies the trial count)

Settings are the dotted keys of :func:`raytrain_vireid.config.valid_keys`; the free-form sections
``loss.*``, ``method_params.*`` and ``pseudo.association_params.*`` take any sub-key. Each trial turns
its sampled values into ``key=value`` overrides for :func:`raytrain_vireid.config.build_config`
(:meth:`SearchSpace.sample_overrides`); :func:`to_tune` builds the Ray Tune ``param_space``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .config import METHODS, Config, build_config, read_yaml, valid_keys
from .errors import UserError

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")
RANGE_DISTRIBUTIONS = ("loguniform", "uniform", "randint")
TOP_LEVEL_KEYS = ("method", "metric", "mode", "base", "space")


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``kind`` is a name from :data:`DISTRIBUTIONS`, ``values`` its arguments
    (``(lo, hi)`` for ranges, the candidate values for ``choice``/``grid``)."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def candidates(self) -> list[Any]:
        """The values that bound what a trial can get: range endpoints (``hi - 1`` for randint) or every option."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


@dataclass
class SearchSpace:
    """A validated search space: fixed ``base`` settings plus searched ``dimensions`` (both keyed by dotted setting)."""

    method: str
    dimensions: dict[str, Dimension]
    base: dict[str, Any] = field(default_factory=dict)
    metric: str = "mAP"
    mode: str = "max"
    source: str = "<space>"

    def base_overrides(self) -> list[str]:
        """``key=value`` overrides shared by every trial: the method and the ``base`` settings."""
        return [f"method={self.method}"] + [f"{key}={format_value(value)}" for key, value in self.base.items()]

    def sample_overrides(self, values: Mapping[str, Any]) -> list[str]:
        """``key=value`` overrides for one trial from its sampled ``values`` (keys of the space; others ignored)."""
        missing = [key for key in self.dimensions if key not in values]
        if missing:
            raise UserError(f"{self.source}: no sampled value for space setting {missing[0]}")
        return self.base_overrides() + [f"{key}={format_value(values[key])}" for key in self.dimensions]


def format_value(value: Any) -> str:
    """Render ``value`` so that :func:`raytrain_vireid.config.parse_override` reads it back unchanged.

    YAML's own emitter is used because it writes floats PyYAML can read back as floats
    (``1e-05`` alone would load as a string; the emitter writes ``1.0e-05``).
    """
    if hasattr(value, "item") and not isinstance(value, (list, dict)):  # NumPy scalars from a sampler
        value = value.item()
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).rstrip("\n")
    return text.removesuffix("\n...")


# --------------------------------------------------------------------------------------------
# Loading and validation


def load_space(path: str | Path, overrides: Sequence[str] = ()) -> SearchSpace:
    """Read and validate a space file; :class:`UserError` naming the file and key on any problem.

    ``overrides``: ``key=value`` settings the caller adds to every trial (e.g. the Tune CLI's ``--set``);
    they take part in the validation builds only.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a search-space YAML file")
    try:
        data = read_yaml(path)
    except UserError as exc:
        raise UserError(str(exc).replace("config file", "search-space file")) from None
    return parse_space(data, source=str(path), overrides=overrides)


def parse_space(data: Mapping[str, Any], source: str = "<space>", overrides: Sequence[str] = ()) -> SearchSpace:
    """Validate a space given as a mapping (the parsed YAML) and return it (``overrides`` as in :func:`load_space`)."""
    unknown = [key for key in data if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(f"{source}: unknown top-level key {unknown[0]!r}; valid keys: {', '.join(TOP_LEVEL_KEYS)}")
    method = data.get("method")
    if method not in METHODS:
        raise UserError(f"{source}: method: {method!r} is not one of {', '.join(METHODS)}")
    metric = data.get("metric", "mAP")
    if not isinstance(metric, str) or not metric:
        raise UserError(f"{source}: metric: expected a metric name, got {metric!r}")
    mode = data.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserError(f"{source}: mode: {mode!r} is not one of max, min")
    base = _flatten(_mapping(data.get("base") or {}, f"{source}: base"), "")
    raw_space = _mapping(data.get("space"), f"{source}: space")
    if not raw_space:
        raise UserError(f"{source}: space: is empty; name at least one setting to search")
    if "method" in base:
        raise UserError(f"{source}: base.method: set the method at the top level (method: {base['method']})")
    for key in base:
        _setting_type(key, f"{source}: base.{key}")
    dimensions = {}
    for key, spec in raw_space.items():
        key = str(key)
        where = f"{source}: space.{key}"
        if key in base:
            raise UserError(f"{where}: is also fixed in base; set it in one place")
        dimensions[key] = _parse_dimension(key, spec, _setting_type(key, where), where)
    space = SearchSpace(method, dimensions, base, metric, mode, source)
    _check_values_build(space, list(overrides))
    return space


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping, got {value!r}")
    return value


def _flatten(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Nested mappings → dotted keys (``{train: {lr: 1}}`` → ``{"train.lr": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _setting_type(key: str, where: str) -> Any:
    """The annotated type of a dotted setting (see :func:`_scalar_type`); UserError for an unknown setting."""
    cls: Any = Config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            break
        tp = hints[part]
        rest = parts[depth + 1 :]
        if dataclasses.is_dataclass(tp):
            cls = tp
            continue
        if typing.get_origin(tp) is dict:
            if len(rest) == 1 and rest[0]:
                return _scalar_type(typing.get_args(tp)[1])
            break
        if not rest:
            return _scalar_type(tp)
        break
    known = valid_keys()
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UserError(f"{where}: unknown setting{hint}; valid keys: {', '.join(known)}")


def _scalar_type(tp: Any) -> Any:
    """The one scalar member of a union (``int | None`` → int; a per-modality ``float | dict[str, float]`` →
    float: a search dimension sets both modalities at once); ``tp`` itself otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(tp)
                   if option is not type(None) and typing.get_origin(option) is not dict]
        if len(options) == 1:
            return options[0]
    return tp


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_dimension(key: str, spec: Any, setting_type: Any, where: str) -> Dimension:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise UserError(f"{where}: expected exactly one distribution such as {{uniform: [lo, hi]}}, got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise UserError(f"{where}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: {kind} needs a non-empty list of values, got {args!r}")
        return Dimension(key, kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2 or not all(_is_number(v) for v in args):
        raise UserError(f"{where}: {kind} needs [lo, hi] with two finite numbers, got {args!r}")
    lo, hi = args
    if setting_type is Any:  # free-form sections other than loss weights: infer from the range
        setting_type = int if kind == "randint" else float
    if setting_type not in (int, float):
        raise UserError(f"{where}: {kind} needs a numeric setting, this one is {_type_name(setting_type)}; use choice")
    if kind == "randint":
        if setting_type is not int:
            raise UserError(f"{where}: randint is for integer settings, this one is a float; use uniform")
        if not all(isinstance(v, int) for v in args):
            raise UserError(f"{where}: randint needs integer bounds, got {args!r}")
    elif setting_type is int:
        raise UserError(f"{where}: {kind} samples floats but this setting is an integer; use randint or choice")
    if lo >= hi:
        raise UserError(f"{where}: empty range: lo ({lo}) must be below hi ({hi})")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{where}: loguniform needs lo > 0, got {lo}")
    if kind != "randint":
        lo, hi = float(lo), float(hi)
    return Dimension(key, kind, (lo, hi))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _check_values_build(space: SearchSpace, overrides: list[str]) -> None:
    """Build the config once per range endpoint / option (others at their base values): every value a
    trial can draw must be a config ``build_config`` accepts, so a bad value fails now, not in trial 7."""
    base = overrides + space.base_overrides()
    try:
        build_config(overrides=base)
    except UserError as exc:
        raise UserError(f"{space.source}: base: {exc}") from None
    for key, dimension in space.dimensions.items():
        for value in dimension.candidates():
            try:
                build_config(overrides=base + [f"{key}={format_value(value)}"])
            except UserError as exc:
                raise UserError(f"{space.source}: space.{key}: value {value!r} is rejected: {exc}") from None


# --------------------------------------------------------------------------------------------
# Ray Tune


def to_tune(space: SearchSpace) -> dict[str, Any]:
    """The Ray Tune ``param_space``: dotted setting → Tune domain (``tune.uniform`` ... ``tune.grid_search``)."""
    from ray import tune  # imported here so that parsing and validation stay Ray-free

    makers = {
        "loguniform": lambda v: tune.loguniform(*v),
        "uniform": lambda v: tune.uniform(*v),
        "randint": lambda v: tune.randint(*v),
        "choice": lambda v: tune.choice(list(v)),
        "grid": lambda v: tune.grid_search(list(v)),
    }
    return {key: makers[dim.kind](dim.values) for key, dim in space.dimensions.items()}
