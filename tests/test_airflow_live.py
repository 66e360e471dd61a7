"""A real Airflow (`airflow standalone`, PostgreSQL metadata DB) runs the DAG on a tiny corpus.

One Airflow for the module, on a free port of 127.0.0.1, with a fresh PostgreSQL database that
is dropped afterwards. Runs are triggered through the REST API v2 with a JWT from /auth/token:
- new raw data announced as an asset event (its `extra` names the corpus) starts a run; the
  corpus is corrupted, so validate_raw fails with the stage's error in its task log, nothing
  after it runs, the registry and the project's params.yaml are untouched, and the failed
  run's workspace is kept for inspection;
- a run with params (1 epoch, manual promotion) registers a version, waits for a human in
  approve_promotion, and the approval (REST) makes that version @champion.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration.tasks import STAGES
from pipeline.workspaces import RUNS_DIR, experiment_name
from tests.airflow_harness import (
    DAG_ID,
    AirflowServer,
    airflow_standalone,
    make_project,
    registered_versions,
)
from tests.conftest import tiny_pairs, write_corpus, write_tiny_corpus
from tests.postgres import postgres_database

pytestmark = pytest.mark.slow

MODEL = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowServer, Path, Path]]:
    """(server, project, scratch dir) with the DAG parsed and unpaused."""
    scratch = tmp_path_factory.mktemp("live")
    corpus = write_tiny_corpus(scratch / "corpus")
    # No schedule: unpausing a weekly DAG would start the latest missed interval's run at once.
    settings = {"schedule": "none", "data_root": str(scratch)}  # where the new corpora go
    project = make_project(scratch / "project", corpus, {"orchestration": settings})
    home = scratch / "airflow_home"
    home.mkdir()
    # On a loaded 2-core machine the task supervisor's calls to the execution API can take more
    # than the default 5 s; a timeout there fails a task that did nothing wrong.
    (home / "airflow.cfg").write_text("[workers]\nexecution_api_timeout = 60\n", encoding="utf-8")
    with (
        postgres_database() as db_url,
        airflow_standalone(home, project, db_url) as server,
    ):
        server.wait_for_dag()
        server.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        yield server, project, scratch


def corrupted_corpus(directory: Path) -> Path:
    """Ten train targets of 120 tokens: the raw suite's max_tokens rule (80) must stop it."""
    pairs = tiny_pairs(60)
    pairs[5:15] = [(source, " ".join(["Wort"] * 120)) for source, _ in pairs[5:15]]
    splits = {
        "train": pairs,
        "val": tiny_pairs(10, offset=100),
        "test_2016_flickr": tiny_pairs(10, offset=200),
    }
    return write_corpus(directory, splits)


def test_bad_new_data_stops_the_run_and_leaves_the_registry_alone(
    live: tuple[AirflowServer, Path, Path],
) -> None:
    server, project, scratch = live
    params_before = (project / "params.yaml").read_bytes()
    versions_before = registered_versions(project, MODEL)
    bad = corrupted_corpus(scratch / "bad_corpus")

    server.emit_asset_event("mt_raw_corpus", {"data_source": "dir", "data_path": str(bad)})
    run_id = server.wait_for_new_run("asset_triggered", timeout_s=180)
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"

    states = server.task_states(run_id)
    assert states["start_run"] == "success"
    assert states["fetch"] == "success"
    assert states["validate_raw"] == "failed"
    assert {states[stage] for stage in STAGES[2:]} == {"upstream_failed"}
    assert states["close_run_default"] == "success"
    assert (project / RUNS_DIR / experiment_name(DAG_ID, run_id) / "data" / "raw").is_dir()
    assert f'"path": "{bad}"' in server.task_log(run_id, "start_run")
    log = server.task_log(run_id, "validate_raw")
    assert "validate failed: suite" in log
    assert "rule target_max_tokens (10 of 60 rows break" in log
    assert registered_versions(project, MODEL) == versions_before
    assert (project / "params.yaml").read_bytes() == params_before


def test_a_triggered_run_registers_and_a_human_promotes(
    live: tuple[AirflowServer, Path, Path],
) -> None:
    server, project, _ = live
    params_before = (project / "params.yaml").read_bytes()

    run_id = server.trigger({"epochs": 1, "promotion_policy": "manual"})
    approval = wait_for_approval_request(server, run_id)
    assert approval["subject"] == f"Promote {MODEL} version 1?"
    assert "| test_2016_flickr |" in approval["body"]
    assert "| val |" not in approval["body"]  # the approver sees the gate's split, not val
    assert "Gate: **awaiting_approval**" in approval["body"]
    assert registered_versions(project, MODEL) == ["1"]
    assert (project / "params.yaml").read_bytes() == params_before  # runs never write it

    wait_until_the_deferral_is_settled(server, run_id)
    approve = {"chosen_options": ["Approve"], "params_input": {}}
    server.api("PATCH", hitl_path(run_id), json=approve)
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "success"
    states = server.task_states(run_id)
    assert {states[stage] for stage in STAGES} == {"success"}
    assert states["approve_promotion"] == states["promote_challenger"] == "success"
    assert "Running stage 'train':" in server.task_log(run_id, "train")
    assert champion(project) == "1"


def hitl_path(run_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"


def wait_for_approval_request(server: AirflowServer, run_id: str) -> dict[str, Any]:
    """The approval task's request once it waits for a human (fails if the run ends first)."""
    import time

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        states = server.task_states(run_id)
        if states.get("approve_promotion") == "awaiting_input":
            detail: dict[str, Any] = server.api("GET", hitl_path(run_id))
            return detail
        run_state = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        assert run_state in {"queued", "running"}, f"run ended ({run_state}): {states}"
        time.sleep(5)
    raise TimeoutError(f"approve_promotion did not wait for input within {RUN_TIMEOUT_S}s")


def wait_until_the_deferral_is_settled(server: AirflowServer, run_id: str) -> None:
    """Wait for the scheduler to drain the exit of the worker that deferred approve_promotion.

    Airflow 3.3 fails a deferred task that resumes before the scheduler has processed its
    worker's defer-exit: the stale 'success' meets a queued task instance, "state mismatch"
    (apache/airflow#67287, #72716; docs/airflow.md, *Manual approval*). A person answers in
    seconds; this test answers as soon as the request exists, so it first waits for the
    scheduler's "TaskInstance Finished" line of that exit.
    """
    import time

    marker = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve_promotion, run_id={run_id}"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if marker in server.log_file.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(1)
    raise TimeoutError(f"the scheduler never processed approve_promotion's deferral: {marker}")


def champion(project: Path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return str(client.get_model_version_by_alias(MODEL, "champion").version)
