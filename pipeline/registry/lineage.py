"""The lineage tags a model version carries from the moment it exists.

Everything here is read from the project (git, dvc.lock, params, metrics.json, the environment)
and returned as flat string tags, so `create_model_version(tags=...)` writes them in the same
call that creates the version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.programs import program
from pipeline.registry.errors import RegistryError

log = logging.getLogger(__name__)

# What a model is made of, relative to the project root: the DVC outputs it was trained on.
LINEAGE_PATHS = ("data/tokens", "models/tokenizer", "models/seq2seq.keras")

# Airflow exports these in a task's environment; they identify the DAG run that built a model.
AIRFLOW_ENV = {
    "AIRFLOW_CTX_DAG_ID": "airflow.dag_id",
    "AIRFLOW_CTX_DAG_RUN_ID": "airflow.dag_run_id",
    "AIRFLOW_CTX_TASK_ID": "airflow.task_id",
    # A run's workspace names the DVC experiment it is saved as (pipeline/workspaces.py).
    "DVC_EXP_NAME": "dvc.experiment",
}


def git_commit_tags(root: Path) -> dict[str, str]:
    """`git.commit` and `git.dirty` for the checkout at `root` ("unknown" outside git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        log.warning("%s is not a git checkout; lineage tag git.commit=unknown", root)
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(status)).lower()}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            [program("git"), *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, PipelineError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None  # no git here: the lineage says unknown
    return done.stdout.strip()


def dvc_lock_hashes(lock_file: Path) -> dict[str, str]:
    """{path: md5} for every dep and out recorded in dvc.lock (empty if there is none)."""
    if not lock_file.is_file():
        return {}
    try:
        lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RegistryError(f"{lock_file}: not valid YAML ({error}); run `dvc repro`") from None
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
            if "md5" in entry:
                hashes[str(entry["path"])] = str(entry["md5"])
    return hashes


def content_md5(path: Path) -> str:
    """md5 of a file, or of a directory's sorted (relative path, file md5) list + ".dir"."""
    if path.is_file():
        return _file_md5(path)
    if not path.is_dir():
        raise RegistryError(f"{path}: missing; run `dvc repro` so the model's inputs exist")
    listing = [
        f"{child.relative_to(path).as_posix()}\t{_file_md5(child)}"
        for child in sorted(path.rglob("*"))
        if child.is_file()
    ]
    return (
        hashlib.md5("\n".join(listing).encode("utf-8"), usedforsecurity=False).hexdigest() + ".dir"
    )


def _file_md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def artifact_hash_tags(root: Path, paths: tuple[str, ...] = LINEAGE_PATHS) -> dict[str, str]:
    """`dvc.md5.<path>` from dvc.lock when it knows the path, else computed from the files.

    `dvc.md5_source.<path>` says which, since a computed directory hash is not DVC's.
    """
    locked = dvc_lock_hashes(root / "dvc.lock")
    tags: dict[str, str] = {}
    for relative in paths:
        if relative in locked:
            tags[f"dvc.md5.{relative}"] = locked[relative]
            tags[f"dvc.md5_source.{relative}"] = "dvc.lock"
        elif (root / relative).exists():
            tags[f"dvc.md5.{relative}"] = content_md5(root / relative)
            tags[f"dvc.md5_source.{relative}"] = "computed"
    return tags


def metrics_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Flat `metrics.<split>.<name>` tags from metrics.json, signatures included."""
    tags: dict[str, str] = {}
    for split, scores in metrics.items():
        if not isinstance(scores, dict):
            continue
        for name, value in scores.items():
            if name == "signatures":
                for metric, signature in value.items():
                    tags[f"metrics.{split}.signature.{metric}"] = str(signature)
            elif isinstance(value, list):
                tags[f"metrics.{split}.{name}"] = json.dumps(value)
            else:
                tags[f"metrics.{split}.{name}"] = str(value)
    return tags


def airflow_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Airflow DAG run that is registering and its DVC experiment, when there are."""
    return {tag: environ[var] for var, tag in AIRFLOW_ENV.items() if environ.get(var)}


def params_tags(params: Mapping[str, Any]) -> dict[str, str]:
    return {"params": json.dumps(params, sort_keys=True)}


def lineage_tags(
    root: Path, params: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, str]:
    """Every lineage tag of a new version: git, DVC hashes, params, metrics, Airflow run."""
    return {
        **git_commit_tags(root),
        **artifact_hash_tags(root),
        **params_tags(params),
        **metrics_tags(metrics),
        **airflow_tags(),
    }
