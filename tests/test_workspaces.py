"""A run's own workspace (pipeline/workspaces.py) on a real git + DVC repository: made at the
run's commit with its params, sharing the project's cache, saved as a DVC experiment that the
project's `dvc exp show` lists, removed or kept for inspection; the project never written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.orchestration.tasks import close_run
from pipeline.workspaces import (
    MARKER,
    RUNS_DIR,
    Workspace,
    experiment_name,
    open_workspace,
    prune_workspaces,
    reproduce,
    save_experiment,
    stage_environment,
)
from tests.airflow_harness import VENV_BIN
from tests.conftest import git_commit_all

STAGE = """\
import json, yaml
size = yaml.safe_load(open("params.yaml"))["size"]
open("out.bin", "w").write("x" * size)
json.dump({"size": size}, open("metrics.json", "w"))
"""
DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [size]
    outs: [out.bin]
    metrics: [{metrics.json: {cache: false}}]
"""


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def committed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed git + DVC project with one stage and size: 10 in params.yaml (made once:
    `dvc init` costs seconds)."""
    root = tmp_path_factory.mktemp("workspaces") / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    (root / "make.py").write_text(STAGE, encoding="utf-8")
    (root / "dvc.yaml").write_text(DVC_YAML, encoding="utf-8")
    (root / "params.yaml").write_text("size: 10\n", encoding="utf-8")
    git_commit_all(root)
    return root


@pytest.fixture
def project(committed_project: Path, tmp_path: Path) -> Path:
    """A copy of the committed project of this test's own."""
    return Path(shutil.copytree(committed_project, tmp_path / "project", symlinks=True))


def head(root: Path) -> str:
    return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=root, text=True).strip()


def files_of(root: Path) -> dict[str, bytes]:
    """Every file of the checkout (not .git, DVC's cache or tmp) with its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
        and not str(path.relative_to(root)).startswith((".git", ".dvc/tmp", ".dvc/cache"))
    }


def md5_path(path: Path) -> str:
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    return f"{digest[:2]}/{digest[2:]}"


def links_to(path: Path, cached: Path) -> bool:
    """A hardlink (the same inode), or where the file system has reflinks, a clone: both
    mean no second copy; only a plain copy (another inode, where reflinks are impossible)
    fails."""
    if path.stat().st_ino == cached.stat().st_ino:
        return True
    filesystem = subprocess.check_output(["stat", "-f", "-c", "%T", str(path)], text=True)
    return filesystem.strip() in {"xfs", "btrfs"}


def test_an_airflow_run_id_becomes_a_git_ref_safe_experiment_name() -> None:
    name = experiment_name("retrain_translation", "manual__2026-12-05T10:00:00.123+00:00")
    assert name == "retrain_translation-manual__2026-12-05T10-00-00.123-00-00"
    assert experiment_name("sweep", "scheduled__a..b~c^d") == "sweep-scheduled__a.b-c-d"
    with pytest.raises(ConfigError, match="not a workspace/experiment name"):
        open_workspace(Path("/nonexistent"), "../escape", "0" * 40, "")


def test_a_run_works_in_its_own_worktree_and_saves_an_experiment_the_project_lists(
    project: Path,
) -> None:
    before = files_of(project)
    workspace = open_workspace(project, "run-1", head(project), "size: 30\n")
    assert workspace.path == project / RUNS_DIR / "run-1"
    assert (workspace.path / "params.yaml").read_text("utf-8") == "size: 30\n"
    assert head(workspace.path) == head(project)
    local = (workspace.path / ".dvc" / "config.local").read_text("utf-8")
    assert f"dir = {project / '.dvc' / 'cache'}" in local
    assert 'type = "reflink,hardlink,copy"' in local

    env = stage_environment(workspace, {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"})
    reproduce(workspace, ["make"], env, single_item=True)
    rev = save_experiment(workspace, env)
    cached = project / ".dvc/cache/files/md5" / md5_path(workspace.path / "out.bin")
    assert cached.is_file()  # the output went to the project's cache ...
    assert links_to(workspace.path / "out.bin", cached)  # ... and the workspace links to it

    assert files_of(project) == before  # nothing of the run in the checkout
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    [experiment] = [e for baseline in shown for e in baseline.get("experiments") or []]
    [saved] = experiment["revs"]
    assert (saved["name"], saved["rev"]) == ("run-1", rev)
    assert saved["data"]["params"]["params.yaml"]["data"] == {"size": 30}
    assert saved["data"]["metrics"]["metrics.json"]["data"] == {"size": 30}

    dvc(project, "exp", "apply", "run-1")  # the run's output into the checkout, from the cache
    assert (project / "out.bin").read_text("utf-8") == "x" * 30


def test_a_task_finds_its_runs_workspace_and_a_different_run_is_refused(project: Path) -> None:
    first = open_workspace(project, "run-1", head(project), "size: 30\n")
    (first.path / "scratch").write_text("a retry finds what the first try left", "utf-8")
    again = open_workspace(project, "run-1", head(project), "size: 30\n")
    assert (again.path / "scratch").is_file()
    with pytest.raises(ConfigError, match="holds another commit or other params than the run"):
        open_workspace(project, "run-1", head(project), "size: 31\n")


def test_a_commit_this_checkout_lacks_is_refused_and_nothing_is_made(project: Path) -> None:
    with pytest.raises(ConfigError, match="does not have commit ffffffffffff, where the run"):
        open_workspace(project, "run-1", "f" * 40, "size: 30\n")
    assert not Workspace(project, "run-1").path.exists()


def test_a_workspace_killed_half_made_is_made_again(project: Path) -> None:
    half = Workspace(project, "run-1").path
    half.mkdir(parents=True)
    (half / "params.yaml").write_text("size: 99\n", encoding="utf-8")  # no marker: unfinished
    workspace = open_workspace(project, "run-1", head(project), "size: 30\n")
    assert (workspace.path / "params.yaml").read_text("utf-8") == "size: 30\n"
    assert workspace.marker.is_file()


def test_a_saved_run_is_removed_a_failed_one_kept_until_it_is_old(project: Path) -> None:
    commit = head(project)
    saved, failed = (open_workspace(project, name, commit, "size: 1\n") for name in ("a", "b"))
    assert close_run(project, "a", saved=True, keep_days=7) == f"{saved.path}: removed"
    assert close_run(project, "b", saved=False, keep_days=7) == (
        f"{failed.path}: kept for inspection (the run did not finish); removed after 7 days "
        "(orchestration.keep_failed_days)"
    )
    assert not saved.path.exists() and failed.path.is_dir()
    assert prune_workspaces(project, keep_days=7) == []
    eight_days_ago = time.time() - 8 * 86400
    os.utime(failed.path / MARKER, (eight_days_ago, eight_days_ago))
    assert prune_workspaces(project, keep_days=7) == ["b"]
    assert not failed.path.exists()
    worktrees = subprocess.check_output(["git", "worktree", "list"], cwd=project, text=True)
    assert len(worktrees.splitlines()) == 1
