"""What the Airflow DAG's tasks do besides `dvc repro`: per-run params, stage commands, approval.

A manual run's Params form (epochs, data source, language pair, promotion policy) overrides
params.yaml for that run only. `apply_run_params` writes the overrides into params.yaml, so DVC
sees them as param changes and MLflow records them with the run; `restore_params` (an Airflow
teardown task, it runs whatever happened upstream) puts the original back. The original is kept
under `.dvc/tmp/airflow/` until then, and a run that finds a leftover from a killed run restores
it first, so params.yaml never carries one run's overrides into the next.

Only light imports here: the DAG file reads `dag_settings()` at parse time.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.config import Config, OrchestrationConfig, load_config, parse_config
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.paths import ProjectPaths, project_paths

log = logging.getLogger(__name__)

# Stages in run order; the DAG has one task per stage, named like the dvc.yaml stage.
STAGES: tuple[str, ...] = (
    "fetch",
    "validate_raw",
    "clean",
    "tokenize",
    "train",
    "evaluate",
    "register",
)

# The value of a choice field that means "whatever params.yaml says".
KEEP = "params.yaml"

# Run params the DAG's form offers; anything else in a run's conf is a typo we refuse.
RUN_PARAM_NAMES: tuple[str, ...] = (
    "epochs",
    "data_source",
    "data_path",
    "src_lang",
    "tgt_lang",
    "model_name",
    "promotion_policy",
)

PROJECT_VARIABLE = "mt_project_dir"


def dag_settings(root: str | Path | None = None) -> OrchestrationConfig:
    """The `orchestration:` section of the project's params.yaml (read when the DAG is parsed)."""
    return load_config(project_paths(root).params).orchestration


def resolve_project_dir(variable: Callable[[], str | None]) -> Path:
    """The project the stages run in: env MT_PROJECT_DIR, else the Airflow Variable."""
    chosen = os.environ.get("MT_PROJECT_DIR") or variable()
    if not chosen:
        raise PipelineError(
            "no project directory: set env MT_PROJECT_DIR on the Airflow workers or the Airflow "
            f"Variable `{PROJECT_VARIABLE}` to the repository root (the folder with dvc.yaml)"
        )
    root = Path(chosen).expanduser().resolve()
    if not (root / "dvc.yaml").is_file():
        raise PipelineError(
            f"{root}: no dvc.yaml here; point MT_PROJECT_DIR / `{PROJECT_VARIABLE}` at the "
            "repository root"
        )
    return root


def stage_command(root: Path, stage: str) -> str:
    """The bash script of one stage task: `dvc repro` of that stage alone, in the project.

    The project's .venv/bin goes first on PATH so `dvc` and `mt` are the project's own, and the
    project first on PYTHONPATH so `mt` runs the code DVC hashes as the stage's dependency;
    PYTHONUNBUFFERED makes the stage's output reach the task log line by line.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    project = shlex.quote(str(root))
    venv_bin = shlex.quote(str(root / ".venv" / "bin"))
    return "\n".join(
        [
            "set -euo pipefail",
            f"cd {project}",
            f'if [ -d {venv_bin} ]; then export PATH={venv_bin}:"$PATH"; fi',
            f'export MT_PROJECT_DIR={project} PYTHONPATH={project}"${{PYTHONPATH:+:$PYTHONPATH}}"',
            "export PYTHONUNBUFFERED=1",
            'echo "dvc: $(command -v dvc)"',
            f"dvc repro --single-item {shlex.quote(stage)}",
        ]
    )


def run_values(
    params: Mapping[str, Any], asset_extras: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The run's param values: a producer's asset event `extra` (e.g. a new data_path), then
    whatever the run's conf or form set explicitly."""
    values: dict[str, Any] = {}
    for extra in asset_extras or []:
        values |= {name: value for name, value in extra.items() if name in RUN_PARAM_NAMES}
    values |= {name: value for name, value in params.items() if _is_set(value)}
    return values


