"""What a worker accepts of the inputs a run carries through XCom (orchestration/carried.py).

XCom is written by whoever can run a task or write Airflow's metadata database: its content is
checked before a task acts on it (docs/security.md).
- The commit is 40 hex digits; the experiment name is a safe folder name (its workspace).
- The params text differs from params.yaml at that commit only in keys a run param sets
  (pipeline/orchestration/run_params.py), each within the Trigger form's rules, and the whole
  file passes every rule of pipeline/config.py: XCom cannot point `data.url` at another host or
  lower the gate's bar.
- A stage result names a stage of the commit's dvc.yaml; its lock entry records only that
  stage's declared outputs; its files are files under that stage's uncached outputs, as
  relative paths inside the workspace with no `..` and no symlink on the way, never dvc.yaml,
  params or code. Packed and unpacked sizes are capped: nothing is decompressed past its cap.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.orchestration.run_params import PARAMS_KEY, schema_violation

COMMIT = re.compile(r"[0-9a-f]{40}")
# What one stage may carry, packed (base64 of gzip) and unpacked.
MAX_PACKED_BYTES = 16_000_000
MAX_UNPACKED_BYTES = 64_000_000


def check_commit(commit: str) -> None:
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise ConfigError(f"run inputs: commit {str(commit)[:60]!r} is not 40 hex digits")


def check_params_text(committed: str, carried: str) -> None:
    """`carried` may differ from `committed` only where a run param may, within its rules."""
    try:
        run = yaml.safe_load(carried)
    except yaml.YAMLError as error:
        raise ConfigError(f"run inputs: params text is not YAML ({error})") from None
    if not isinstance(run, dict):
        raise ConfigError("run inputs: params text is not a mapping")
    changed = _changed_keys(_flat(yaml.safe_load(committed) or {}), _flat(run))
    allowed = {key: name for name, key in PARAMS_KEY.items()}
    refused = sorted(key for key in changed if key not in allowed)
    if refused:
        raise ConfigError(
            f"run inputs: params text changes {', '.join(refused)}, which no run param sets; "
            f"a run may change only {', '.join(sorted(allowed))}"
        )
    for key in sorted(changed):
        problem = schema_violation(allowed[key], changed[key])
        if problem:
            raise ConfigError(f"run inputs: `{key}` is {changed[key]!r}: {problem}")
    parse_config(run, "run inputs: params text")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    keys = set(before) | set(after)
    return {key: after.get(key) for key in keys if before.get(key) != after.get(key)}


def check_lock_entry(stage: str, entry: Any, pipeline: Mapping[str, Any]) -> None:
    """The entry is a mapping whose outputs are outputs `stage` declares."""
    declared = pipeline.get("stages", {}).get(stage)
    if declared is None:
        raise ConfigError(f"run inputs: stage {str(stage)[:60]!r} is not in dvc.yaml")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"run inputs: the lock entry of {stage} is not a mapping")
    outs = {str(out.get("path")) for out in entry.get("outs") or [] if isinstance(out, Mapping)}
    foreign = sorted(outs - set(declared_outputs(declared)))
    if foreign or len(outs) != len(entry.get("outs") or []):
        raise ConfigError(
            f"run inputs: the lock entry of {stage} records outputs dvc.yaml does not give it: "
            f"{', '.join(foreign) or 'malformed entries'}"
        )


def declared_outputs(stage: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for item in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
        found += [str(item)] if not isinstance(item, Mapping) else [str(path) for path in item]
    return found


def carried_target(workspace: Path, relative: str, uncached: list[str]) -> Path:
    """Where a carried file goes: inside the workspace, under one of the stage's uncached
    outputs, with no symlink on the way; else a ConfigError naming the path."""
    path = PurePosixPath(relative)
    inside = any(
        path == PurePosixPath(out) or PurePosixPath(out) in path.parents for out in uncached
    )
    if path.is_absolute() or ".." in path.parts or not inside:
        raise ConfigError(
            f"run inputs: carried file {relative[:120]!r} is not under the stage's uncached "
            f"outputs ({', '.join(uncached) or 'none'})"
        )
    target = workspace / path
    for step in [*reversed(target.relative_to(workspace).parents), target.relative_to(workspace)]:
        if (workspace / step).is_symlink():
            raise ConfigError(f"run inputs: carried file {relative!r}: {step} is a symlink")
    return target


def unpack(relative: str, packed: str, budget: int) -> bytes:
    """A carried file's bytes (base64 of gzip), never decompressing past `budget` bytes."""
    try:
        compressed = base64.b64decode(packed, validate=True)
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        data = inflater.decompress(compressed, budget + 1)
    except (binascii.Error, zlib.error, ValueError) as error:
        raise ConfigError(
            f"run inputs: carried file {relative!r} is not gzip+base64 ({error})"
        ) from None
    if len(data) > budget:
        raise ConfigError(
            f"run inputs: carried file {relative!r} unpacks to more than {budget} bytes, "
            f"over what one stage may carry ({MAX_UNPACKED_BYTES})"
        )
    return data
