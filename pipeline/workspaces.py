"""A run's own workspace: the project at the run's commit, its params, the project's DVC cache.

Every Airflow run (and every sweep point) reproduces its stages in a git worktree of the
project under `.dvc/tmp/runs/<name>/` (git and DVC ignore `.dvc/tmp`), checked out at the
run's commit, with the run's params.yaml written into it. Its `.dvc/config.local` points at the
project's DVC cache with links (reflink, else hardlink, else copy), so a stage whose outputs
are cached already costs a link, not a copy. The project checkout itself is never written:
params.yaml, dvc.lock and the outputs there stay as the user left them, and a hand-run `dvc
repro` beside a run works.

Why a worktree, not `dvc exp run --temp` or a clone: a run is one Airflow task per DVC stage
(`dvc repro --single-item`, retried and resumed per stage), which DVC's temporary workspace
cannot give (it lives for one `exp run`); a worktree shares the project's git objects and refs,
so `dvc exp save` in it lands in the project's `dvc exp show`, and it takes ~0.1 s to make where
a clone copies the history (docs/airflow.md has the measurements).

When the run ends, `save_experiment` records the workspace as a DVC experiment named after the
run (`dvc exp save`), and the workspace is removed; a failed run's stays for inspection until
`orchestration.keep_failed_days` have passed.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import project_paths
from pipeline.programs import program
from pipeline.tracking import DVC_EXP_NAME_ENV, tracking_uri

log = logging.getLogger(__name__)

RUNS_DIR = Path(".dvc") / "tmp" / "runs"
MARKER = ".mt-workspace.json"
# Links, never a second copy of a model; DVC falls back along the list per file system.
CACHE_LINKS = "reflink,hardlink,copy"
# A git ref component DVC accepts as an experiment name (dvc.repo.experiments.utils).
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
LOCK_TIMEOUT_S = 120.0
TAIL_LINES = 20


@dataclass(frozen=True)
class Workspace:
    """The workspace `name` of `project` (which may not exist yet)."""

    project: Path
    name: str

    @property
    def path(self) -> Path:
        return self.project / RUNS_DIR / self.name

    @property
    def marker(self) -> Path:
        return self.path / MARKER


def experiment_name(dag_id: str, run_id: str) -> str:
    """The DVC experiment (and workspace) name of an Airflow run: `<dag>-<run id>` with every
    character git refuses in a ref turned into `-` (`manual__2026-12-05T10:00:00+00:00` ->
    `retrain_translation-manual__2026-12-05T10-00-00-00-00`)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{dag_id}-{run_id}").strip("-.")
    name = re.sub(r"\.{2,}", ".", name)[:128].removesuffix(".lock")
    check_name(name)
    return name


def check_name(name: str) -> None:
    if not EXPERIMENT_NAME.fullmatch(name) or ".." in name or name.endswith(".lock"):
        raise ConfigError(
            f"{name!r}: not a workspace/experiment name (letters, digits, `_.-`, at most 128, "
            "starting with a letter or digit)"
        )


