"""The production topology for real, without Docker: Airflow 3 with CeleryExecutor.

A fresh PostgreSQL metadata DB (also Celery's result backend), a private redis-server as the
broker (tests/redis_server.py, so a test may SIGKILL it), api-server, scheduler and dag-processor
as separate processes, and `airflow celery worker` processes that run the tasks; the register
stage talks to an MLflow server backed by PostgreSQL. Every process is real and listens on
127.0.0.1 only (tests/celery_harness.py, tests/mlflow_server.py).

1. A run of retrain_translation on a tiny corpus goes end to end through the worker and two
   broker outages, and registers a version in MLflow. Redis is SIGKILLed after `train`'s first
   epoch and started again (empty, as a broker that lost its host) one epoch later: `train`
   goes on and the worker reconnects. Then Redis is killed again while `train` still runs and
   stays down until after it ends: what comes next cannot be queued and the run fails; once
   Redis is back, clearing the failed tasks completes it without training again: the failed
   run's workspace was kept (its close tasks could not run either), and the cleared tasks go
   on in it.
2. (A worker SIGKILLed mid-train, its retry resuming on another worker: tests/test_multi_host.py,
   where the other worker is on another host and resumes from the checkpoint mirrored to MLflow.)
3. sweep_translation with two points (1 epoch each): the mapped points fan out over two
   workers, each in its own workspace, each training run a child of the sweep's
   MLflow run; the best by val BLEU is registered through the gate, from its experiment.

What Airflow 3.3 with Celery 5.6 does about the broker, and so what test 1 asserts:
- A running task does not need the broker: its runner reports to the api-server (execution
  API) and Celery stores the result in PostgreSQL. `train` finishes through the outage and
  succeeds on its first try.
- The worker's consumer loses its connection, retries with a growing pause (2 s, 4 s, 6 s ...,
  `broker_connection_max_retries` = 100 tries) and reconnects once Redis is back; the same worker
  runs the next tasks.
- The scheduler cannot queue a task while Redis is down: the publish fails within a second, the
  executor reports the task failed before it ran (`Error sending Celery workload: ...` in the
  scheduler log, `state mismatch` in the task's audit log), so a task without retries fails and
  the run fails at once instead of waiting in `queued`.

The tests share one stack (starting it costs minutes on a loaded 2-core machine); neither
depends on the other having run. (The end-to-end run, the short outage and the long one were
three runs; one run now proves all three, which saves CI two pipeline runs.)
"""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration.tasks import STAGES
from pipeline.tracking import EXPERIMENT_NAME
from pipeline.workspaces import RUNS_DIR, experiment_name, experiment_rev
from tests.airflow_harness import DAG_ID, make_project
from tests.celery_harness import (
    CeleryAirflow,
    all_task_instances,
    celery_airflow,
    celery_task_results,
    executed_by,
    task_instances,
    wait_for,
)
from tests.conftest import write_tiny_corpus
from tests.mlflow_server import MlflowServer
from tests.postgres import postgres_database
from tests.redis_server import RedisServer, private_redis
from tests.run_outputs import recorded_epochs
from tests.test_sweep import commit_data_stages, experiment_revs

pytestmark = pytest.mark.slow

MODEL_NAME = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1200
# Enough epochs (1-2 s each) that `train` still runs after the first outage, the worker's
# reconnection (its retries pause 2, 4, 6 ... s) and the start of the second outage.
OUTAGE_RUN_EPOCHS = 16
# Early stopping off (patience > epochs), so the killed run trains all its epochs; no schedule,
# so the scheduler starts no run of its own; short retry delays.
PROJECT_OVERRIDES: dict[str, Any] = {
    "train": {"patience": 1000},
    "orchestration": {"schedule": "none", "retry_delay_s": 2, "max_retry_delay_s": 10},
}
# What a run with the default (auto) promotion policy runs; the approval branch is skipped.
CLOSE_TASKS = {"close_run_default", "close_run_gpu"}
EXECUTED_TASKS = {"start_run", *STAGES, "choose_promotion", "save_experiment", *CLOSE_TASKS}
SKIPPED_TASKS = {"approve_promotion", "promote_challenger"}
# A run whose evaluate could not be queued: what ran before it, what never started after it.
RAN_BEFORE_EVALUATE = {"start_run", *STAGES[: STAGES.index("evaluate")]}
UNQUEUED_TASKS = {"evaluate", *CLOSE_TASKS}
UNREACHED_TASKS = {
    "register", "choose_promotion", "save_experiment", "approve_promotion", "promote_challenger"
}  # fmt: skip
SWEEP_DAG_ID = "sweep_translation"
# Two points of the tiniest training (one epoch), one per worker; the sweep's name prefixes
# its experiments.
SWEEP_CONF = {"grid": ["train.learning_rate=0.01,0.02", "train.epochs=1"], "name": "grid"}
SWEEP_POINTS = ["grid-1", "grid-2"]
SEND_ERROR = "Error sending Celery workload"
RECONNECTED = "Connected to redis://"


