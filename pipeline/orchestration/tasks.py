"""What the retrain DAG's tasks do besides running a stage: the run's settings, the task
scripts, the approval request and the promotion.

A run is fixed by its first task (`start_run`): the project's HEAD commit, params.yaml as that
commit holds it with the run's overrides (its Trigger form, or the `extra` of the asset events
that started it; pipeline/orchestration/run_params.py), and the name of its DVC experiment.
Nothing is written then; every stage task reproduces its stage in the run's own workspace
(pipeline/workspaces.py) through `mt stage run`, `save_experiment` records the workspace as a
DVC experiment, and `close_run` removes it (a failed run's is kept for
`orchestration.keep_failed_days`). The project checkout is never edited by a run, so runs
overlap and a person's hand-run `dvc repro` works beside them.

Only light imports here: the DAG files import it at parse time.
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
from pipeline.orchestration.run_params import (
    event_values,
    overrides_from_run_params,
    run_values,
)
from pipeline.params_edit import merge_overrides, with_overrides
from pipeline.paths import project_paths

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
    from pipeline.orchestration.remote import remote_url

    return bool(remote_url(root))


def start_run(
    root: Path,
    form: Mapping[str, Any],
    dag_id: str,
    run_id: str,
    event_extras: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """What the run is, every param checked first; nothing is written.

    Returns the run settings every later task reads from XCom: the commit, the params text of
    its workspace, its experiment name, and the overrides, policy and model name it makes.
    """
    from pipeline.workspaces import committed_params, experiment_name, head_commit

    commit = head_commit(root)
    text = committed_params(root, commit)
    overrides, effective = _checked_overrides(root, text, form, event_extras)
    params_text = with_overrides(text, overrides) if overrides else text
    name = experiment_name(dag_id, run_id)
    log.info("run %s: commit %s, overrides %s", name, commit[:12], json.dumps(overrides))
    return {
        "experiment": name,
        "commit": commit,
        "params_text": params_text,
        "overrides": overrides,
        "policy": effective.register.policy,
        "model_name": effective.register.model_name,
        "distributed": distributed(root),
    }


def _checked_overrides(
    root: Path,
    text: str,
    form: Mapping[str, Any],
    event_extras: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], Config]:
    """The run's overrides and the config they make, both validated. A data path relative to
    the project becomes absolute: the stages run in the workspace, not the project folder."""
    where = str(project_paths(root).params)
    raw = yaml.safe_load(text)
    current = parse_config(raw, where)
    values = run_values(form, event_values(event_extras, current))
    overrides = overrides_from_run_params(values, current)
    effective = parse_config(merge_overrides(raw, overrides), f"{where} with run params")
    folder = check_data_path(effective, root)
    if "path" in overrides.get("data", {}):
        check_data_root(folder, effective, root)
    if folder is not None and str(folder) != effective.data.path:
        overrides.setdefault("data", {})["path"] = str(folder)
    return overrides, effective


def check_data_root(folder: Path | None, config: Config, root: Path) -> None:
    """A data path a run asks for (form, asset event) must resolve inside
    `orchestration.data_root`: whoever may trigger a run must not choose the training and test
    data from anywhere on the worker. params.yaml's own data.path is the project's choice."""
    if folder is None:
        return  # the public corpus reads no data path
    allowed = (root / config.orchestration.data_root).resolve()
    if not folder.is_relative_to(allowed):
        raise ConfigError(
            f"run params: data path {folder} is outside orchestration.data_root ({allowed}); "
            "put the corpus under it, or change data_root in params.yaml"
        )


def check_data_path(config: Config, root: Path) -> Path | None:
    """A `dir`/`tsv` source needs a folder that exists on this worker; say so before fetch.
    Returns the folder (resolved against the project), None for the public corpus."""
    if config.data.source == "multi30k":
        return None
    if not config.data.path:
        raise ConfigError(
            f"run params: data source {config.data.source!r} needs a data path (the folder "
            "with the corpus files); set `data_path`"
        )
    folder = (root / config.data.path).resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: data path not found on the worker; fix `data_path`")
    return folder


def run_inputs(settings: Mapping[str, Any], stage_results: Sequence[str | None]) -> str:
    """The inputs (JSON) of a task of the run: its settings, and on several hosts the
    results (XComs) of the stage tasks before it."""
    from pipeline.orchestration.carried import RunInputs, StageResult

    results = tuple(StageResult.from_json(text) for text in stage_results if text)
    return RunInputs(
        settings["commit"], settings["params_text"], settings["experiment"], results
    ).to_json()


def write_inputs_file(inputs: str) -> Path:
    """The inputs in a private temp file of this worker (too large for a command line)."""
    handle, name = tempfile.mkstemp(prefix="mt-run-inputs-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(inputs)
    return Path(name)


def stage_command(root: Path, stage: str, inputs: str) -> str:
    """The bash script of one stage task: `mt stage run STAGE` (in the run's workspace:
    pipeline/orchestration/stage_runner.py); its last line, the stage's result, is the XCom."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return _mt_stage(root, ["run", stage], inputs)


def save_command(root: Path, inputs: str) -> str:
    """The bash script of the save_experiment task: `mt stage save`."""
    return _mt_stage(root, ["save"], inputs)