def overrides_from_run_params(values: Mapping[str, Any], current: Config) -> dict[str, Any]:
    """params.yaml overrides ({section: {key: value}}) for the run params that were set."""
    unknown = sorted(set(values) - set(RUN_PARAM_NAMES))
    if unknown:
        raise ConfigError(
            f"run params: unknown param `{unknown[0]}`; allowed: {', '.join(RUN_PARAM_NAMES)}"
        )
    overrides: dict[str, dict[str, Any]] = {}
    if _is_set(values.get("epochs")):
        overrides.setdefault("train", {})["epochs"] = values["epochs"]
    data = {
        key: values[name]
        for name, key in (("data_source", "source"), ("data_path", "path"))
        if _is_set(values.get(name))
    }
    data |= {key: values[key] for key in ("src_lang", "tgt_lang") if _is_set(values.get(key))}
    if data:
        overrides["data"] = data
    register = _register_overrides(values, current, data)
    if register:
        overrides["register"] = register
    return overrides


def _is_set(value: Any) -> bool:
    return value is not None and value != "" and value != KEEP


def _register_overrides(
    values: Mapping[str, Any], current: Config, data: Mapping[str, Any]
) -> dict[str, Any]:
    register: dict[str, Any] = {}
    if _is_set(values.get("promotion_policy")):
        register["policy"] = values["promotion_policy"]
    if _is_set(values.get("model_name")):
        register["model_name"] = values["model_name"]
        return register
    old_pair = (current.data.src_lang, current.data.tgt_lang)
    new_pair = (data.get("src_lang", old_pair[0]), data.get("tgt_lang", old_pair[1]))
    if new_pair != old_pair:
        name = current.register.model_name
        register["model_name"] = model_name_for_pair(name, old_pair, new_pair)
    return register


def model_name_for_pair(name: str, old: tuple[str, str], new: tuple[str, str]) -> str:
    """A registered model serves one language pair: swap the pair inside its name.

    An en-fr model must not become a challenger of the en-de champion.
    """
    old_token, new_token = "-".join(old), "-".join(new)
    if old_token not in name:
        raise ConfigError(
            f"run params: the language pair changes to {new_token} but register.model_name "
            f"{name!r} does not contain {old_token!r}; set the `model_name` run param"
        )
    return name.replace(old_token, new_token, 1)


