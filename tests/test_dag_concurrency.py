"""Runs that meet each other in a real Airflow (issue 17: two runs at once, a hand-run during one).

One `airflow standalone` for the module (fresh PostgreSQL metadata database, REST API v2), on a
tiny project. Faults injected for real:
- two runs triggered through the REST API at the same moment: one runs, the other waits and
  starts only after the first has restored params.yaml; meanwhile a hand-run `mt fetch` is
  refused in one line naming the run, and a hand-run `dvc repro` during its training is refused
  by DVC's lock on the train outputs. params.yaml ends byte-identical, the outputs match dvc.lock;
- params.yaml not writable when a run's restore comes (`chattr +i`): the teardown fails, the
  finished run keeps the lock and its overrides; hand-runs are refused naming it, and once the
  file is writable the next run finds the holder finished (asked through Airflow's Task SDK),
  restores its leftover and takes over;
- an asset event whose `extra` breaks the Trigger form's rules fails the run at its first task.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration import STAGES
from pipeline.params_lock import LockOwner, ParamsLock
from pipeline.paths import project_paths
from tests.airflow_harness import (
    DAG_ID,
    VENV_BIN,
    AirflowServer,
    airflow_standalone,
    make_project,
    registered_versions,
)
from tests.conftest import write_tiny_corpus
from tests.postgres import postgres_database
from tests.test_params_lock import immutable

pytestmark = pytest.mark.slow

MODEL = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1500
# Early stopping off and 15 epochs (1-2 s each on the tiny corpus): a window of 15-30 s, after
# TensorFlow's start-up, in which the train stage's `dvc repro` holds DVC's lock on the train
# outputs (a hand-run `dvc repro` reaches that lock within ~2 s).
LONG_RUN = {"epochs": 15}
PROJECT_OVERRIDES = {"orchestration": {"schedule": "none"}, "train": {"patience": 1000}}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowServer, Path]]:
    """(server, project) with the DAG parsed and unpaused."""
    scratch = tmp_path_factory.mktemp("concurrency")
    corpus = write_tiny_corpus(scratch / "corpus")
    project = make_project(scratch / "project", corpus, PROJECT_OVERRIDES)
    home = scratch / "airflow_home"
    home.mkdir()
    # Two runs at once on a loaded 2-core machine: give the task supervisor's calls to the
    # execution API more than the default 5 s, or a slow api-server fails a task before it starts.
    (home / "airflow.cfg").write_text("[workers]\nexecution_api_timeout = 60\n", encoding="utf-8")
    with (
        postgres_database() as db_url,
        airflow_standalone(home, project, db_url) as server,
    ):
        server.wait_for_dag()
        server.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        yield server, project


def hand_run(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """What a person types in the project folder: no Airflow context in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "MT_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return subprocess.run(
        list(command), cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def holder(project: Path) -> LockOwner | None:
    return ParamsLock(project_paths(project)).owner()


