"""Who holds params.yaml: the DAG run whose overrides are in it, from apply to restore.

A run's params live in params.yaml from its `apply_run_params` task to its `restore_params`
teardown: across tasks, processes and Celery workers, so no process lives long enough to hold
an OS lock for it. The lock is therefore a record, `.dvc/tmp/airflow/params.owner.json`, that
names the owning DAG run. Reading and changing it (and params.yaml with it) happens under an
fcntl.flock of `params.lock` beside it, so two runs cannot both find it free, and the kernel
drops that flock if the process dies. A run that finds the record of a run Airflow says has
finished takes over (that run died before its teardown); every `mt` command refuses to work
while another run holds it, naming the run (`refuse_if_held_by_another_run`).

`mt params-lock status | release RUN_ID` shows the holder, or frees the lock of
a run that is dead (its overrides are dropped from params.yaml first).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.errors import ConfigError
from pipeline.paths import ProjectPaths, project_paths


@dataclass(frozen=True)
class RunRef:
    """One Airflow DAG run."""

    dag_id: str
    run_id: str

    def __str__(self) -> str:
        return f"DAG run {self.run_id!r} of {self.dag_id}"

    @classmethod
    def from_airflow_env(cls) -> RunRef | None:
        """The run this process belongs to: Airflow exports these to every task (and `dvc`)."""
        dag_id, run_id = (
            os.environ.get("AIRFLOW_CTX_DAG_ID"),
            os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
        )
        return cls(dag_id, run_id) if dag_id and run_id else None


class RunState(StrEnum):
    """What Airflow says about the run that holds the lock."""

    ACTIVE = "active"  # queued or running
    FINISHED = "finished"  # success or failed: it cannot restore any more
    UNKNOWN = "unknown"  # not in this Airflow's database


@dataclass(frozen=True)
class LockOwner:
    run: RunRef
    since: str
    host: str

    def __str__(self) -> str:
        return f"{self.run} (since {self.since}, on {self.host})"


class ParamsHeld(ConfigError):
    """params.yaml carries another DAG run's overrides; this command must not use it."""


class ParamsLock:
    """The owner record and the flock that guards it (and every write of params.yaml)."""

    def __init__(self, paths: ProjectPaths) -> None:
        folder = paths.root / ".dvc" / "tmp" / "airflow"
        self.params = paths.params
        self.mutex_file = folder / "params.lock"
        self.record_file = folder / "params.owner.json"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One apply, restore or release at a time, in every process on the project."""
        self.mutex_file.parent.mkdir(parents=True, exist_ok=True)
        with self.mutex_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # closing the file (or dying) releases it
            yield

    def owner(self) -> LockOwner | None:
        try:
            payload: Any = json.loads(self.record_file.read_text(encoding="utf-8"))
            run = RunRef(payload["dag_id"], payload["run_id"])
            return LockOwner(run, payload["since"], payload["host"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{self.record_file}: not a lock record written by this pipeline; check that no "
                "DAG run is using params.yaml, then delete the file"
            ) from None

    def take(self, run: RunRef) -> LockOwner:
        """Record `run` as the owner; the caller holds `exclusive()`."""
        since = datetime.now(UTC).isoformat(timespec="seconds")
        owner = LockOwner(run, since, socket.gethostname())
        record = {"dag_id": run.dag_id, "run_id": run.run_id, "since": since, "host": owner.host}
        atomic_write_json(self.record_file, record)
        return owner

    def release(self) -> None:
        self.record_file.unlink(missing_ok=True)


def held_message(paths: ProjectPaths, owner: LockOwner, what_to_do: str) -> str:
    """One line: who holds params.yaml, and what to do about it."""
    return f"{paths.params}: held by {owner}, whose run params are in it; {what_to_do}"


def refuse_if_held_by_another_run(paths: ProjectPaths) -> None:
    """What an `mt` command does before it reads the project's params."""
    owner = ParamsLock(paths).owner()
    if owner is None or owner.run == RunRef.from_airflow_env():
        return
    raise ParamsHeld(
        held_message(
            paths,
            owner,
            "wait until that run's restore_params task has run (if the run is dead: "
            f"`mt params-lock release {owner.run.run_id}`)",
        )
    )


def main(argv: list[str] | None = None) -> int:
    """`mt params-lock status | release RUN_ID` in the project root."""
    args = sys.argv[1:] if argv is None else argv
    paths = project_paths()
    lock = ParamsLock(paths)
    if args == ["status"]:
        owner = lock.owner()
        print(f"{paths.params}: held by {owner}" if owner else f"{paths.params}: free")
        return 0
    if len(args) == 2 and args[0] == "release":
        from pipeline.orchestration import release_dead_run

        print(release_dead_run(paths.root, args[1]))
        return 0
    print("usage: mt params-lock status | release RUN_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as error:
        print(f"params_lock: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
