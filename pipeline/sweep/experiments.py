"""The DVC side of a sweep: each point is a run in its own workspace, saved as a DVC experiment.

A point is the same kind of run as a retrain_translation run (pipeline/workspaces.py): a
worktree of the project at the sweep's commit, params.yaml as committed there with the point's
`-S` overrides applied by DVC's own function (what `dvc exp run -S` does), `dvc repro` of the
stages up to `evaluate`, then `dvc exp save` under the point's name, so `dvc exp show` lists
it beside the Airflow runs. The val score is its result, and only the winner is registered.
A finished point's workspace is removed; a failed one's stays for inspection until it is older
than `orchestration.keep_failed_days`.

The winner is registered from a workspace at its experiment commit, its DVC outputs checked
out from the project's cache. Outputs the repository keeps out of git (reports/eval and
reports/validation quote corpus text) are not in the commit, so there `dvc repro
--single-item` remakes exactly those stages, and the register stage runs as in any `dvc
repro`; training is never repeated.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.paths import ProjectPaths, project_paths
from pipeline.programs import program
from pipeline.sweep.errors import SweepError
from pipeline.sweep.grid import Point
from pipeline.sweep.tracking import Sweep
from pipeline.tracking import SWEEP_PARENT_ENV
from pipeline.workspaces import (
    Workspace,
    committed_params,
    experiment_rev,
    open_workspace,
    remove_workspace,
    reproduce,
    run_in,
    save_experiment,
    stage_environment,
)

log = logging.getLogger(__name__)

# A point reproduces the pipeline up to here; registering is for the winner alone.
POINT_TARGET = "evaluate"
# What the winner's workspace remakes when the commit lacks their git-ignored outputs, then the
# register stage; each is skipped by DVC when its outputs are already there.
REGISTER_STAGES = ("validate_raw", "clean", "evaluate", "register")


def baseline_rev(root: Path) -> str:
    """The commit every point starts from."""
    if not (root / ".git").exists():
        raise SweepError(f"{root}: not a git repository; DVC experiments need one (git init)")
    done = subprocess.run(
        [program("git"), "rev-parse", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SweepError(f"{root}: no commit yet; a sweep starts from one (git commit)")
    return done.stdout.strip()


def file_at(root: Path, rev: str, path: str) -> str | None:
    """A file of commit `rev` as text, or None when the commit does not hold it."""
    done = subprocess.run(
        [program("git"), "show", f"{rev}:{path}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout if done.returncode == 0 else None


def point_params(root: Path, baseline: str, point: Point) -> str:
    """params.yaml of the point: the baseline's with the point's overrides, as DVC applies
    `dvc exp run -S` (pipeline/sweep/grid.py checked them the same way)."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "params.yaml"
        copy.write_text(committed_params(root, baseline), encoding="utf-8")
        apply_overrides(copy, [f"{key}={value}" for key, value in point.overrides.items()])
        return copy.read_text(encoding="utf-8")


def run_point(root: Path, point: Point, baseline: str, parent_run_id: str) -> str:
    """The stages of one point up to evaluate in its workspace; its experiment commit."""
    if experiment_rev(root, baseline, point.name):
        raise SweepError(
            f"DVC experiment {point.name} exists already for commit {baseline[:7]}; choose "
            "another sweep name (or `dvc exp remove` it)"
        )
    workspace = open_workspace(root, point.name, baseline, point_params(root, baseline, point))
    env = stage_environment(workspace, os.environ, {SWEEP_PARENT_ENV: parent_run_id})
    log.info("%s: %s in %s", point.name, point.describe(), workspace.path)
    try:
        reproduce(workspace, [POINT_TARGET], env, single_item=False)
        rev = save_experiment(workspace, env)
    except PipelineError as error:
        raise SweepError(f"{error} (its workspace is kept: {workspace.path})") from None
    remove_workspace(workspace)
    return rev


def val_scores(root: Path, rev: str, metric: str = "bleu") -> dict[str, Any]:
    """The val split's entry of the experiment's metrics.json (`mt evaluate` writes it), which
    must hold `metric` (the sweep's register.metric)."""
    import yaml

    params = yaml.safe_load(file_at(root, rev, "params.yaml") or "{}") or {}
    split = str((params.get("data") or {}).get("val_split", "val"))
    metrics = json.loads(file_at(root, rev, "metrics.json") or "{}")
    scores = metrics.get(split)
    if not isinstance(scores, dict) or metric not in scores:
        raise SweepError(
            f"experiment commit {rev[:7]}: metrics.json has no `{split}` {metric} score; the "
            "evaluate stage writes it (is this project's pipeline older than sweeps, or than "
            "its task's metrics?)"
        )
    return scores


def register_point(root: Path, rev: str, name: str, run_id: str, sweep: Sweep) -> dict[str, Any]:
    """The point's experiment through the register stage, from a workspace at its commit;
    returns reports/registration.json. The workspace is removed afterwards."""
    params = file_at(root, rev, "params.yaml")
    if params is None:
        raise SweepError(f"experiment commit {rev[:7]} of {name}: no params.yaml")
    workspace = open_workspace(root, f"{name}-register", rev, params)
    try:
        env = stage_environment(workspace, os.environ)
        run_in(workspace, ["dvc", "checkout"], env, f"{name} (register)")
        restore_run_record(workspace, run_id, sweep.experiment_id)
        reproduce(workspace, REGISTER_STAGES, env, single_item=True)
        report = ProjectPaths(workspace.path).registration_report
        registration: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    finally:
        remove_workspace(workspace)
    return registration


def restore_run_record(workspace: Workspace, run_id: str, experiment_id: str) -> None:
    """reports/train/run.json, which git does not keep: the register stage logs the model into
    the training run it names (the point's own, a child of the sweep)."""
    run_file = project_paths(workspace.path).train_reports_dir / "run.json"
    if not run_file.is_file():
        atomic_write_json(run_file, {"run_id": run_id, "experiment_id": experiment_id})
