"""What the Airflow DAG's tasks do besides `dvc repro`: per-run params, stage commands, approval.

A run's params (its Trigger form, or the `extra` of the asset events that started it; see
pipeline/run_params.py) override params.yaml for that run only. `apply_run_params` writes the
overrides into params.yaml, so DVC sees them as param changes and MLflow records them with the
run; `restore_params` (an Airflow teardown task, it runs whatever happened upstream) takes them
out again and keeps any edit a person made in between (pipeline/params_backup.py). From apply
to restore the run holds params.yaml (pipeline/params_lock.py): a second run, `airflow dags
test` or a hand-run `mt`/`dvc repro` fails with one line naming the holder instead of mixing its
params and outputs with the run's. A run that finds the lock of a run that has finished without
restoring (a worker killed in between) restores that run's leftover first.

Only light imports here: the DAG files import it at parse time (pipeline/dag_defaults.py).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, load_config, parse_config
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.params_backup import ParamsBackup, merge_overrides, with_overrides
from pipeline.params_lock import LockOwner, ParamsHeld, ParamsLock, RunRef, RunState, held_message
from pipeline.paths import ProjectPaths, project_paths
from pipeline.run_params import event_values, overrides_from_run_params, run_values

log = logging.getLogger(__name__)

# Stages in run order; the DAG has one task per stage, named like the dvc.yaml stage.
STAGES: tuple[str, ...] = (
    "fetch",
    "validate_raw",
    "clean",
    "tokenize",
    "profile",
    "train",
    "evaluate",
    "register",
)

PROJECT_VARIABLE = "mt_project_dir"
# How a run asks Airflow about another: dag_id, run_ids, states -> number of matching runs
# (the Task SDK's RuntimeTaskInstance.get_dr_count).
CountRuns = Callable[..., int]


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


def distributed(root: Path) -> bool:
    """Whether this worker is one of several hosts (it has a DVC remote; docker/README.md)."""
    from pipeline.remote.settings import remote_url

    return bool(remote_url(root))


def run_inputs(settings: Mapping[str, Any], stage_results: Sequence[str]) -> str | None:
    """The carried inputs (JSON) of a task of a multi-host run, from the XComs of
    apply_run_params and the stage tasks before it; None on one host."""
    if not settings.get("distributed"):
        return None
    from pipeline.remote.carried import RunInputs, StageResult

    results = tuple(StageResult.from_json(text) for text in stage_results)
    return RunInputs(settings["commit"], settings["params_text"], results).to_json()


def write_inputs_file(inputs: str) -> Path:
    """The inputs in a private temp file of this worker (too large for a command line)."""
    handle, name = tempfile.mkstemp(prefix="mt-run-inputs-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(inputs)
    return Path(name)


def stage_command(root: Path, stage: str, inputs: str | None = None) -> str:
    """The bash script of one stage task: `dvc repro` of that stage alone, in the project.

    The project's .venv/bin goes first on PATH so `dvc` and `mt` are the project's own, and the
    project first on PYTHONPATH so `mt` runs the code DVC hashes as the stage's dependency;
    PYTHONUNBUFFERED makes the stage's output reach the task log line by line. DVC waits for
    its repository lock instead of failing the task when a hand-run `dvc` holds it a moment.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return "\n".join(
        [*_in_project(root), 'echo "dvc: $(command -v dvc)"', _stage_line(stage, inputs)]
    )


def _in_project(root: Path) -> list[str]:
    """The first lines of every task script: in the project, with its venv and its code."""
    project = shlex.quote(str(root))
    venv_bin = shlex.quote(str(root / ".venv" / "bin"))
    return [
        "set -euo pipefail",
        f"cd {project}",
        f'if [ -d {venv_bin} ]; then export PATH={venv_bin}:"$PATH"; fi',
        f'export MT_PROJECT_DIR={project} PYTHONPATH={project}"${{PYTHONPATH:+:$PYTHONPATH}}"',
        "export PYTHONUNBUFFERED=1",
    ]


def _stage_line(stage: str, inputs: str | None) -> str:
    """One host: `dvc repro` in the shared folder; several: `mt stage run` (pull, repro,
    push; its last line, the stage's result, becomes the task's XCom)."""
    if inputs is None:
        return f"dvc --wait-for-lock repro --single-item {shlex.quote(stage)}"
    file = shlex.quote(str(write_inputs_file(inputs)))
    return f"trap 'rm -f {file}' EXIT\nmt stage run {shlex.quote(stage)} --inputs {file}"


def sync_command(root: Path, inputs: str | None) -> str:
    """The bash script of a sync task: this checkout to the run's end state (several hosts)."""
    if inputs is None:
        return "echo 'one host: the stages ran in this project folder, nothing to sync'"
    file = shlex.quote(str(write_inputs_file(inputs)))
    return "\n".join(
        [*_in_project(root), f"trap 'rm -f {file}' EXIT", f"mt stage sync --inputs {file}"]
    )


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


def dag_run_state(run: RunRef, count_runs: CountRuns) -> RunState:
    """Whether Airflow still runs `run`, has finished it, or does not know it."""
    if not count_runs(dag_id=run.dag_id, run_ids=[run.run_id]):
        return RunState.UNKNOWN
    active = count_runs(dag_id=run.dag_id, run_ids=[run.run_id], states=["queued", "running"])
    return RunState.ACTIVE if active else RunState.FINISHED