def merge_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml content with {section: {key: value}} overrides applied."""
    merged = dict(raw)
    for section, keys in overrides.items():
        merged[section] = {**raw.get(section, {}), **keys}
    return merged


def check_data_path(config: Config, root: Path) -> None:
    """A `dir`/`tsv` source needs a folder that exists on this worker; say so before fetch."""
    if config.data.source == "multi30k":
        return
    if not config.data.path:
        raise ConfigError(
            f"run params: data source {config.data.source!r} needs a data path (the folder "
            "with the corpus files); set `data_path`"
        )
    folder = root / config.data.path
    if not folder.is_dir():
        raise DataError(f"{folder}: data path not found on the worker; fix `data_path`")


class ParamsBackup:
    """The original params.yaml of a run with overrides, and the copy the run applied."""

    def __init__(self, paths: ProjectPaths) -> None:
        self.params = paths.params
        folder = paths.root / ".dvc" / "tmp" / "airflow"
        self.original = folder / "params.yaml.orig"
        self.applied = folder / "params.yaml.applied"

    def save(self, applied_text: str) -> None:
        # The original goes first: a crash between the two writes leaves params.yaml untouched.
        atomic_write_text(self.original, self.params.read_text(encoding="utf-8"))
        atomic_write_text(self.applied, applied_text)
        atomic_write_text(self.params, applied_text)

    def restore(self) -> str:
        """Put the original back; returns what happened, for the task log."""
        if not self.original.is_file():
            return "params.yaml: no overrides to restore"
        current = self.params.read_text(encoding="utf-8") if self.params.is_file() else None
        applied = self.applied.read_text(encoding="utf-8") if self.applied.is_file() else None
        if current is not None and current != applied:
            # Someone edited params.yaml during the run; their edit wins over our backup.
            outcome = "params.yaml: edited during the run, kept as is (backup discarded)"
        else:
            atomic_write_text(self.params, self.original.read_text(encoding="utf-8"))
            outcome = "params.yaml: restored the original"
        self.original.unlink()
        self.applied.unlink(missing_ok=True)
        return outcome


def apply_run_params(root: Path, values: Mapping[str, Any]) -> dict[str, Any]:
    """Write a run's overrides into params.yaml (validated first); returns the run settings."""
    paths = project_paths(root)
    backup = ParamsBackup(paths)
    leftover = backup.restore()
    if "no overrides" not in leftover:
        log.warning("a previous run did not clean up: %s", leftover)
    raw = yaml.safe_load(paths.params.read_text(encoding="utf-8"))
    current = parse_config(raw, str(paths.params))
    overrides = overrides_from_run_params(values, current)
    merged = merge_overrides(raw, overrides)
    effective = parse_config(merged, f"{paths.params} with the run params")
    check_data_path(effective, root)
    if overrides:
        backup.save(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
        log.info("params.yaml for this run: %s", json.dumps(overrides, sort_keys=True))
    return {
        "overrides": overrides,
        "policy": effective.register.policy,
        "model_name": effective.register.model_name,
    }


def restore_params(root: Path) -> str:
    """Undo `apply_run_params` (a no-op when the run had no overrides)."""
    outcome = ParamsBackup(project_paths(root)).restore()
    log.info("%s", outcome)
    return outcome


def read_registration(root: Path) -> dict[str, Any]:
    """reports/registration.json as the register stage wrote it."""
    path = project_paths(root).registration_report
    if not path.is_file():
        raise PipelineError(f"{path}: not found; the register stage writes it (run it first)")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def approval_request(
    registration: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """Title and Markdown body of the approval task: the challenger against the champion."""
    name, version = registration["model_name"], str(registration["version"])
    champion = registration.get("champion_before")
    lines = [
        f"**{name}** version **{version}** (@challenger) against "
        + (f"@champion version **{champion}**." if champion else "no champion yet."),
        "",
        "| test split | BLEU | chrF | TER | sentences |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {split} | {m['bleu']:.2f} | {m['chrf']:.2f} | {m['ter']:.2f} | {m['sentences']} |"
            for split, m in metrics.items()
        ),
        "",
        f"Gate: **{registration['decision']}**: {registration['reason']}",
        f"BLEU delta vs champion: {_number(registration.get('delta'), '+.2f')}, "
        f"paired bootstrap p-value: {_number(registration.get('p_value'), '.3f')}.",
        "",
        f"*Approve* runs `mt registry promote {version}`; *Reject* leaves @champion as it is.",
    ]
    return {
        "version": version,
        "model_name": name,
        "title": f"{name} version {version}",
        "body": "\n".join(lines),
    }


def _number(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def challenger_awaiting_approval(root: Path, dag_run_id: str) -> dict[str, Any] | None:
    """The approval request for the version this run registered, if the gate left it waiting.

    None when the gate rejected it, or when registration.json is older than this run (DVC
    skipped an up-to-date register stage): nothing new to approve.
    """
    paths = project_paths(root)
    registration = read_registration(root)
    if registration["decision"] != "awaiting_approval":
        log.info("gate outcome %s: nothing to approve", registration["decision"])
        return None
    from pipeline.registry.store import Registry

    registry = Registry.connect(paths, registration["model_name"])
    tags = registry.version(str(registration["version"])).tags
    if tags.get("airflow.dag_run_id") != dag_run_id:
        log.info(
            "version %s was not registered by this run: nothing to approve",
            registration["version"],
        )
        return None
    metrics = json.loads(paths.metrics_file.read_text(encoding="utf-8"))
    return approval_request(registration, metrics)


def promote_version(root: Path, model_name: str, version: str, reason: str) -> None:
    """What `mt registry promote VERSION` does, for the model this run registered.

    The model name comes from registration.json: a run that changed the language pair
    registered under a name that the restored params.yaml no longer holds.
    """
    from pipeline.registry.commands import promote
    from pipeline.registry.store import Registry

    promote(Registry.connect(project_paths(root), model_name), version, reason)
