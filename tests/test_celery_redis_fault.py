"""The Celery broker (Redis) stopped for real while a worker holds the train task.

The stack of tests/celery_harness.py (CeleryExecutor Airflow, PostgreSQL metadata DB and
result backend) with a private redis-server as its broker (tests/redis_server.py): the test
SIGKILLs it while the worker runs `train` of a tiny corpus and starts it again on the same
port. It comes back empty (no persistence), as a broker that lost its host does.

What Airflow 3.3 with Celery 5.6 does, and so what the tests assert:
- A running task does not need the broker: its runner reports to the api-server (execution
  API) and Celery stores the result in PostgreSQL. `train` finishes through the outage and
  succeeds on its first try.
- The worker's consumer loses its connection, retries with a growing pause (2 s, 4 s, 6 s …,
  `broker_connection_max_retries` = 100 tries) and reconnects once Redis is back; the same worker
  runs the next tasks.
- The scheduler cannot queue a task while Redis is down: the publish fails within a second, the
  executor reports the task failed before it ran (`Error sending Celery workload: …` in the
  scheduler log, `state mismatch` in the task's audit log), so a task without retries fails and
  the run fails at once instead of waiting in `queued`.

1. Redis back before `train` ends: the run completes on its own, no task retried.
2. Redis still down when `train` ends: `evaluate` and the `restore_params` teardown cannot be
   queued and the run fails; once Redis is back, clearing the failed tasks completes it.

The two tests share one stack; neither depends on the other having run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration import STAGES
from tests.airflow_harness import DAG_ID, make_project, registered_versions
from tests.celery_harness import (
    CeleryAirflow,
    celery_airflow,
    executed_by,
    task_instances,
    wait_for,
)
from tests.conftest import write_tiny_corpus
from tests.redis_server import RedisServer, private_redis
from tests.run_outputs import (
    dvc_changed_outs,
    history_epochs,
    leftover_temp_files,
    recorded_epochs,
)

pytestmark = pytest.mark.slow

MODEL_NAME = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1200
# Early stopping off (patience > epochs) so every epoch runs; no schedule, so the scheduler
# starts no run of its own; short retry delays.
PROJECT_OVERRIDES: dict[str, Any] = {
    "train": {"patience": 1000},
    "orchestration": {"schedule": "none", "retry_delay_s": 2, "max_retry_delay_s": 10},
}
# Enough epochs that `train` still runs when Redis comes back an epoch after it was killed.
SHORT_OUTAGE_EPOCHS = 12
LONG_OUTAGE_EPOCHS = 3
EXECUTED_TASKS = {"apply_run_params", *STAGES, "choose_promotion", "restore_params"}
SKIPPED_TASKS = {"approve_promotion", "promote_challenger"}
# A run whose evaluate could not be queued: what ran before it, what never started after it.
RAN_BEFORE_EVALUATE = {"apply_run_params", *STAGES[: STAGES.index("evaluate")]}
UNQUEUED_TASKS = {"evaluate", "restore_params"}
UNREACHED_TASKS = {"register", "choose_promotion", "approve_promotion", "promote_challenger"}
SEND_ERROR = "Error sending Celery workload"
RECONNECTED = "Connected to redis://"


@dataclass
class BrokerStack:
    stack: CeleryAirflow
    project: Path
    redis: RedisServer


@pytest.fixture(scope="module")
def broker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerStack]:
    root = tmp_path_factory.mktemp("celery_redis_fault")
    project = make_project(root / "project", write_tiny_corpus(root / "corpus"), PROJECT_OVERRIDES)
    with (
        private_redis(root / "redis") as redis,
        celery_airflow(root / "airflow", project, broker_url=redis.url) as stack,
    ):
        with stack.logs_on_failure():
            stack.api().wait_for_dag(timeout_s=300)
            stack.api().api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        yield BrokerStack(stack, project, redis)


@pytest.fixture
def broker(broker_stack: BrokerStack) -> BrokerStack:
    """The shared stack with Redis up (a test that failed mid-outage may have left it down)."""
    if not broker_stack.redis.alive():
        broker_stack.redis.start()
    return broker_stack


def train_state(stack: CeleryAirflow, run_id: str) -> str | None:
    state: str | None = task_instances(stack, run_id).get("train", {}).get("state")
    return state


def kill_redis_during_train(broker: BrokerStack, run_id: str, epochs: int) -> int:
    """SIGKILL Redis once the worker's `train` has finished its first epoch; that epoch count."""
    stack, project = broker.stack, broker.project
    wait_for(lambda: train_state(stack, run_id) == "running", RUN_TIMEOUT_S, "train runs", stack)
    wait_for(lambda: recorded_epochs(project) >= 1, 600, "epoch 1", stack, interval_s=0.05)
    broker.redis.kill()
    killed_at = recorded_epochs(project)
    # The checkpoint (and its epoch count) exists only while train runs: it was mid-way.
    assert 1 <= killed_at < epochs
    return killed_at


