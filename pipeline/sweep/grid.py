"""A sweep's grid: `--set KEY=V1,V2` axes, their cartesian product, every point checked first.

The syntax is DVC's own (`dvc exp run --queue -S 'train.learning_rate=0.001,0.002'`, Hydra's
override grammar): comma lists, `range(start, stop[, step])` and `choice(...)`. Each point is
handed to `dvc exp run -S KEY=VALUE` as the value's own text, so DVC parses it exactly as it
would from a user. Before anything runs, each point is applied to a copy of params.yaml with
DVC's own function and checked by pipeline/config.py: a typo or an out-of-range value is one
line naming the `--set` and the rule, and nothing has started.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import param_specs, parse_config
from pipeline.errors import ConfigError

# More points than this is almost surely a typo (`range(1,1000)`); split such a sweep.
MAX_POINTS = 100
# A sweep name prefixes its points' DVC experiment names, which are git ref names.
SWEEP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
# Hydra value types DVC accepts for a grid; an interval cannot be enumerated, a glob needs Hydra's
# config search path (DVC refuses it too).
ENUMERABLE = {"ELEMENT", "SIMPLE_CHOICE_SWEEP", "CHOICE_SWEEP", "RANGE_SWEEP"}
# Keys a grid may not set, whoever fills the form: the data's source (a grid could point
# data.url at an internal host), the task (its points are ranked by one metric), the gate's
# rules (register.min_score=0, register.metric) and the deployment.
NOT_SWEPT = (
    "task",
    "data.url",
    "data.path",
    "data.source",
    "register.",
    "orchestration.",
    "monitor.",
)


@dataclass(frozen=True)
class Axis:
    """One `--set`: a params.yaml key and the values it takes, as override text."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    """One run of the grid: its DVC experiment name and params.yaml overrides (key -> text)."""

    name: str
    overrides: dict[str, str]

    def set_params(self) -> list[str]:
        """`dvc exp run` arguments: one `-S KEY=VALUE` per override."""
        return [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={value}")]

    def describe(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.overrides.items())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "overrides": dict(self.overrides)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Point:
        return cls(str(raw["name"]), {str(k): str(v) for k, v in raw["overrides"].items()})


def check_sweep_name(name: str) -> str:
    if not SWEEP_NAME.fullmatch(name):
        raise ConfigError(
            f"sweep name {name!r}: use a letter, then up to 39 letters, digits, _ or - (it "
            "prefixes the DVC experiment names)"
        )
    return name


def parse_axis(text: str) -> Axis:
    """`train.learning_rate=0.001,0.002` -> Axis; a bad one is a ConfigError naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    where = f"--set {text!r}"
    try:
        override = OverridesParser.create().parse_overrides([text])[0]
    except HydraException as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"{where}: not KEY=VALUE[,VALUE...] ({first})") from None
    if override.type.name != "CHANGE":
        raise ConfigError(f"{where}: only KEY=VALUES; a sweep cannot add or delete keys")
    if override.value_type is None or override.value_type.name not in ENUMERABLE:
        raise ConfigError(f"{where}: use a list (a,b), range(...) or choice(...)")
    key = check_key(override.key_or_group, where)
    if override.is_sweep_override():
        values = tuple(override.sweep_string_iterator())
    else:
        values = (override.get_value_element_as_str(),)
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ConfigError(f"{where}: {repeated[0]!r} is listed twice")
    return Axis(key, values)


def check_key(key: str, where: str) -> str:
    """A sweepable key of params.yaml (dotted), else a ConfigError with the nearest one."""
    specs = param_specs()
    if key in specs and key.startswith(NOT_SWEPT):
        raise ConfigError(
            f"{where}: `{key}` is not sweepable: a sweep tunes the model, never where the data "
            f"comes from, the gate, or the deployment ({', '.join(_patterns(NOT_SWEPT))})"
        )
    if key in specs:
        return key
    near = difflib.get_close_matches(key, list(specs), n=1)
    hint = f"; did you mean {near[0]}?" if near else "; docs/params.md lists them"
    raise ConfigError(f"{where}: `{key}` is not a key of params.yaml{hint}")


def _patterns(prefixes: Sequence[str]) -> list[str]:
    return [f"{prefix}*" if prefix.endswith(".") else prefix for prefix in prefixes]


def parse_grid(texts: Sequence[str]) -> list[Axis]:
    """Every `--set`, each key once."""
    if not texts:
        raise ConfigError("a sweep needs at least one --set KEY=V1,V2")
    axes = [parse_axis(text) for text in texts]
    keys = [axis.key for axis in axes]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ConfigError(f"--set {twice[0]} is given twice; list all its values in one --set")
    return axes


def grid_points(sweep: str, axes: Sequence[Axis]) -> list[Point]:
    """The cartesian product of the axes, in `--set` order, named `<sweep>-1`, `<sweep>-2`..."""
    total = 1
    for axis in axes:
        total *= len(axis.values)
    if total > MAX_POINTS:
        sizes = " x ".join(str(len(axis.values)) for axis in axes)
        raise ConfigError(f"the grid has {sizes} = {total} points; at most {MAX_POINTS}")
    keys = [axis.key for axis in axes]
    combos = itertools.product(*(axis.values for axis in axes))
    return [
        Point(f"{sweep}-{index}", dict(zip(keys, combo, strict=True)))
        for index, combo in enumerate(combos, start=1)
    ]


def check_points(params_text: str, points: Sequence[Point]) -> None:
    """Apply each point to a copy of `params_text` (params.yaml) as `dvc exp run -S` does and
    validate it."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "params.yaml"
        for point in points:
            copy.write_text(params_text, encoding="utf-8")
            overrides = [f"{key}={value}" for key, value in point.overrides.items()]
            try:
                apply_overrides(copy, overrides)
            except InvalidArgumentError as error:
                cause = error.__cause__ or error
                raise ConfigError(f"{point.describe()}: {cause}") from None
            raw = yaml.safe_load(copy.read_text(encoding="utf-8"))
            parse_config(raw, f"params.yaml with {point.describe()}")


def ranking_metric(params_text: str) -> str:
    """The metric a sweep's points are ranked by: register.metric of `params_text` (the
    params.yaml the points start from; a grid cannot change it)."""
    return parse_config(yaml.safe_load(params_text)).register.metric


def plan_json(points: Sequence[Point]) -> str:
    return json.dumps([point.as_dict() for point in points], indent=2)