@dataclass
class Topology:
    stack: CeleryAirflow
    project: Path
    mlflow: MlflowServer
    redis: RedisServer


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("celery_topology")
    corpus = write_tiny_corpus(root / "corpus")
    project = make_project(root / "project", corpus, PROJECT_OVERRIDES)
    with postgres_database() as mlflow_db, private_redis(root / "redis") as redis:
        mlflow = MlflowServer(mlflow_db, root / "mlartifacts", root / "mlflow.log").start()
        try:
            extra_env = {"MLFLOW_TRACKING_URI": mlflow.url}
            with celery_airflow(root / "airflow", project, extra_env, redis.url) as stack:
                api = stack.api()
                with stack.logs_on_failure():
                    for dag_id in (DAG_ID, SWEEP_DAG_ID):
                        api.wait_for_dag(dag_id, timeout_s=300)
                        api.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                yield Topology(stack, project, mlflow, redis)
        finally:
            mlflow.stop()


@pytest.fixture
def broker(topology: Topology) -> Topology:
    """The shared stack with Redis up (a test that failed mid-outage may have left it down)."""
    if not topology.redis.alive():
        topology.redis.start()
    return topology


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


def train_state(stack: CeleryAirflow, run_id: str) -> str | None:
    state: str | None = task_instances(stack, run_id).get("train", {}).get("state")
    return state


def run_workspace(broker: Topology, run_id: str) -> Path:
    return broker.project / RUNS_DIR / experiment_name(DAG_ID, run_id)


def kill_redis_during_train(broker: Topology, run_id: str, after_epochs: int) -> int:
    """SIGKILL Redis once the worker's `train` has finished `after_epochs` epochs and still
    runs; the epoch count at the kill."""
    stack, project = broker.stack, run_workspace(broker, run_id)
    wait_for(lambda: train_state(stack, run_id) == "running", RUN_TIMEOUT_S, "train runs", stack)
    wait_for(
        lambda: recorded_epochs(project) >= after_epochs,
        600,
        f"epoch {after_epochs}",
        stack,
        interval_s=0.05,
    )
    broker.redis.kill()
    killed_at = recorded_epochs(project)
    # The checkpoint (and its epoch count) exists only while train runs: it was mid-way.
    assert after_epochs <= killed_at < OUTAGE_RUN_EPOCHS
    return killed_at


def short_outage(broker: Topology, run_id: str, reconnects_before: int) -> int:
    """Redis down for one epoch of `train`, then back until the worker has reconnected; the
    epochs `train` had finished by then."""
    stack, project = broker.stack, run_workspace(broker, run_id)
    killed_at = kill_redis_during_train(broker, run_id, 1)
    wait_for(lambda: recorded_epochs(project) > killed_at, 600, "an epoch", interval_s=0.05)
    broker.redis.start()

    def reconnected() -> bool:
        return stack.worker().log_text().count(RECONNECTED) > reconnects_before

    wait_for(reconnected, 120, "the worker reconnects", stack, interval_s=0.2)
    assert stack.worker().log_text().count(RECONNECTED) == reconnects_before + 1
    return recorded_epochs(project)


def scheduler_log(stack: CeleryAirflow) -> str:
    return stack.components["scheduler"].log_text()


