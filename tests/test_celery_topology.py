"""The production topology for real, without Docker: Airflow 3 with CeleryExecutor.

A fresh PostgreSQL metadata DB (also Celery's result backend), Redis as the broker, api-server,
scheduler and dag-processor as separate processes, and `airflow celery worker` processes that
run the tasks; the register stage talks to an MLflow server backed by PostgreSQL. Every process
is real and listens on 127.0.0.1 only (tests/celery_harness.py, tests/mlflow_server.py).

1. A run of retrain_translation on a tiny corpus goes end to end through the worker and
   registers a version in MLflow.
2. The worker dies (SIGKILL of its whole process tree) in the middle of the train task; a new
   worker is started, the scheduler notices the missing heartbeats and the task is retried on
   the new worker, resuming from the last epoch's checkpoint; the run completes with exactly one
   new registered version and consistent outputs.

The two tests share one stack (starting it costs minutes on a loaded 2-core machine); the second
does not depend on the first having run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration import STAGES
from pipeline.tracking import EXPERIMENT_NAME
from tests.airflow_harness import DAG_ID, make_project
from tests.celery_harness import (
    CeleryAirflow,
    celery_airflow,
    celery_task_results,
    executed_by,
    running,
    task_instances,
    wait_for,
)
from tests.conftest import write_tiny_corpus
from tests.mlflow_server import MlflowServer
from tests.postgres import postgres_database
from tests.run_outputs import (
    dvc_changed_outs,
    history_epochs,
    leftover_temp_files,
    recorded_epochs,
)

pytestmark = pytest.mark.slow

MODEL_NAME = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1200
KILL_RUN_EPOCHS = 30  # about 1-2 s an epoch on the tiny corpus: a window to kill in
# Early stopping off (patience > epochs), so the killed run trains all its epochs; no schedule,
# so the scheduler starts no run of its own; short retry delays.
PROJECT_OVERRIDES: dict[str, Any] = {
    "train": {"patience": 1000},
    "orchestration": {"schedule": "none", "retry_delay_s": 2, "max_retry_delay_s": 10},
}
# What a run with the default (auto) promotion policy runs; the approval branch is skipped.
EXECUTED_TASKS = {"apply_run_params", *STAGES, "choose_promotion", "restore_params"}
SKIPPED_TASKS = {"approve_promotion", "promote_challenger"}


@dataclass
class Topology:
    stack: CeleryAirflow
    project: Path
    mlflow: MlflowServer


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("celery_topology")
    corpus = write_tiny_corpus(root / "corpus")
    project = make_project(root / "project", corpus, PROJECT_OVERRIDES)
    with postgres_database() as mlflow_db:
        mlflow = MlflowServer(mlflow_db, root / "mlartifacts", root / "mlflow.log").start()
        try:
            extra_env = {"MLFLOW_TRACKING_URI": mlflow.url}
            with celery_airflow(root / "airflow", project, extra_env) as stack:
                api = stack.api()
                with stack.logs_on_failure():
                    api.wait_for_dag(timeout_s=300)
                    api.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
                yield Topology(stack, project, mlflow)
        finally:
            mlflow.stop()


def versions_of_run(mlflow_url: str, run_id: str | None = None) -> list[str]:
    """Version numbers of the model (those a given Airflow run registered, when given)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    found = client.search_model_versions(f"name = '{MODEL_NAME}'")
    chosen = [v for v in found if run_id is None or v.tags.get("airflow.dag_run_id") == run_id]
    return sorted((str(v.version) for v in chosen), key=int)


def training_runs(mlflow_url: str) -> list[str]:
    """Ids of the MLflow runs the train stage started (tag stage=train)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return []
    found = client.search_runs([experiment.experiment_id], "tags.stage = 'train'")
    return sorted(run.info.run_id for run in found)


def settled_results(stack: CeleryAirflow) -> dict[str, int] | None:
    """Celery's stored results by status, once no task is still PENDING or STARTED."""
    results = celery_task_results(stack)
    return None if {"PENDING", "STARTED"} & set(results) else results