def apply_run_params(
    root: Path,
    form: Mapping[str, Any],
    run: RunRef,
    state_of: Callable[[RunRef], RunState],
    event_extras: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Take params.yaml for `run` and write its overrides (all validated first).

    Returns the run settings. Fails, changing nothing, while another run holds params.yaml.
    """
    paths = project_paths(root)
    if distributed(root):
        return _settings_for_hosts(paths, form, event_extras)
    lock = ParamsLock(paths)
    with lock.exclusive():
        _recover_from_dead_owner(paths, lock, run, state_of)
        text = paths.params.read_text(encoding="utf-8")
        overrides, effective = _checked_overrides(paths, text, form, event_extras)
        applied = with_overrides(text, overrides) if overrides else None
        lock.take(run)  # before params.yaml changes: no stage may read the overrides unowned
        if applied is not None:
            ParamsBackup(paths).save(applied)
            log.info("params.yaml for this run: %s", json.dumps(overrides, sort_keys=True))
    return {
        "overrides": overrides,
        "policy": effective.register.policy,
        "model_name": effective.register.model_name,
        "distributed": False,
    }


def _settings_for_hosts(
    paths: ProjectPaths, form: Mapping[str, Any], event_extras: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Several hosts: nothing is held here; the run's params text and commit travel with it
    and each stage task holds its own worker's params.yaml while it runs."""
    from pipeline.remote.checkout import head_commit

    text = paths.params.read_text(encoding="utf-8")
    overrides, effective = _checked_overrides(paths, text, form, event_extras)
    applied = with_overrides(text, overrides) if overrides else text
    log.info("params for this run (carried to every host): %s", json.dumps(overrides))
    return {
        "overrides": overrides,
        "policy": effective.register.policy,
        "model_name": effective.register.model_name,
        "distributed": True,
        "commit": head_commit(paths.root),
        "params_text": applied,
    }


def _checked_overrides(
    paths: ProjectPaths,
    text: str,
    form: Mapping[str, Any],
    event_extras: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], Config]:
    """The run's overrides and the config they make, both validated; nothing is written."""
    raw = yaml.safe_load(text)
    current = parse_config(raw, str(paths.params))
    values = run_values(form, event_values(event_extras, current))
    overrides = overrides_from_run_params(values, current)
    effective = parse_config(merge_overrides(raw, overrides), f"{paths.params} with run params")
    check_data_path(effective, paths.root)
    return overrides, effective


def _recover_from_dead_owner(
    paths: ProjectPaths, lock: ParamsLock, run: RunRef, state_of: Callable[[RunRef], RunState]
) -> None:
    """Refuse a live (or unknown) holder; undo what a finished one left behind."""
    owner = lock.owner()
    if owner is not None and owner.run != run:
        state = state_of(owner.run)
        if state != RunState.FINISHED:
            raise ParamsHeld(held_message(paths, owner, _what_to_do(owner, state)))
        log.warning("%s finished without its restore_params task; restoring for it", owner)
    backup = ParamsBackup(paths)
    if backup.original.is_file():
        log.warning("a previous run did not clean up: %s", backup.restore())
    lock.release()


def _what_to_do(owner: LockOwner, state: RunState) -> str:
    if state == RunState.ACTIVE:
        return "Airflow reports it still running; this run changed nothing, trigger it again later"
    return (
        "this Airflow does not know that run (another Airflow, or `airflow dags test` on another "
        "database); if it is dead: `mt params-lock release "
        f"{owner.run.run_id}`"
    )


def restore_params(root: Path, run: RunRef) -> str:
    """Undo `apply_run_params` of `run` and free params.yaml (a no-op for another run's lock)."""
    paths = project_paths(root)
    lock = ParamsLock(paths)
    with lock.exclusive():
        owner = lock.owner()
        if owner is not None and owner.run != run:
            outcome = f"params.yaml: held by {owner}, not by this run; left alone"
        else:
            outcome = ParamsBackup(paths).restore()
            lock.release()
    log.info("%s", outcome)
    return outcome


def release_dead_run(root: Path, run_id: str) -> str:
    """What an operator does for a run that died holding params.yaml: restore and free it."""
    paths = project_paths(root)
    lock = ParamsLock(paths)
    with lock.exclusive():
        owner = lock.owner()
        if owner is None or owner.run.run_id != run_id:
            raise ConfigError(f"{paths.params}: not held by run {run_id!r} (holder: {owner})")
        outcome = ParamsBackup(paths).restore()
        lock.release()
    return f"{outcome}; released the lock of {owner}"


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


def bring_in_reports(root: Path, inputs: str | None) -> None:
    """Several hosts: the reports the stages carried (registration.json, metrics.json) into
    this checkout, which may not be the one that ran register."""
    if inputs is None:
        return
    from pipeline.remote.carried import RunInputs, write_carried_files

    write_carried_files(root, RunInputs.from_json(inputs).results)


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
    # metrics.json also scores the val split (what sweeps select by); the approver judges the
    # test splits, as the gate did.
    test_splits = load_config(paths.params).data.test_splits
    return approval_request(registration, {s: metrics[s] for s in test_splits if s in metrics})


def promote_version(root: Path, model_name: str, version: str, reason: str) -> None:
    """What `mt registry promote VERSION` does, for the model this run registered, applied
    only while @champion is still the version the gate compared it with (the approver saw
    that comparison); otherwise nothing moves and the task fails naming both versions.

    The model name comes from registration.json: a run that changed the language pair
    registered under a name that the restored params.yaml no longer holds.
    """
    from pipeline.registry.commands import promote
    from pipeline.registry.gate import GateDecision
    from pipeline.registry.store import Registry

    registry = Registry.connect(project_paths(root), model_name)
    compared = GateDecision.from_tags(registry.version(version).tags).champion_version
    promote(registry, version, reason, expected_from=compared)
