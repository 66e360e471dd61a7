"""What a DAG run carries from task to task so that no worker runs on stale inputs.

`RunInputs` is fixed by the run's first task: the git commit of the code, the exact
params.yaml text (with the run's overrides) and the run's experiment name, which names its
workspace on every host. On several hosts each stage task adds a `StageResult`: its dvc.lock
entry (the hashes of what it read and wrote) and the contents of its uncached outputs that
later stages read or that are small reports; DVC's remote holds only cached outputs, so those
few files travel with the run instead (capped). A worker writes the entries into its
workspace's dvc.lock and pulls exactly those hashes: it cannot pick up another run's data.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_bytes, atomic_write_text
from pipeline.errors import PipelineError
from pipeline.orchestration.carried_checks import (
    MAX_PACKED_BYTES,
    MAX_UNPACKED_BYTES,
    carried_target,
    check_lock_entry,
    unpack,
)

LOCK_FILE = "dvc.lock"
LOCK_SCHEMA = "2.0"
# An uncached report nothing downstream reads travels only when it is this small.
SMALL_REPORT_BYTES = 1_000_000


@dataclass(frozen=True)
class StageResult:
    """What one stage task hands on: its lock entry and carried files (path -> gzip+base64)."""

    stage: str
    entry: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "entry": self.entry, "files": self.files}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> StageResult:
        return cls(payload["stage"], payload["entry"], payload.get("files", {}))

    @classmethod
    def from_json(cls, text: str) -> StageResult:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class RunInputs:
    """The run's code, params, experiment and every stage result so far, in stage order."""

    commit: str
    params_text: str
    experiment: str
    results: tuple[StageResult, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "commit": self.commit,
                "params_text": self.params_text,
                "experiment": self.experiment,
                "results": [result.to_dict() for result in self.results],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunInputs:
        payload = json.loads(text)
        results = tuple(StageResult.from_dict(r) for r in payload.get("results", []))
        return cls(payload["commit"], payload["params_text"], payload["experiment"], results)

    @property
    def stages(self) -> list[str]:
        return [result.stage for result in self.results]


def read_lock(root: Path) -> dict[str, Any]:
    path = root / LOCK_FILE
    if not path.is_file():
        return {"schema": LOCK_SCHEMA, "stages": {}}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    loaded.setdefault("schema", LOCK_SCHEMA)
    loaded["stages"] = loaded.get("stages") or {}
    return dict(loaded)


def lock_entry(root: Path, stage: str) -> dict[str, Any]:
    entry = read_lock(root)["stages"].get(stage)
    if entry is None:
        raise PipelineError(f"{root / LOCK_FILE}: no entry for stage {stage!r} after it ran")
    return dict(entry)


def write_lock_entries(root: Path, results: Iterable[StageResult], order: list[str]) -> None:
    """Put the carried entries into dvc.lock (others kept), stages in dvc.yaml's order."""
    lock = read_lock(root)
    stages = dict(lock["stages"])
    stages.update({result.stage: result.entry for result in results})
    ranked = sorted(stages, key=lambda name: order.index(name) if name in order else len(order))
    lock["stages"] = {name: stages[name] for name in ranked}
    atomic_write_text(root / LOCK_FILE, yaml.safe_dump(lock, sort_keys=False))


def check_results(results: Iterable[StageResult], pipeline: Mapping[str, Any]) -> None:
    """Each result names a stage of `pipeline` (the run's dvc.yaml) and records only its
    outputs; its files fit the packed cap. Nothing is written before every result passed."""
    for result in results:
        check_lock_entry(result.stage, result.entry, pipeline)
        packed = sum(len(value) for value in result.files.values())
        if packed > MAX_PACKED_BYTES:
            raise PipelineError(
                f"run inputs: stage {result.stage} carries {packed} bytes packed, over "
                f"{MAX_PACKED_BYTES}"
            )


def write_carried_files(
    root: Path, results: Iterable[StageResult], pipeline: Mapping[str, Any]
) -> None:
    """The carried files into the workspace `root`, each under its stage's uncached outputs
    (pipeline/orchestration/carried_checks.py), unpacked within the stage's cap."""
    for result in results:
        uncached = _uncached_outs(pipeline["stages"][result.stage])
        budget = MAX_UNPACKED_BYTES
        for relative, packed in result.files.items():
            target = carried_target(root, relative, uncached)
            data = unpack(relative, packed, budget)
            budget -= len(data)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)


def carried_files(root: Path, stage: str, pipeline: Mapping[str, Any]) -> dict[str, str]:
    """The uncached outputs of `stage` that travel: read downstream, or a small report."""
    read_later = _deps_after(stage, pipeline)
    chosen: list[Path] = []
    for out in _uncached_outs(pipeline["stages"][stage]):
        chosen += _travelling(root, out, read_later)
    packed = {str(path.relative_to(root)): _pack(path) for path in chosen}
    size = sum(len(value) for value in packed.values())
    if size > MAX_PACKED_BYTES:
        raise PipelineError(
            f"stage {stage}: its uncached outputs read downstream take {size} bytes packed, over "
            f"{MAX_PACKED_BYTES}; make them cached outputs in dvc.yaml so DVC's remote moves them"
        )
    return packed


def _travelling(root: Path, out: str, read_later: list[str]) -> list[Path]:
    path = root / out
    if out in read_later:
        return _files_under(path)
    inside = [dep for dep in read_later if dep.startswith(f"{out}/")]
    if inside:
        return [root / dep for dep in inside if (root / dep).is_file()]
    if path.is_file() and path.stat().st_size <= SMALL_REPORT_BYTES:
        return [path]
    return []


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


def _pack(path: Path) -> str:
    return base64.b64encode(gzip.compress(path.read_bytes(), mtime=0)).decode("ascii")


def _uncached_outs(stage: Mapping[str, Any]) -> list[str]:
    found = []
    for item in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
        if not isinstance(item, Mapping):
            continue  # a plain path: cached
        found += [path for path, options in item.items() if (options or {}).get("cache") is False]
    return found


def _deps_after(stage: str, pipeline: Mapping[str, Any]) -> list[str]:
    names = list(pipeline["stages"])
    later = names[names.index(stage) + 1 :]
    return [str(dep) for name in later for dep in pipeline["stages"][name].get("deps", [])]


def load_pipeline(root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    return loaded