def assert_saved_and_checkout_untouched(
    broker: Topology, run_id: str, params_before: bytes, epochs: int
) -> None:
    """One finished training in the run's experiment; its workspace gone, the project's
    params.yaml and git status as they were."""
    project, name = broker.project, experiment_name(DAG_ID, run_id)
    head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=project, text=True)
    rev = experiment_rev(project, head.strip(), name)
    assert rev is not None
    history = subprocess.check_output(
        ["git", "show", f"{rev}:reports/train/history.csv"], cwd=project, text=True
    )
    assert [int(row["epoch"]) for row in csv.DictReader(history.splitlines())] == list(
        range(1, epochs + 1)
    )
    assert not run_workspace(broker, run_id).exists()
    assert (project / "params.yaml").read_bytes() == params_before
    status = subprocess.check_output(["git", "status", "--porcelain"], cwd=project, text=True)
    assert status == ""


def assert_failure_names_the_broker(broker: Topology, run_id: str) -> None:
    """The scheduler log says why evaluate failed; its audit log says it never ran."""
    log = scheduler_log(broker.stack)
    refused = f"{SEND_ERROR}: Error 111 connecting to 127.0.0.1:{broker.redis.port}."
    key = (
        f"Celery Task ID: TaskInstanceKey(dag_id='{DAG_ID}', task_id='evaluate', run_id='{run_id}'"
    )
    assert f"{refused} Connection refused.\n{key}" in log
    query = {"dag_id": DAG_ID, "run_id": run_id, "task_id": "evaluate", "event": "state mismatch"}
    audit = broker.stack.api().api("GET", "/eventLogs", params=query)["event_logs"]
    assert [entry["try_number"] for entry in audit] == [1]
    never_ran = "finished with state failed, but the task instance's state attribute is queued"
    assert never_ran in audit[0]["extra"]


def assert_unqueued_run_failed(broker: Topology, run_id: str, versions_before: list[str]) -> None:
    """Train succeeded through both outages; evaluate could not be queued, so the run failed
    before anything reached the registry."""
    instances = task_instances(broker.stack, run_id)
    assert {task: ti["state"] for task, ti in instances.items()} == {
        **{task: "success" for task in RAN_BEFORE_EVALUATE},
        **{task: "failed" for task in UNQUEUED_TASKS},
        **{task: "upstream_failed" for task in UNREACHED_TASKS},
    }
    assert instances["train"]["try_number"] == 1
    assert_failure_names_the_broker(broker, run_id)
    assert versions_of_run(broker.mlflow.url) == versions_before


def clear_failed_tasks(broker: Topology, run_id: str) -> None:
    """What an operator does once the broker is back: clear the failed tasks of the run."""
    body = {"dag_run_id": run_id, "only_failed": True, "dry_run": False}
    cleared = broker.stack.api().api("POST", f"/dags/{DAG_ID}/clearTaskInstances", json=body)
    assert {ti["task_id"] for ti in cleared["task_instances"]} == UNQUEUED_TASKS | UNREACHED_TASKS