def scheduler_log(stack: CeleryAirflow) -> str:
    return stack.components["scheduler"].log_text()


def assert_outputs_intact(broker: BrokerStack, params_before: bytes, epochs: int) -> None:
    """One finished training, outputs equal to dvc.lock, no staging files, params restored."""
    project = broker.project
    assert history_epochs(project) == list(range(1, epochs + 1))
    assert not (project / "models" / "checkpoints").exists()
    assert dvc_changed_outs(project) == {}
    assert leftover_temp_files(project) == []
    assert (project / "params.yaml").read_bytes() == params_before


def assert_failure_names_the_broker(broker: BrokerStack, run_id: str) -> None:
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


def test_redis_back_before_train_ends_the_run_completes_on_its_own(broker: BrokerStack) -> None:
    stack, project = broker.stack, broker.project
    with stack.logs_on_failure():
        params_before = (project / "params.yaml").read_bytes()
        versions_before = registered_versions(project, MODEL_NAME)
        send_errors_before = scheduler_log(stack).count(SEND_ERROR)
        connects_before = stack.worker().log_text().count(RECONNECTED)
        run_id = stack.api().trigger({"epochs": SHORT_OUTAGE_EPOCHS})

        killed_at = kill_redis_during_train(broker, run_id, SHORT_OUTAGE_EPOCHS)
        # One more epoch without a broker, then Redis comes back while train still runs.
        wait_for(lambda: recorded_epochs(project) > killed_at, 600, "an epoch", interval_s=0.05)
        broker.redis.start()
        assert killed_at < recorded_epochs(project) < SHORT_OUTAGE_EPOCHS

        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        states = {task: ti["state"] for task, ti in instances.items()}
        assert state == "success", states
        assert states == {
            **{task: "success" for task in EXECUTED_TASKS},
            **{task: "skipped" for task in SKIPPED_TASKS},
        }
        # The same worker ran every task once: it reconnected (once) and took the next tasks;
        # the scheduler never failed to queue one.
        worker_log = stack.worker().log_text()
        assert executed_by(worker_log, run_id) == {task: [1] for task in EXECUTED_TASKS}
        assert worker_log.count(RECONNECTED) == connects_before + 1
        assert scheduler_log(stack).count(SEND_ERROR) == send_errors_before
        assert "resumed from the checkpoint" not in stack.api().task_log(run_id, "train")

        versions = registered_versions(project, MODEL_NAME)
        assert versions == [*versions_before, str(len(versions_before) + 1)]
        assert_outputs_intact(broker, params_before, SHORT_OUTAGE_EPOCHS)


def test_a_task_that_cannot_be_queued_fails_the_run_and_a_clear_completes_it(
    broker: BrokerStack,
) -> None:
    stack, project = broker.stack, broker.project
    with stack.logs_on_failure():
        params_before = (project / "params.yaml").read_bytes()
        versions_before = registered_versions(project, MODEL_NAME)
        run_id = stack.api().trigger({"epochs": LONG_OUTAGE_EPOCHS})
        kill_redis_during_train(broker, run_id, LONG_OUTAGE_EPOCHS)

        # Redis stays down: train succeeds, what comes next cannot be queued, the run fails.
        assert stack.api().wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"
        instances = task_instances(stack, run_id)
        assert {task: ti["state"] for task, ti in instances.items()} == {
            **{task: "success" for task in RAN_BEFORE_EVALUATE},
            **{task: "failed" for task in UNQUEUED_TASKS},
            **{task: "upstream_failed" for task in UNREACHED_TASKS},
        }
        assert instances["train"]["try_number"] == 1
        assert_failure_names_the_broker(broker, run_id)
        assert registered_versions(project, MODEL_NAME) == versions_before

        broker.redis.start()
        body = {"dag_run_id": run_id, "only_failed": True, "dry_run": False}
        cleared = stack.api().api("POST", f"/dags/{DAG_ID}/clearTaskInstances", json=body)
        assert {ti["task_id"] for ti in cleared["task_instances"]} == (
            UNQUEUED_TASKS | UNREACHED_TASKS
        )
        assert stack.api().wait_for_run(run_id, RUN_TIMEOUT_S) == "success"
        # The worker never ran the unqueued first tries; train was not run again.
        assert executed_by(stack.worker().log_text(), run_id) == {
            **{task: [1] for task in EXECUTED_TASKS - UNQUEUED_TASKS},
            **{task: [2] for task in UNQUEUED_TASKS},
        }
        versions = registered_versions(project, MODEL_NAME)
        assert versions == [*versions_before, str(len(versions_before) + 1)]
        assert_outputs_intact(broker, params_before, LONG_OUTAGE_EPOCHS)
