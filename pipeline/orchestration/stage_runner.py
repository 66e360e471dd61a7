"""One task of a run in the run's workspace, the same way on one host and on several.

1. the run's workspace on this host (pipeline/workspaces.py): a worktree of this host's checkout
   at the run's commit with the run's params, made by the first task that needs it here
2. several hosts (a DVC remote is set): the earlier stages' dvc.lock entries and carried files
   are written into it, and `dvc pull` fetches exactly those outputs (and the remote's
   run-cache) from the DVC remote
3. `dvc repro --single-item <stage>` in it (`--pull` on several hosts): DVC skips the stage
   when its lock entry is up to date, or restores its outputs from the run-cache when the same
   inputs ran before
4. several hosts: `dvc push --run-cache <stage>`; the stage's lock entry and carried files are
   the task's result for the next task

`save_run` is the run's last step: `dvc exp save` of the workspace as the run's experiment
(on several hosts, after bringing in every stage's outputs, then `dvc exp push` to the git
remote `origin` the worker's checkout was cloned from).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.orchestration.carried import (
    RunInputs,
    StageResult,
    carried_files,
    check_results,
    load_pipeline,
    lock_entry,
    write_carried_files,
    write_lock_entries,
)
from pipeline.orchestration.carried_checks import check_commit, check_params_text
from pipeline.orchestration.remote import configure_remote, dvc, remote_url
from pipeline.programs import program
from pipeline.workspaces import (
    Workspace,
    committed_params,
    open_workspace,
    require_commit,
    run_in,
    save_experiment,
    stage_environment,
)

log = logging.getLogger(__name__)
GIT_REMOTE = "origin"


def run_workspace(root: Path, inputs: RunInputs) -> Workspace:
    """The run's workspace on this host; on several hosts with the outputs of the stages the
    run has done so far, wherever they ran. The inputs come from XCom: checked first
    (pipeline/orchestration/carried_checks.py)."""
    check_commit(inputs.commit)
    require_commit(root, inputs.commit)
    check_params_text(committed_params(root, inputs.commit), inputs.params_text)
    workspace = open_workspace(root, inputs.experiment, inputs.commit, inputs.params_text)
    url = remote_url(root)
    if url:
        configure_remote(workspace.path, url)
        _bring_in(workspace.path, inputs)
    return workspace


def run_stage(root: Path, stage: str, inputs: RunInputs) -> StageResult:
    """Reproduce `stage` in the run's workspace; its result (the next task's input)."""
    workspace = run_workspace(root, inputs)
    several = bool(remote_url(root))
    command = ["dvc", "--wait-for-lock", "repro", "--single-item", *(["--pull"] * several)]
    run_in(workspace, [*command, stage], stage_environment(workspace, os.environ), stage)
    entry = lock_entry(workspace.path, stage)
    if not several:
        return StageResult(stage, entry)
    dvc(workspace.path, "push", "--run-cache", stage)
    log.info("stage %s: outputs pushed to %s", stage, remote_url(root))
    pipeline = load_pipeline(workspace.path)
    return StageResult(stage, entry, carried_files(workspace.path, stage, pipeline))


def save_run(root: Path, inputs: RunInputs) -> dict[str, Any]:
    """The run's workspace saved as its DVC experiment; its name and commit."""
    workspace = run_workspace(root, inputs)
    rev = save_experiment(workspace, stage_environment(workspace, os.environ))
    if remote_url(root) and _has_git_remote(workspace.path):
        dvc(workspace.path, "exp", "push", "--no-cache", GIT_REMOTE, workspace.name)
        log.info("experiment %s pushed to git remote %s", workspace.name, GIT_REMOTE)
    return {"experiment": workspace.name, "rev": rev}


def _has_git_remote(path: Path) -> bool:
    done = subprocess.run(
        [program("git"), "remote", "get-url", GIT_REMOTE],
        cwd=path,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _bring_in(workspace: Path, inputs: RunInputs) -> None:
    """The run's earlier outputs into the workspace, and the remote's run-cache entries."""
    _fetch_run_cache(workspace)
    if not inputs.results:
        return
    pipeline = load_pipeline(workspace)  # the run's commit's dvc.yaml, never XCom's
    check_results(inputs.results, pipeline)
    write_lock_entries(workspace, inputs.results, list(pipeline["stages"]))
    write_carried_files(workspace, inputs.results, pipeline)
    dvc(workspace, "--wait-for-lock", "pull", "--force", *inputs.stages)


def _fetch_run_cache(workspace: Path) -> None:
    """What `dvc fetch --run-cache` does first, without fetching any output: the remote's
    run-cache entries (small YAML files), so `repro --pull` can skip a stage that ran with the
    same inputs on another host. Fails first, in one line, when the remote cannot be reached:
    before a stage runs for an hour and then cannot push."""
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        odb = repo.cloud.get_remote_odb(None)
        try:
            odb.fs.info(odb.path)
        except FileNotFoundError:
            pass  # reachable; nothing pushed there yet
        except Exception as error:  # any transport error (fsspec's differ by protocol)
            raise PipelineError(
                f"DVC remote {remote_url(workspace)}: unreachable from this worker "
                f"({type(error).__name__}: {error}); nothing ran"
            ) from None
        repo.stage_cache.pull(None)