def test_a_run_goes_end_to_end_through_the_worker_and_two_broker_outages(
    broker: Topology,
) -> None:
    stack, project = broker.stack, broker.project
    with stack.logs_on_failure():
        params_before = (project / "params.yaml").read_bytes()
        versions_before = versions_of_run(broker.mlflow.url)
        connects_before = stack.worker().log_text().count(RECONNECTED)
        results_before = celery_task_results(stack)
        run_id = stack.api().trigger({"epochs": OUTAGE_RUN_EPOCHS})

        # A short outage while train runs: train goes on, the worker reconnects.
        after_short = short_outage(broker, run_id, connects_before)
        # A long one from the middle of train until after it ends: evaluate cannot be queued.
        kill_redis_during_train(broker, run_id, after_short)
        assert stack.api().wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"
        assert_unqueued_run_failed(broker, run_id, versions_before)

        broker.redis.start()
        clear_failed_tasks(broker, run_id)
        assert stack.api().wait_for_run(run_id, RUN_TIMEOUT_S) == "success"
        instances = task_instances(stack, run_id)
        assert {task: ti["state"] for task, ti in instances.items()} == {
            **{task: "success" for task in EXECUTED_TASKS},
            **{task: "skipped" for task in SKIPPED_TASKS},
        }
        # The worker process, not the scheduler, ran every task: once, except the unqueued ones,
        # whose first try never reached it; it reconnected after each outage.
        worker_log = stack.worker().log_text()
        assert executed_by(worker_log, run_id) == {
            **{task: [1] for task in EXECUTED_TASKS - UNQUEUED_TASKS},
            **{task: [2] for task in UNQUEUED_TASKS},
        }
        assert worker_log.count(RECONNECTED) == connects_before + 2
        queues = {task: instances[task]["queue"] for task in EXECUTED_TASKS}
        assert queues == {
            **{task: "default" for task in EXECUTED_TASKS},
            "train": "gpu",
            "close_run_gpu": "gpu",
        }
        assert "resumed from the checkpoint" not in stack.api().task_log(run_id, "train")
        # Celery stored one successful result per task that ran, in PostgreSQL (the last one
        # lands a moment after Airflow marks the run done); the unqueued tries stored none.
        results = wait_for(lambda: settled_results(stack), 120, "Celery results stored", stack)
        successes = results_before.get("SUCCESS", 0) + len(EXECUTED_TASKS)
        assert results == {**results_before, "SUCCESS": successes}

        registered = versions_of_run(broker.mlflow.url, run_id)
        assert len(registered) == 1
        assert versions_of_run(broker.mlflow.url) == [*versions_before, registered[0]]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=broker.mlflow.url, registry_uri=broker.mlflow.url)
        version = client.get_model_version(MODEL_NAME, registered[0])
        assert version.tags["dvc.experiment"] == experiment_name(DAG_ID, run_id)
        assert_saved_and_checkout_untouched(broker, run_id, params_before, OUTAGE_RUN_EPOCHS)


def sweep_task_states(stack: CeleryAirflow, run_id: str) -> dict[str, list[str]]:
    """task_id -> the states of its instances (one per point for run_point)."""
    states: dict[str, list[str]] = {}
    for ti in all_task_instances(stack, run_id, SWEEP_DAG_ID):
        states.setdefault(ti["task_id"], []).append(ti["state"])
    return states


def test_a_sweep_fans_its_points_out_over_the_workers_and_registers_the_best(
    broker: Topology,
) -> None:
    from mlflow.tracking import MlflowClient

    stack, project, url = broker.stack, broker.project, broker.mlflow.url
    with stack.logs_on_failure():
        commit_data_stages(project)  # the points start from the commit, as DVC's do
        params_before = (project / "params.yaml").read_bytes()
        versions_before = versions_of_run(url)
        with stack.extra_worker() as extra:
            run_id = stack.api().trigger(SWEEP_CONF, dag_id=SWEEP_DAG_ID)
            state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S, dag_id=SWEEP_DAG_ID)
        states = sweep_task_states(stack, run_id)
        assert state == "success", states
        assert states == {
            "plan_sweep": ["success"],
            "run_point": ["success"] * len(SWEEP_POINTS),
            "register_best": ["success"],
            "close_sweep": ["success"],
        }
        # Both workers took points (each runs one task at a time).
        ran = [
            executed_by(w.log_text(), run_id).get("run_point", []) for w in (stack.worker(), extra)
        ]
        assert sorted(map(len, ran)) != [0, len(SWEEP_POINTS)], ran
        assert sum(map(len, ran)) == len(SWEEP_POINTS)

        client = MlflowClient(url)
        experiment_id = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
        (parent,) = client.search_runs([experiment_id], "tags.`mt.sweep` = 'grid'")
        children = client.search_runs(
            [experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        by_name = {child.data.tags["mt.dvc_exp_name"]: child for child in children}
        assert sorted(by_name) == SWEEP_POINTS
        assert all("val.bleu" in child.data.metrics for child in children)
        winner = parent.data.tags["mt.sweep.winner"]
        assert parent.info.status == "FINISHED"

        # One version, from this run, logged into the winner's run from its experiment commit.
        registered = versions_of_run(url, run_id)
        assert len(registered) == 1 and versions_of_run(url) == [*versions_before, *registered]
        version = client.get_model_version(MODEL_NAME, registered[0])
        assert version.run_id == by_name[winner].info.run_id
        assert version.tags["git.commit"] == experiment_revs(project)[winner]
        assert parent.data.tags["mt.sweep.registered_version"] == registered[0]
        assert (project / "params.yaml").read_bytes() == params_before
        assert list((project / RUNS_DIR).glob("*/")) == []