def git(cwd: Path, *args: str) -> str:
    """`git ARGS` in `cwd`; a failure is one line naming the command and git's last words."""
    done = subprocess.run(
        [program("git"), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise PipelineError(f"`git {' '.join(args)}` in {cwd} failed: {' '.join(said[-1:])}")
    return done.stdout


def head_commit(project: Path) -> str:
    """The commit a run of `project` starts from; a project without git cannot have runs."""
    if not (project / ".git").exists():
        raise ConfigError(
            f"{project}: not a git repository; each run is a DVC experiment in a worktree of "
            "the project, which needs one (git init && git commit, or see docs/airflow.md)"
        )
    return git(project, "rev-parse", "HEAD").strip()


def require_commit(project: Path, commit: str) -> None:
    """This checkout must hold the run's commit: a run never runs other code than its own."""
    if not commit:
        raise ConfigError(f"{project}: the run names no commit; a run's workspace needs one")
    found = subprocess.run(
        [program("git"), "cat-file", "-e", f"{commit}^{{commit}}"],
        cwd=project,
        capture_output=True,
    )
    if found.returncode:
        raise ConfigError(
            f"{project}: this checkout does not have commit {commit[:12]}, where the run "
            f"started; fetch it (git fetch) or restart the run once every worker has it"
        )


def committed_params(project: Path, commit: str) -> str:
    """params.yaml as commit `commit` holds it: a run starts there, not from uncommitted edits."""
    done = subprocess.run(
        [program("git"), "show", f"{commit}:params.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"{project}: commit {commit[:12]} has no params.yaml")
    return done.stdout


@contextlib.contextmanager
def _workspaces_locked(project: Path, lock_name: str = ".lock") -> Iterator[None]:
    """One holder of `lock_name` at a time among this project's workspaces: one creator or
    remover (git's worktree list), one `dvc exp save` (DVC keeps its save in progress in
    refs every worktree shares: two at once break each other)."""
    runs = project / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    with (runs / lock_name).open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"{runs / lock_name}: another process held it for "
                        f"{LOCK_TIMEOUT_S:.0f} s; gave up"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_workspace(project: Path, name: str, commit: str, params_text: str) -> Workspace:
    """The run's workspace, made on first use: a worktree at `commit` with `params_text` as
    its params.yaml. A task that finds it made (a later stage, a retry) checks that it holds
    the same commit and params, so two runs can never share one."""
    check_name(name)
    workspace = Workspace(project, name)
    with _workspaces_locked(project):
        if workspace.marker.is_file():
            _check_same_run(workspace, commit, params_text)
            return workspace
        if workspace.path.exists():  # a creation killed half way: start it again
            _remove_worktree(workspace)
        _create(workspace, commit, params_text)
    log.info("workspace %s: commit %s", workspace.path, commit[:12])
    return workspace


def _create(workspace: Workspace, commit: str, params_text: str) -> None:
    project = workspace.project
    require_commit(project, commit)
    git(project, "worktree", "add", "--detach", "--force", str(workspace.path), commit)
    _share_cache(workspace)
    atomic_write_text(workspace.path / "params.yaml", params_text)
    atomic_write_json(
        workspace.marker, {"name": workspace.name, "commit": commit, "created": time.time()}
    )


def _share_cache(workspace: Workspace) -> None:
    """The project's DVC cache (and its link types) for the workspace, in its config.local."""
    from dvc.config import Config
    from dvc.repo import Repo

    with Repo(str(workspace.project)) as repo:
        cache_dir = repo.cache.local_cache_dir
    with Config(str(workspace.path / ".dvc")).edit("local") as local:
        local["cache"]["dir"] = cache_dir
        local["cache"]["type"] = CACHE_LINKS


def _check_same_run(workspace: Workspace, commit: str, params_text: str) -> None:
    recorded = json.loads(workspace.marker.read_text(encoding="utf-8"))
    params = (workspace.path / "params.yaml").read_text(encoding="utf-8")
    if recorded.get("commit") != commit or params != params_text:
        raise ConfigError(
            f"{workspace.path}: this workspace holds another commit or other params than the "
            "run asking for it; two runs of one name? (remove the folder to start over)"
        )


def remove_workspace(workspace: Workspace) -> bool:
    """Delete the workspace and git's record of it; False when there was none."""
    with _workspaces_locked(workspace.project):
        if not workspace.path.exists():
            return False
        _remove_worktree(workspace)
    return True


def _remove_worktree(workspace: Workspace) -> None:
    subprocess.run(
        [program("git"), "worktree", "remove", "--force", "--force", str(workspace.path)],
        cwd=workspace.project,
        capture_output=True,
        check=False,
    )
    shutil.rmtree(workspace.path, ignore_errors=True)
    subprocess.run([program("git"), "worktree", "prune"], cwd=workspace.project, check=False)


def prune_workspaces(project: Path, keep_days: float, now: float | None = None) -> list[str]:
    """Remove the workspaces older than `keep_days` (runs that failed and were kept for
    inspection, or a host's copy of a run finished elsewhere); the names removed."""
    runs = project / RUNS_DIR
    cutoff = (now if now is not None else time.time()) - keep_days * 86400
    removed = []
    for marker in sorted(runs.glob(f"*/{MARKER}")) if runs.is_dir() else []:
        if marker.stat().st_mtime < cutoff:
            workspace = Workspace(project, marker.parent.name)
            if remove_workspace(workspace):
                removed.append(workspace.name)
    if removed:
        log.info("removed workspaces older than %s days: %s", keep_days, ", ".join(removed))
    return removed


def stage_environment(
    workspace: Workspace, environ: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What `dvc` and the stages it runs need in the workspace.

    MT_PROJECT_DIR is the workspace (the stages write there); the project's MLflow store stays
    in force (the workspace's own default would go with it). The project's .venv/bin first on
    PATH, the workspace first on PYTHONPATH: `mt` runs the code DVC hashed. DVC_EXP_NAME names
    the experiment on the training run and the registered version.
    """
    env = dict(environ)
    venv_bin = workspace.project / ".venv" / "bin"
    if venv_bin.is_dir():
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workspace.path), env.get("PYTHONPATH")]))
    env["MT_PROJECT_DIR"] = str(workspace.path)
    env["MLFLOW_TRACKING_URI"] = tracking_uri(project_paths(workspace.project))
    env["PYTHONUNBUFFERED"] = "1"
    env[DVC_EXP_NAME_ENV] = workspace.name
    return {**env, **(extra or {})}


def run_in(
    workspace: Workspace, command: Sequence[str], env: Mapping[str, str], prefix: str = ""
) -> None:
    """Run `command` in the workspace; its output reaches stderr line by line (`prefix | `);
    a failure is one line with the command's last error line."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    executable = program(command[0], env.get("PATH"))
    try:
        process = subprocess.Popen(
            [executable, *command[1:]],
            cwd=workspace.path,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise PipelineError(f"{workspace.path}: `{command[0]}` not found on PATH") from None
    with process:
        for line in process.stdout or ():
            print(f"{prefix} | {line}" if prefix else line, end="", flush=True, file=sys.stderr)
            tail.append(line.rstrip())
    if process.returncode != 0:
        errors = [line for line in tail if "ERROR" in line or "failed" in line]
        last = (errors or list(tail) or ["(no output)"])[-1]
        raise PipelineError(
            f"{workspace.name}: `{' '.join(command[:5])}` exited with {process.returncode}: {last}"
        )


def reproduce(
    workspace: Workspace, targets: Sequence[str], env: Mapping[str, str], single_item: bool
) -> None:
    """`dvc repro` of `targets` in the workspace (`--single-item`: those stages alone)."""
    command = ["dvc", "--wait-for-lock", "repro", *(["--single-item"] if single_item else [])]
    run_in(workspace, [*command, *targets], env, prefix=workspace.name)


def save_experiment(workspace: Workspace, env: Mapping[str, str]) -> str:
    """`dvc exp save` of the workspace as experiment `workspace.name` (a retry replaces it);
    returns the experiment's commit, which `dvc exp show` in the project lists.

    Outputs git would track but the commit does not hold yet (metrics.json in a project that
    never committed one) go in too; git-ignored ones stay out (reports that quote the corpus).
    """
    new_files = git(workspace.path, "ls-files", "--others", "--exclude-standard").splitlines()
    include = [arg for path in new_files for arg in ("--include-untracked", path)]
    command = ["dvc", "--wait-for-lock", "exp", "save", "--force", "--name", workspace.name]
    env = {**committer(workspace), **env}
    # Only the stages the workspace's dvc.lock records: a sweep point stops at evaluate, and
    # `dvc exp save` of every stage would ask for the outputs of stages it never ran.
    stages = [*recorded_stages(workspace), *include]
    with _workspaces_locked(workspace.project, ".save-lock"):
        run_in(workspace, [*command, *stages], env, prefix=workspace.name)
    baseline = git(workspace.path, "rev-parse", "HEAD").strip()
    rev = experiment_rev(workspace.project, baseline, workspace.name)
    if rev is None:
        raise PipelineError(f"{workspace.name}: `dvc exp save` left no experiment ref")
    log.info("experiment %s saved: commit %s on %s", workspace.name, rev[:7], baseline[:7])
    return rev


def recorded_stages(workspace: Workspace) -> list[str]:
    """The stages dvc.lock in the workspace has an entry for, in its order."""
    import yaml

    lock = workspace.path / "dvc.lock"
    if not lock.is_file():
        return []
    return list((yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages") or {})


def committer(workspace: Workspace) -> dict[str, str]:
    """Who commits the experiment where git names nobody (a worker's container has no git
    config): the pipeline, through git's own variables. A configured identity is kept."""
    done = subprocess.run(
        [program("git"), "config", "user.email"],
        cwd=workspace.path,
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return {}
    return {
        f"GIT_{role}_{field}": value
        for role in ("AUTHOR", "COMMITTER")
        for field, value in (("NAME", "mt-pipeline"), ("EMAIL", "mt-pipeline@localhost"))
    }


def experiment_ref(baseline: str, name: str) -> str:
    """Where DVC keeps experiment `name` of `baseline` (its own naming, dvc.repo.experiments)."""
    from dvc.repo.experiments.refs import ExpRefInfo

    return str(ExpRefInfo(baseline, name))


def experiment_rev(project: Path, baseline: str, name: str) -> str | None:
    """The commit of experiment `name` on `baseline`, or None when there is none."""
    done = subprocess.run(
        [program("git"), "rev-parse", "--verify", "--quiet", experiment_ref(baseline, name)],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None
