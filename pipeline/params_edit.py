"""Edit params.yaml text in place: set some keys, keep every other byte, comments included.

A DAG run writes its run params into its workspace's params.yaml (orchestration/run_params.py)
and `mt task use` writes a preset into the project's (task_presets.py); both go through here, so
`git diff` / `dvc params diff` show exactly the keys that were set.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError


def merge_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml content with {section: {key: value}} (or top-level {key: value}) applied."""
    merged = dict(raw)
    for section, keys in overrides.items():
        if isinstance(keys, Mapping):
            merged[section] = {**raw.get(section, {}), **keys}
        else:
            merged[section] = keys
    return merged


def with_overrides(text: str, overrides: Mapping[str, Any]) -> str:
    """params.yaml text with {section: {key: value}} (or a top-level {key: value}) set,
    everything else byte for byte
    (ruamel.yaml's round trip keeps comments and layout: the run's workspace shows the user's
    file with the run's values, and `dvc exp diff` shows only those)."""
    import yaml
    from ruamel.yaml import YAML  # not at parse time: the DAG files import this module
    from ruamel.yaml.comments import CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    parser = YAML()
    parser.preserve_quotes = True
    parser.width = 4096  # never re-wrap a long line
    document = parser.load(text)

    def scalar(value: Any) -> Any:
        # ruamel writes YAML 1.2, PyYAML and DVC read 1.1: quote a string that 1.1 would read
        # as something else, or `no` (Norwegian) would come back as False.
        if isinstance(value, str) and yaml.safe_load(value or "''") != value:
            return DoubleQuotedScalarString(value)
        if isinstance(value, list):
            flow = CommentedSeq(value)
            flow.fa.set_flow_style()  # [a, b] as params.yaml writes lists
            return flow
        return value

    for section, keys in overrides.items():
        if not isinstance(keys, Mapping):
            document[section] = scalar(keys)
            continue
        for key, value in keys.items():
            document[section][key] = scalar(value)
    sink = io.StringIO()
    parser.dump(document, sink)
    merged = sink.getvalue()
    if yaml.safe_load(merged) != merge_overrides(yaml.safe_load(text), overrides):
        raise ConfigError("params.yaml: the run's params would not read back as set; not written")
    return merged
