"""The worker's own checkout: which commit it is at, and params.yaml held for one stage."""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ConfigError, PipelineError
from pipeline.params_backup import ParamsBackup
from pipeline.params_lock import ParamsHeld, ParamsLock, RunRef, held_message
from pipeline.paths import project_paths

log = logging.getLogger(__name__)


def head_commit(root: Path) -> str:
    """The checkout's git commit, or "" when it is not a git checkout (nothing to compare)."""
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        log.warning("%s is not a git checkout: the run's code version is not checked", root)
        return ""
    return done.stdout.strip()


def require_commit(root: Path, expected: str) -> None:
    """Refuse to run a stage on code other than the run's (a worker not yet updated)."""
    actual = head_commit(root)
    if expected and actual and actual != expected:
        raise ConfigError(
            f"{root}: this worker's checkout is at commit {actual[:12]}, the run started at "
            f"{expected[:12]}; update the checkout (git fetch && git checkout {expected[:12]}) "
            "or restart the run once every worker runs the same commit"
        )


@contextlib.contextmanager
def params_held(root: Path, run: RunRef, params_text: str) -> Iterator[None]:
    """params.yaml is the run's text while the block runs, then the checkout's own again.

    On one host the run holds params.yaml from its first task to its last; here each stage
    task holds its worker's copy only while the stage runs, so a task killed with its host
    leaves no other checkout held. A copy left held by this same run (its earlier try died on
    this host) is restored first; one held by another run is refused, naming it.
    """
    paths = project_paths(root)
    lock, backup = ParamsLock(paths), ParamsBackup(paths)
    with lock.exclusive():
        owner = lock.owner()
        if owner is not None and owner.run != run:
            advice = f"if that run is dead: `mt params-lock release {owner.run.run_id}`"
            raise ParamsHeld(held_message(paths, owner, advice))
        if backup.original.is_file():
            log.warning("an earlier try of this run left params.yaml held: %s", backup.restore())
        lock.take(run)
        if params_text != current_params(root):
            backup.save(params_text)
    try:
        yield
    finally:
        with lock.exclusive():
            log.info("%s", backup.restore())
            lock.release()


def release_if_left_by(root: Path, run: RunRef | None) -> str | None:
    """A try of `run` killed on this host left params.yaml held: restore it and free it
    (what the run's sync task does for its checkout). None when there was nothing to do."""
    paths = project_paths(root)
    lock = ParamsLock(paths)
    with lock.exclusive():
        owner = lock.owner()
        if run is None or owner is None or owner.run != run:
            return None
        outcome = ParamsBackup(paths).restore()
        lock.release()
    log.warning("a killed try of this run had left params.yaml held here: %s", outcome)
    return outcome


def current_params(root: Path) -> str:
    path = project_paths(root).params
    if not path.is_file():
        raise PipelineError(f"{path}: not found; is {root} the project checkout?")
    return path.read_text(encoding="utf-8")