def wait_for(what: str, check: Any, timeout_s: float = RUN_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")


def train_outputs_locked_by_dvc(project: Path) -> bool:
    """True while a `dvc repro` of the train stage holds DVC's write lock on the model."""
    try:
        rwlock = json.loads((project / ".dvc" / "tmp" / "rwlock").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return any(path.endswith("models/seq2seq.keras") for path in rwlock.get("write", {}))


def task_times(server: AirflowServer, run_id: str) -> dict[str, tuple[datetime, datetime]]:
    found = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    return {
        ti["task_id"]: (
            datetime.fromisoformat(ti["start_date"]),
            datetime.fromisoformat(ti["end_date"]),
        )
        for ti in found["task_instances"]
        if ti["start_date"] and ti["end_date"]
    }


def task_log(server: AirflowServer, run_id: str, task_id: str) -> str:
    """Every string of a task's structured log, the exception's message included."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1"
    content = server.api("GET", path, params={"full_content": "true"})["content"]
    return "\n".join(strings_in(content))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def held_line(project: Path, owner: LockOwner) -> str:
    return (
        f"fetch failed: {project / 'params.yaml'}: held by {owner}, whose run params are in it; "
        "wait until that run's restore_params task has run (if the run is dead: "
        f"`mt params-lock release {owner.run.run_id}`)"
    )


def assert_refused_in_one_line(done: subprocess.CompletedProcess[str], line: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(line)
    assert "Traceback" not in done.stderr


def test_two_runs_triggered_at_once_take_turns_and_hand_runs_are_refused(
    live: tuple[AirflowServer, Path],
) -> None:
    server, project = live
    params_before = (project / "params.yaml").read_bytes()
    at_once = threading.Barrier(2)
    run_ids: list[str] = ["", ""]

    def trigger(slot: int) -> None:
        at_once.wait()
        run_ids[slot] = server.trigger(LONG_RUN)

    threads = [threading.Thread(target=trigger, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    owner = wait_for("a run holds params.yaml", lambda: holder(project))
    first = owner.run.run_id
    [second] = [run_id for run_id in run_ids if run_id != first]
    assert server.api("GET", f"/dags/{DAG_ID}/dagRuns/{second}")["state"] == "queued"
    assert_refused_in_one_line(hand_run(project, "mt", "fetch"), held_line(project, owner))

    wait_for("the first run's training", lambda: train_outputs_locked_by_dvc(project))
    applied = (project / "params.yaml").read_bytes()
    repro = hand_run(project, "dvc", "repro")
    assert repro.returncode != 0
    assert "is busy, it is being blocked by" in repro.stderr
    assert (project / "params.yaml").read_bytes() == applied

    assert server.wait_for_run(first, RUN_TIMEOUT_S) == "success"
    assert server.wait_for_run(second, RUN_TIMEOUT_S) == "success"
    first_restored = task_times(server, first)["restore_params"][1]
    second_applied = task_times(server, second)["apply_run_params"][0]
    assert second_applied >= first_restored
    assert (project / "params.yaml").read_bytes() == params_before
    assert holder(project) is None
    assert registered_versions(project, MODEL) == ["1"]  # the second run found nothing to redo
    status = hand_run(project, "dvc", "status", "--json")
    assert json.loads(status.stdout) == {
        "train": [{"changed deps": {"params.yaml": {"train": "modified"}}}]
    }  # outputs as dvc.lock says; only the run's override (15 epochs) is gone from params.yaml


def test_a_run_left_holding_params_yaml_is_recovered_by_the_next_run(
    live: tuple[AirflowServer, Path],
) -> None:
    """params.yaml cannot be written when the run's restore comes (immutable, as on a read-only
    mount): the restore fails and the lock stays with the finished run. Once it is writable
    again, the next run asks Airflow, finds the holder finished, restores it and takes over."""
    server, project = live
    params_before = (project / "params.yaml").read_bytes()
    stuck = server.trigger(LONG_RUN)
    owner = wait_for("the run holds params.yaml", lambda: holder(project))
    assert owner.run.run_id == stuck
    with immutable(project / "params.yaml"):
        # A failed teardown does not fail the run (Airflow's rule): it ends as a success.
        assert server.wait_for_run(stuck, RUN_TIMEOUT_S) == "success"
        assert server.task_states(stuck)["restore_params"] == "failed"
        assert (
            f"{project / 'params.yaml'}: cannot be written (Operation not permitted); the run's "
            "overrides are still in it" in task_log(server, stuck, "restore_params")
        )
        assert holder(project) == owner
        assert b"epochs: 15" in (project / "params.yaml").read_bytes()
        assert_refused_in_one_line(hand_run(project, "mt", "fetch"), held_line(project, owner))

    recovering = server.trigger(LONG_RUN)
    assert server.wait_for_run(recovering, RUN_TIMEOUT_S) == "success"
    log = task_log(server, recovering, "apply_run_params")
    assert f"{owner} finished without its restore_params task; restoring for it" in log
    assert (project / "params.yaml").read_bytes() == params_before
    assert holder(project) is None


def test_an_asset_event_outside_the_form_rules_fails_the_first_task(
    live: tuple[AirflowServer, Path],
) -> None:
    server, project = live
    params_before = (project / "params.yaml").read_bytes()
    versions_before = registered_versions(project, MODEL)

    server.emit_asset_event("mt_raw_corpus", {"epochs": 10_000})
    run_id = server.wait_for_new_run("asset_triggered", timeout_s=180)
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"

    states = server.task_states(run_id)
    assert states["apply_run_params"] == "failed"
    assert {states[stage] for stage in STAGES} == {"upstream_failed"}
    assert (
        "asset event extra `epochs` is 10000: 10000 is greater than the maximum of 500 (the rule "
        "of the Trigger form's `epochs`)" in task_log(server, run_id, "apply_run_params")
    )
    assert (project / "params.yaml").read_bytes() == params_before
    assert holder(project) is None
    assert registered_versions(project, MODEL) == versions_before
