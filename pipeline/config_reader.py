"""A mapping read from YAML into a tree of frozen dataclasses, every value checked.

Generic over the dataclasses (pipeline/config.py declares params.yaml's): a key that is
unknown, missing, of the wrong type or outside its field's declared rule
(pipeline/param_rules.py) is one ConfigError naming its dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.param_rules import ParamSpec, rule_of


def dataclass_specs(cls: type, prefix: str = "") -> dict[str, ParamSpec]:
    """Every leaf key of `cls` (dotted) with its type and allowed range, in field order."""
    hints = typing.get_type_hints(cls)
    specs: dict[str, ParamSpec] = {}
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            specs |= dataclass_specs(typing.cast(type, hint), f"{prefix}{item.name}.")
        else:
            specs[f"{prefix}{item.name}"] = ParamSpec(hint, rule_of(item))
    return specs


def build_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    """`cls` built from `raw`, each key checked; `prefix` is the dotted path of `raw`."""
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"params.yaml: `{where}` must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [item.name for item in fields]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key `{prefix}{unknown[0]}`; allowed keys: {', '.join(names)}"
        )
    missing = [name for name in names if name not in raw]
    if missing:
        raise ConfigError(f"params.yaml: missing key `{prefix}{missing[0]}`")
    values = {item.name: _checked_value(item, hints[item.name], raw, prefix) for item in fields}
    return cls(**values)


def _checked_value(
    item: dataclasses.Field[Any], hint: Any, raw: dict[str, Any], prefix: str
) -> Any:
    key = prefix + item.name
    return _in_range(item, _coerce(hint, raw[item.name], key), key)


def _in_range(spec: dataclasses.Field[Any], value: Any, key: str) -> Any:
    """`value` if the field's declared rule allows it (each item, for a list)."""
    rule = rule_of(spec)
    if rule is None:
        return value
    items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
    for index, item in items:
        if not rule.allows(item):
            where = key if index is None else f"{key}[{index}]"
            raise ConfigError(f"params.yaml: `{where}` is {item!r}; allowed: {rule.describe()}")
    return value


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_dataclass(typing.cast(type, hint), value, f"{key}.")
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(choice) for choice in allowed)
            raise ConfigError(f"params.yaml: `{key}` is {value!r}; allowed values: {choices}")
        return value
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"params.yaml: `{key}` must be a list, got {value!r}")
        return tuple(_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type for {key}: {hint}")
    return _coerce_scalar(hint, value, key)


def _coerce_scalar(hint: type, value: Any, key: str) -> Any:
    # bool is an int in Python; refuse it where a number is meant, and vice versa.
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"params.yaml: `{key}` must be of type {hint.__name__}, got {value!r} "
        f"({type(value).__name__})"
    )