def _mt_stage(root: Path, action: list[str], inputs: str) -> str:
    """`mt stage ACTION --inputs FILE` from the project, with its venv and its code.

    The project's .venv/bin goes first on PATH so `dvc` and `mt` are the project's own;
    PYTHONUNBUFFERED makes the stage's output reach the task log line by line.
    """
    project = shlex.quote(str(root))
    venv_bin = shlex.quote(str(root / ".venv" / "bin"))
    file = shlex.quote(str(write_inputs_file(inputs)))
    return "\n".join(
        [
            "set -euo pipefail",
            f"trap 'rm -f {file}' EXIT",
            f"cd {project}",
            f'if [ -d {venv_bin} ]; then export PATH={venv_bin}:"$PATH"; fi',
            f'export MT_PROJECT_DIR={project} PYTHONPATH={project}"${{PYTHONPATH:+:$PYTHONPATH}}"',
            "export PYTHONUNBUFFERED=1",
            f"mt stage {' '.join(map(shlex.quote, action))} --inputs {file}",
        ]
    )


def close_run(root: Path, experiment: str, saved: bool, keep_days: float) -> str:
    """The run's workspace on this host removed once its experiment is saved, kept for
    inspection when it is not; and workspaces older than `keep_days` removed."""
    from pipeline.workspaces import Workspace, prune_workspaces, remove_workspace

    workspace = Workspace(root, experiment)
    if saved:
        outcome = f"{workspace.path}: removed" if remove_workspace(workspace) else "no workspace"
    elif workspace.path.exists():
        outcome = (
            f"{workspace.path}: kept for inspection (the run did not finish); removed after "
            f"{keep_days:g} days (orchestration.keep_failed_days)"
        )
    else:
        outcome = "no workspace on this host"
    prune_workspaces(root, keep_days)
    log.info("%s", outcome)
    return outcome


def read_registration(folder: Path) -> dict[str, Any]:
    """reports/registration.json as the register stage wrote it in `folder`."""
    path = project_paths(folder).registration_report
    if not path.is_file():
        raise PipelineError(f"{path}: not found; the register stage writes it (run it first)")
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def approval_request(
    registration: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """Title and Markdown body of the approval task: the challenger against the champion, in
    the scores its task reports, register.metric first (registration.json names the task and
    metric; one written before they were recorded is translation, BLEU)."""
    from pipeline.registry.model_card import column_label, score_columns

    name, version = registration["model_name"], str(registration["version"])
    champion = registration.get("champion_before")
    task = str(registration.get("task") or "translation")
    metric = str(registration.get("metric") or "bleu")
    columns = score_columns(task, metric)
    labels = " | ".join(column_label(key) for key in columns)
    lines = [
        f"**{name}** version **{version}** (@challenger) against "
        + (f"@champion version **{champion}**." if champion else "no champion yet."),
        "",
        f"| test split | {labels} | sentences |",
        "| --- |" + " ---: |" * (len(columns) + 1),
        *(
            f"| {split} | "
            + " | ".join(_number(m.get(key), ".2f") for key in columns)
            + f" | {m.get('sentences', 'n/a')} |"
            for split, m in metrics.items()
        ),
        "",
        f"Gate: **{registration['decision']}**: {registration['reason']}",
        f"{column_label(metric)} delta vs champion: "
        f"{_number(registration.get('delta'), '+.2f')}, "
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


def challenger_awaiting_approval(
    root: Path, inputs: str, dag_run_id: str
) -> dict[str, Any] | None:
    """The approval request for the version this run registered, if the gate left it waiting.

    Read from the run's workspace (on several hosts, with the reports its stages carried).
    None when the gate rejected it, or when the version was not registered by this run.
    """
    from pipeline.orchestration.carried import RunInputs
    from pipeline.orchestration.stage_runner import run_workspace

    workspace = run_workspace(root, RunInputs.from_json(inputs))
    registration = read_registration(workspace.path)
    if registration["decision"] != "awaiting_approval":
        log.info("gate outcome %s: nothing to approve", registration["decision"])
        return None
    from pipeline.registry.store import Registry

    paths = project_paths(root)
    registry = Registry.connect(paths, registration["model_name"])
    tags = registry.version(str(registration["version"])).tags
    if tags.get("airflow.dag_run_id") != dag_run_id:
        log.info(
            "version %s was not registered by this run: nothing to approve",
            registration["version"],
        )
        return None
    ran = project_paths(workspace.path)
    metrics = json.loads(ran.metrics_file.read_text(encoding="utf-8"))
    # metrics.json also scores the val split (what sweeps select by); the approver judges the
    # test splits, as the gate did.
    test_splits = load_config(ran.params).data.test_splits
    return approval_request(registration, {s: metrics[s] for s in test_splits if s in metrics})


def promote_version(root: Path, model_name: str, version: str, reason: str) -> None:
    """What `mt registry promote VERSION` does, for the model this run registered, applied
    only while @champion is still the version the gate compared it with (the approver saw
    that comparison); otherwise nothing moves and the task fails naming both versions.

    The model name comes from registration.json: a run that changed the language pair
    registered under a name the project's params.yaml does not hold.
    """
    from pipeline.registry.commands import promote
    from pipeline.registry.gate import GateDecision
    from pipeline.registry.store import Registry

    registry = Registry.connect(project_paths(root), model_name)
    compared = GateDecision.from_tags(registry.version(version).tags).champion_version
    promote(registry, version, reason, expected_from=compared)
