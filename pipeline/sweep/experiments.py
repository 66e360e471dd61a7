"""The DVC side of a sweep: each point is one `dvc exp run --temp`, the winner is re-checked out.

Why `dvc exp run --temp` per point, not `--queue` + `dvc queue start`: a temp run is a
foreground process with its own exit status and output, so a failed point fails its own
command (or Airflow task) at once; it inherits this process's environment, which is how the
point's training run learns its MLflow parent (MT_SWEEP_PARENT_RUN_ID); and it is the one
mechanism both `mt sweep run --jobs N` and the Airflow DAG's mapped tasks use. DVC stashes the
workspace (HEAD + uncommitted changes to tracked files) into each point as it starts, under its
repository lock (`--wait-for-lock` queues concurrent starts), and runs the stages in
`.dvc/tmp/exps/`, so the workspace itself is never changed. A point runs the stages up to
`evaluate`: the val score is its result, and only the winner is registered.

The winner's outputs are read back from its experiment commit: a git worktree of that commit
under `.dvc/tmp/sweeps/`, its DVC outputs checked out from the project's cache. Outputs the
repository keeps out of git (reports/eval and reports/validation quote corpus text) are not in
the commit, so there `dvc repro --single-item` remakes exactly those stages, and the register
stage runs as in any `dvc repro`; training is never repeated.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.paths import ProjectPaths, project_paths
from pipeline.sweep.errors import SweepError
from pipeline.sweep.grid import Point
from pipeline.tracking import SWEEP_PARENT_ENV, tracking_uri

log = logging.getLogger(__name__)

# A point reproduces the pipeline up to here; registering is for the winner alone.
POINT_TARGET = "evaluate"
# What the winner's worktree remakes when the commit lacks their git-ignored outputs, then the
# register stage; each is skipped by DVC when its outputs are already there.
REGISTER_STAGES = ("validate_raw", "clean", "evaluate", "register")
TAIL_LINES = 20


def sweeps_dir(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "sweeps"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise SweepError(f"`git {' '.join(args)}` in {root} failed: {' '.join(detail[-1:])}")
    return done.stdout


def baseline_rev(root: Path) -> str:
    """The commit every point starts from (with the uncommitted changes DVC stashes)."""
    if not (root / ".git").exists():
        raise SweepError(f"{root}: not a git repository; DVC experiments need one (git init)")
    return git(root, "rev-parse", "HEAD").strip()


def experiment_ref(baseline: str, name: str) -> str:
    """Where DVC keeps experiment `name` of `baseline` (its own naming, dvc.repo.experiments)."""
    from dvc.repo.experiments.refs import ExpRefInfo

    return str(ExpRefInfo(baseline, name))


def experiment_rev(root: Path, baseline: str, name: str) -> str | None:
    """The commit of experiment `name` on `baseline`, or None when there is none."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", experiment_ref(baseline, name)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def file_at(root: Path, rev: str, path: str) -> str | None:
    """A file of commit `rev` as text, or None when the commit does not hold it."""
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def stage_env(root: Path, environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """What `dvc` and the stages it runs need outside the project folder.

    MT_PROJECT_DIR goes: the stages must write into DVC's workspace (their cwd), not the
    project. The project's MLflow store stays in force (a temp workspace's default would be
    deleted with it). `.` first on PYTHONPATH makes `mt` run the code of the workspace it runs
    in, the code DVC hashed, as the DAG's stage tasks do.
    """
    env = {key: value for key, value in environ.items() if key != "MT_PROJECT_DIR"}
    venv_bin = root / ".venv" / "bin"
    if venv_bin.is_dir():
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [".", environ.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = tracking_uri(project_paths(root))
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def run_streaming(command: list[str], cwd: Path, env: Mapping[str, str], prefix: str) -> None:
    """Run `command`, echo its output line by line with `prefix`; fail with its last lines."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(f"{prefix} | {line}", end="", flush=True)
            tail.append(line.rstrip())
    if process.returncode != 0:
        errors = [line for line in tail if "ERROR" in line or "failed" in line]
        last = (errors or list(tail) or ["(no output)"])[-1]
        raise SweepError(
            f"{prefix}: `{' '.join(command[:4])} ...` exited with {process.returncode}: {last}"
        )


def run_point(root: Path, point: Point, baseline: str, parent_run_id: str) -> str:
    """`dvc exp run --temp` of one point up to evaluate; returns its experiment commit."""
    if experiment_rev(root, baseline, point.name):
        raise SweepError(
            f"DVC experiment {point.name} exists already for commit {baseline[:7]}; choose "
            "another sweep name (or `dvc exp remove` it)"
        )
    command = [
        "dvc", "--wait-for-lock", "exp", "run", "--temp", "--name", point.name,
        *point.set_params(), POINT_TARGET,
    ]  # fmt: skip
    env = stage_env(root, os.environ, {SWEEP_PARENT_ENV: parent_run_id})
    log.info("%s: dvc exp run --temp %s", point.name, point.describe())
    run_streaming(command, root, env, point.name)
    rev = experiment_rev(root, baseline, point.name)
    if rev is None:
        moved = baseline_rev(root)
        raise SweepError(
            f"{point.name}: HEAD moved from {baseline[:7]} to {moved[:7]} during the sweep, so "
            "this point does not start where the others did; rerun the sweep without committing"
        )
    return rev


def val_scores(root: Path, rev: str) -> dict[str, Any]:
    """The val split's entry of the experiment's metrics.json (`mt evaluate` writes it)."""
    import yaml

    params = yaml.safe_load(file_at(root, rev, "params.yaml") or "{}") or {}
    split = str((params.get("data") or {}).get("val_split", "val"))
    metrics = json.loads(file_at(root, rev, "metrics.json") or "{}")
    scores = metrics.get(split)
    if not isinstance(scores, dict) or "bleu" not in scores:
        raise SweepError(
            f"experiment commit {rev[:7]}: metrics.json has no `{split}` scores; the evaluate "
            "stage writes them (is this project's pipeline older than sweeps?)"
        )
    return scores


@contextlib.contextmanager
def experiment_checkout(root: Path, rev: str, name: str) -> Iterator[Path]:
    """A git worktree of experiment commit `rev` with its DVC outputs, removed afterwards."""
    workspace = sweeps_dir(root) / f"{name}-{rev[:7]}"
    if workspace.exists():  # left by a killed registration of the same point
        git(root, "worktree", "remove", "--force", str(workspace))
        shutil.rmtree(workspace, ignore_errors=True)
    workspace.parent.mkdir(parents=True, exist_ok=True)
    git(root, "worktree", "add", "--detach", str(workspace), rev)
    try:
        env = stage_env(root, os.environ, {})
        cache = str(root / ".dvc" / "cache")
        run_streaming(["dvc", "config", "--local", "cache.dir", cache], workspace, env, name)
        run_streaming(["dvc", "checkout"], workspace, env, name)
        yield workspace
    finally:
        git(root, "worktree", "remove", "--force", str(workspace))


def restore_run_record(workspace: Path, run_id: str, experiment_id: str) -> None:
    """reports/train/run.json, which git does not keep: the register stage logs the model into
    the training run it names (the point's own, a child of the sweep)."""
    run_file = project_paths(workspace).train_reports_dir / "run.json"
    if not run_file.is_file():
        atomic_write_json(run_file, {"run_id": run_id, "experiment_id": experiment_id})


def register_in(workspace: Path, root: Path, name: str) -> dict[str, Any]:
    """`dvc repro --single-item` of what registering needs, then reports/registration.json."""
    env = stage_env(root, os.environ, {})
    command = ["dvc", "repro", "--single-item", *REGISTER_STAGES]
    run_streaming(command, workspace, env, f"{name} (register)")
    report = ProjectPaths(workspace).registration_report
    registration: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return registration