def test_a_run_goes_end_to_end_through_the_celery_worker(topology: Topology) -> None:
    stack, project = topology.stack, topology.project
    with stack.logs_on_failure():
        run_id = stack.api().trigger({})
        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        states = {task: ti["state"] for task, ti in instances.items()}
        assert state == "success", states
        assert states == {
            **{task: "success" for task in EXECUTED_TASKS},
            **{task: "skipped" for task in SKIPPED_TASKS},
        }
        # The worker process, not the scheduler, ran every task: its log lists each one once.
        executed = executed_by(stack.worker().log_text(), run_id)
        assert executed == {task: [1] for task in EXECUTED_TASKS}
        assert {instances[task]["queue"] for task in EXECUTED_TASKS} == {"default"}
        # ... and Celery stored one successful result per task in PostgreSQL (the last one
        # lands a moment after Airflow marks the run done).
        results = wait_for(lambda: settled_results(stack), 120, "Celery results stored", stack)
        assert results == {"SUCCESS": len(EXECUTED_TASKS)}
        registered = versions_of_run(topology.mlflow.url, run_id)
        assert len(registered) == 1
        registration = json.loads((project / "reports" / "registration.json").read_text("utf-8"))
        assert registration["version"] == registered[0]
        assert registration["tracking_uri"] == topology.mlflow.url
        assert registration["model_name"] == MODEL_NAME


def test_a_train_task_on_a_killed_worker_is_retried_on_a_new_worker(topology: Topology) -> None:
    stack, project = topology.stack, topology.project
    with stack.logs_on_failure():
        params_before = (project / "params.yaml").read_bytes()
        versions_before = versions_of_run(topology.mlflow.url)
        train_runs_before = training_runs(topology.mlflow.url)
        run_id = stack.api().trigger({"epochs": KILL_RUN_EPOCHS})

        def train_state() -> str | None:
            return task_instances(stack, run_id).get("train", {}).get("state")

        wait_for(lambda: train_state() == "running", RUN_TIMEOUT_S, "train running", stack)
        # Kill the moment epoch 2's history row lands: Keras is then writing that epoch's
        # backup, the most fragile point for a resume (a half-written weights file).
        wait_for(lambda: recorded_epochs(project) >= 2, 600, "2 epochs", stack, interval_s=0.05)
        doomed = stack.worker()
        killed = doomed.kill()
        assert len(killed) >= 5  # worker, pool process, task supervisor, runner, bash, dvc ...
        assert running(killed) == []
        epochs_at_kill = recorded_epochs(project)
        assert 2 <= epochs_at_kill < KILL_RUN_EPOCHS

        stack.start_worker()
        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        assert state == "success", {task: ti["state"] for task, ti in instances.items()}
        assert instances["train"]["try_number"] == 2

        # The scheduler failed try 1 for its missing heartbeats; the new worker ran try 2 ...
        scheduler_log = stack.components["scheduler"].log_text()
        assert "Detected a task instance without a heartbeat" in scheduler_log
        assert executed_by(doomed.log_text(), run_id).get("train") == [1]
        after_kill = executed_by(stack.worker().log_text(), run_id)
        assert after_kill["train"] == [2]
        assert {"evaluate", "register", "restore_params"} <= set(after_kill)
        # ... which resumed from the killed try's checkpoint instead of starting over.
        retry_log = stack.api().task_log(run_id, "train", try_number=2)
        resumed = re.search(r"resumed from the checkpoint of epoch (\d+);", retry_log)
        assert resumed, retry_log[-3000:]
        # The history row of an epoch is stored just before its Keras backup: one may lead.
        assert epochs_at_kill - 1 <= int(resumed.group(1)) <= epochs_at_kill
        assert "continuing MLflow run" in retry_log
        assert history_epochs(project) == list(range(1, KILL_RUN_EPOCHS + 1))
        assert not (project / "models" / "checkpoints").exists()

        # Exactly one new version, from this run; outputs match dvc.lock; params.yaml restored.
        registered = versions_of_run(topology.mlflow.url, run_id)
        assert len(registered) == 1
        train_run = json.loads((project / "reports" / "train" / "run.json").read_text("utf-8"))
        assert training_runs(topology.mlflow.url) == sorted(
            [*train_runs_before, train_run["run_id"]]
        )
        assert versions_of_run(topology.mlflow.url) == [*versions_before, registered[0]]
        registration = json.loads((project / "reports" / "registration.json").read_text("utf-8"))
        assert registration["version"] == registered[0]
        metrics = json.loads((project / "reports" / "train" / "metrics.json").read_text("utf-8"))
        assert metrics["epochs"] == KILL_RUN_EPOCHS
        assert dvc_changed_outs(project) == {}
        assert leftover_temp_files(project) == []
        assert (project / "params.yaml").read_bytes() == params_before
