"""One stage on one worker of a multi-host deployment: pull, reproduce, push, hand on.

1. the checkout must be at the run's commit; params.yaml is the run's text while it runs
2. the earlier stages' dvc.lock entries and carried files are written in; `dvc pull` fetches
   exactly those outputs (and the remote's run-cache) from the DVC remote
3. `dvc repro --single-item --pull <stage>`: DVC skips the stage when its lock entry is up to
   date, or restores its outputs from the run-cache when the same inputs ran anywhere before
4. `dvc push --run-cache <stage>`: its outputs and run-cache entry go to the remote
5. the stage's lock entry and carried files are the task's result for the next task
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.params_lock import RunRef
from pipeline.remote.carried import (
    RunInputs,
    StageResult,
    carried_files,
    load_pipeline,
    lock_entry,
    write_carried_files,
    write_lock_entries,
)
from pipeline.remote.checkout import params_held, release_if_left_by, require_commit
from pipeline.remote.settings import configure_remote, dvc, remote_url

log = logging.getLogger(__name__)


def run_stage(root: Path, stage: str, inputs: RunInputs, run: RunRef) -> StageResult:
    """Reproduce `stage` in this checkout from the run's carried inputs; its result."""
    url = _connected_remote(root)
    require_commit(root, inputs.commit)
    pipeline = load_pipeline(root)
    with params_held(root, run, inputs.params_text):
        _bring_in(root, inputs, list(pipeline["stages"]))
        dvc(root, "--wait-for-lock", "repro", "--single-item", "--pull", stage)
        dvc(root, "push", "--run-cache", stage)
        result = StageResult(stage, lock_entry(root, stage), carried_files(root, stage, pipeline))
    log.info("stage %s: outputs pushed to %s", stage, url)
    return result


def sync_checkout(root: Path, inputs: RunInputs, run: RunRef | None) -> str:
    """Bring this checkout's dvc.lock and outputs to the run's end state (no stage runs),
    after freeing params.yaml if a killed try of this run left it held here."""
    _connected_remote(root)
    require_commit(root, inputs.commit)
    release_if_left_by(root, run)
    _bring_in(root, inputs, list(load_pipeline(root)["stages"]))
    return f"{root}: dvc.lock and outputs of {', '.join(inputs.stages)} as the run left them"


def _connected_remote(root: Path) -> str:
    url = remote_url(root)
    if not url:
        raise ConfigError(
            "no DVC remote on this worker (env MT_DVC_REMOTE or orchestration.dvc_remote): "
            "tasks on several hosts need one"
        )
    configure_remote(root, url)
    return url


def _bring_in(root: Path, inputs: RunInputs, order: list[str]) -> None:
    """The run's earlier outputs into this checkout, and the remote's run-cache entries."""
    _fetch_run_cache(root)
    if not inputs.results:
        return
    write_lock_entries(root, inputs.results, order)
    write_carried_files(root, inputs.results)
    dvc(root, "--wait-for-lock", "pull", "--force", *inputs.stages)


def _fetch_run_cache(root: Path) -> None:
    """What `dvc fetch --run-cache` does first, without fetching any output: the remote's
    run-cache entries (small YAML files), so `repro --pull` can skip a stage that ran with the
    same inputs on another host. Fails first, in one line, when the remote cannot be reached:
    before a stage runs for an hour and then cannot push."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        odb = repo.cloud.get_remote_odb(None)
        try:
            odb.fs.info(odb.path)
        except FileNotFoundError:
            pass  # reachable; nothing pushed there yet
        except Exception as error:  # any transport error (fsspec's differ by protocol)
            raise PipelineError(
                f"DVC remote {remote_url(root)}: unreachable from this worker "
                f"({type(error).__name__}: {error}); nothing ran"
            ) from None
        repo.stage_cache.pull(None)
