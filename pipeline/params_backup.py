"""A run's overrides in and out of params.yaml, keeping its comments and a person's edits.

`ParamsBackup.save` keeps the original and the applied text under `.dvc/tmp/airflow/` and
writes the overrides into params.yaml with ruamel.yaml's round trip (comments and layout stay,
so a person who edits the file during the run edits the file they know). `restore` is a
three-way merge at the key level of the original (base), the applied file (the run's side) and
params.yaml as it is now (the person's side): a key the run overrode and nobody touched since
gets its original value back; every key a person changed during the run keeps their value.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import ProjectPaths

KeyPath = tuple[str, ...]
_ABSENT = object()


# ruamel.yaml is imported where it is used: the DAG file imports this module at parse time, and
# the Airflow image (docker/airflow.Dockerfile) has no ruamel.yaml; only the tasks need it.


def _round_trip() -> Any:
    from ruamel.yaml import YAML

    parser = YAML()  # round trip: comments, key order, quotes and flow style survive
    parser.preserve_quotes = True
    parser.width = 4096  # never re-wrap a long line
    return parser


def with_overrides(text: str, overrides: Mapping[str, Mapping[str, Any]]) -> str:
    """params.yaml text with {section: {key: value}} set; everything else byte for byte."""
    document = _round_trip().load(text)
    for section, keys in overrides.items():
        for key, value in keys.items():
            document[section][key] = _scalar(value)
    return _checked_dump(document, merge_overrides(yaml.safe_load(text), overrides))


def merge_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml content with {section: {key: value}} overrides applied."""
    merged = dict(raw)
    for section, keys in overrides.items():
        merged[section] = {**raw.get(section, {}), **keys}
    return merged


def _scalar(value: Any) -> Any:
    # ruamel writes YAML 1.2, PyYAML and DVC read 1.1: quote every string, or `no` (Norwegian)
    # would come back as False.
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    return DoubleQuotedScalarString(value) if isinstance(value, str) else value


def _checked_dump(document: Any, expected: Mapping[str, Any]) -> str:
    """Dump the round-trip document; it must read back (PyYAML, as DVC reads it) as expected."""
    sink = io.StringIO()
    _round_trip().dump(document, sink)
    text = sink.getvalue()
    if yaml.safe_load(text) != expected:
        raise ConfigError("params.yaml: a merged file would not read back as merged; not written")
    return text


@dataclass(frozen=True)
class Restored:
    text: str
    dropped: list[str]  # the run's overrides taken out
    kept: list[str]  # keys a person changed during the run, kept as they are


def restore_text(original: str, applied: str, current: str) -> Restored:
    """params.yaml without the run's overrides, with every edit made during the run."""
    base, ours = yaml.safe_load(original), yaml.safe_load(applied)
    run_keys = _changed_paths(base, ours)
    if current == applied:
        return Restored(original, _dotted(run_keys), [])
    theirs = yaml.safe_load(current)
    if not isinstance(theirs, dict):
        raise yaml.YAMLError("the top level is not a mapping of sections any more")
    person_keys = _changed_paths(ours, theirs)
    revert = [path for path in run_keys if path not in person_keys]
    # Reverted values come from the original's own nodes, so they are written as they were.
    document, original_nodes = _round_trip().load(current), _round_trip().load(original)
    expected = yaml.safe_load(current)
    for path in revert:
        _put(document, path, _get(original_nodes, path))
        _put(expected, path, _get(base, path))
    return Restored(_checked_dump(document, expected), _dotted(revert), _dotted(person_keys))


def _leaves(tree: Any, prefix: KeyPath = ()) -> Iterator[KeyPath]:
    if isinstance(tree, Mapping) and tree:
        for key, value in tree.items():
            yield from _leaves(value, (*prefix, str(key)))
    elif prefix:
        yield prefix


def _changed_paths(before: Any, after: Any) -> list[KeyPath]:
    paths = dict.fromkeys([*_leaves(before), *_leaves(after)])
    return [path for path in paths if _get(before, path) != _get(after, path)]


def _get(tree: Any, path: KeyPath) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return _ABSENT
        tree = tree[key]
    return tree


def _put(tree: Any, path: KeyPath, value: Any) -> None:
    """Set (or, for _ABSENT, delete) `path`; a section the person deleted stays deleted."""
    from ruamel.yaml.scalarstring import PlainScalarString, ScalarString

    for key in path[:-1]:
        if not isinstance(tree.get(key), Mapping):
            return
        tree = tree[key]
    if value is _ABSENT:
        tree.pop(path[-1], None)
    elif isinstance(value, str) and not isinstance(value, ScalarString):
        tree[path[-1]] = PlainScalarString(value)  # as it was, not in the run's quotes
    else:
        tree[path[-1]] = value


def _dotted(paths: list[KeyPath]) -> list[str]:
    return [".".join(path) for path in paths]


class ParamsBackup:
    """The original params.yaml of a run with overrides, and the copy the run applied."""

    def __init__(self, paths: ProjectPaths) -> None:
        self.params = paths.params
        folder = paths.root / ".dvc" / "tmp" / "airflow"
        self.original = folder / "params.yaml.orig"
        self.applied = folder / "params.yaml.applied"

    def save(self, applied_text: str) -> None:
        # The original goes first: a crash between the writes leaves params.yaml untouched.
        atomic_write_text(self.original, self.params.read_text(encoding="utf-8"))
        atomic_write_text(self.applied, applied_text)
        atomic_write_text(self.params, applied_text)

    def restore(self) -> str:
        """Take the run's overrides out again; returns what happened, for the task log."""
        if not self.original.is_file():
            return "params.yaml: no overrides to restore"
        original = self.original.read_text(encoding="utf-8")
        applied = self.applied.read_text(encoding="utf-8") if self.applied.is_file() else original
        current = self.params.read_text(encoding="utf-8") if self.params.is_file() else applied
        try:
            restored = restore_text(original, applied, current)
        except yaml.YAMLError as error:
            raise ConfigError(
                f"{self.params}: edited during the run into invalid YAML ({error}); fix it and "
                "run restore_params again: the run's overrides are still in it"
            ) from None
        try:
            atomic_write_text(self.params, restored.text)
        except OSError as error:
            raise PipelineError(
                f"{self.params}: cannot be written ({error.strerror}); the run's overrides are "
                "still in it and the run keeps params.yaml until a restore succeeds"
            ) from error
        self.original.unlink()
        self.applied.unlink(missing_ok=True)
        return _outcome(restored)


def _outcome(restored: Restored) -> str:
    dropped = ", ".join(restored.dropped) or "none"
    if not restored.kept:
        return f"params.yaml: restored the original (dropped this run's overrides: {dropped})"
    return (
        f"params.yaml: dropped this run's overrides ({dropped}); kept the edits made during the "
        f"run ({', '.join(restored.kept)})"
    )
