"""The allowed range of every param, declared beside its field in pipeline/config.py.

A field says what it accepts in its metadata, made by one of the helpers below, e.g.
`epochs: int = field(metadata=ranged(ge=1, le=500))`. pipeline.config checks each value against
it when params.yaml is parsed, the DAG's Trigger form takes its JSON-schema bounds from it, and
docs/params.md lists the same text (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

RULE_KEY = "allowed"


class Rule(Protocol):
    def allows(self, value: Any) -> bool: ...

    def describe(self) -> str: ...

    def json_schema(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open range of numbers; a missing end is unbounded."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: Any) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        low, high = _first(self.ge, self.gt), _first(self.le, self.lt)
        if low is None and high is None:
            return "any number"
        if high is None:
            return f"{'>=' if self.ge is not None else '>'} {_number(low)}"
        if low is None:
            return f"{'<=' if self.le is not None else '<'} {_number(high)}"
        opening = "[" if self.ge is not None else "("
        closing = "]" if self.le is not None else ")"
        return f"{opening}{_number(low)}, {_number(high)}{closing}"

    def json_schema(self) -> dict[str, Any]:
        names = {
            "minimum": self.ge,
            "exclusiveMinimum": self.gt,
            "maximum": self.le,
            "exclusiveMaximum": self.lt,
        }
        return {name: bound for name, bound in names.items() if bound is not None}


@dataclass(frozen=True)
class Pattern:
    """A string that matches `regex` in full; `meaning` says what that is in words."""

    regex: str
    meaning: str

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None

    def describe(self) -> str:
        return f"{self.meaning} (`{self.regex}`)"

    def json_schema(self) -> dict[str, Any]:
        # JSON schema patterns search; anchor them so they mean what fullmatch means here.
        return {"pattern": f"^(?:{self.regex})$"}


@dataclass(frozen=True)
class Predicate:
    """A value that passes `test`, for rules no range or regex can say (a cron expression)."""

    test: Callable[[Any], bool]
    meaning: str

    def allows(self, value: Any) -> bool:
        return self.test(value)

    def describe(self) -> str:
        return self.meaning

    def json_schema(self) -> dict[str, Any]:
        return {}


def ranged(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> dict[str, Rule]:
    """Field metadata: the number (or each number of a list) must lie in the interval."""
    return {RULE_KEY: Interval(ge=ge, gt=gt, le=le, lt=lt)}


def matching(regex: str, meaning: str) -> dict[str, Rule]:
    """Field metadata: the string (or each string of a list) must match `regex` in full."""
    return {RULE_KEY: Pattern(regex, meaning)}


def satisfying(test: Callable[[Any], bool], meaning: str) -> dict[str, Rule]:
    """Field metadata: the value must pass `test`."""
    return {RULE_KEY: Predicate(test, meaning)}


def rule_of(field: dataclasses.Field[Any]) -> Rule | None:
    rule: Rule | None = field.metadata.get(RULE_KEY)
    return rule


@dataclass(frozen=True)
class ParamSpec:
    """What one key of params.yaml accepts: its type hint and declared rule."""

    hint: Any
    rule: Rule | None

    @property
    def choices(self) -> tuple[Any, ...]:
        """The allowed values of a Literal (a fixed choice); empty otherwise."""
        return typing.get_args(self.hint) if typing.get_origin(self.hint) is Literal else ()

    def type_text(self) -> str:
        if self.choices:
            return type(self.choices[0]).__name__
        if typing.get_origin(self.hint) is tuple:
            return f"list of {typing.get_args(self.hint)[0].__name__}"
        return str(self.hint.__name__)

    def allowed_text(self) -> str | None:
        """The range in words (docs/params.md shows exactly this); None when none is declared."""
        if self.choices:
            return "one of " + ", ".join(str(choice) for choice in self.choices)
        if self.hint is bool:
            return "true or false"
        if self.rule is None:
            return None
        each = "each: " if typing.get_origin(self.hint) is tuple else ""
        return each + self.rule.describe()


def _first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _number(value: float | None) -> str:
    """1.0 -> 1, 1e-05 stays; big integers get thousands separators for reading."""
    if value is not None and float(value).is_integer():
        return f"{int(value):,}".replace(",", "_") if abs(value) >= 10_000 else str(int(value))
    return str(value)
