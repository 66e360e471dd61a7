"""Workers on two hosts with no shared project folder (issue 18): two network namespaces.

Each namespace runs one `airflow celery worker` with its own git checkout of the project, and
reaches Redis, PostgreSQL (Airflow's metadata DB and Celery's results, MLflow's store), the
MLflow server (artifacts proxied: `mlflow-artifacts:`) and the DVC remote (WebDAV, with a
user and password) only at the host side of its veth pair (tests/netns.py). The scheduler,
api-server and dag-processor run on the host. Stage outputs move through the DVC remote, the
run's commit, params and dvc.lock entries through XCom (pipeline/remote/).

1. A run on the tiny corpus: `train` runs on the "gpu" worker, every other stage on the
   "default" one; a version is registered; both checkouts end with the same dvc.lock and model.
2. The "gpu" worker is SIGKILLed (its whole tree) mid-train; the default worker, told to
   consume the gpu queue too, runs the retry, which restores the last epoch's checkpoint from
   the MLflow server (MT_CHECKPOINT_MIRROR) and resumes there instead of starting over.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration import STAGES
from pipeline.params_lock import ParamsLock
from pipeline.paths import project_paths
from tests.airflow_harness import DAG_ID, make_project
from tests.celery_harness import (
    CeleryAirflow,
    Component,
    celery_airflow,
    executed_by,
    running,
    task_instances,
    wait_for,
)
from tests.conftest import REPO_ROOT, write_tiny_corpus
from tests.mlflow_server import MlflowServer
from tests.netns import Network, isolated_hosts
from tests.pg_cluster import private_postgres
from tests.redis_server import RedisServer, private_redis
from tests.run_outputs import (
    dvc_changed_outs,
    history_epochs,
    leftover_temp_files,
    recorded_epochs,
)
from tests.test_celery_topology import versions_of_run
from tests.webdav_server import WebdavServer, private_webdav

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 1200
FIRST_RUN_EPOCHS = 2
KILL_RUN_EPOCHS = 30  # about 1-2 s an epoch on the tiny corpus: a window to kill in
REMOTE_USER, REMOTE_PASSWORD = "mt-worker", "dav-secret"
PROJECT_OVERRIDES: dict[str, Any] = {
    "train": {"patience": 1000},
    "orchestration": {"schedule": "none", "retry_delay_s": 2, "max_retry_delay_s": 10},
}
SYNC_TASKS = {"sync_checkout_default", "sync_checkout_gpu"}
ON_GPU_HOST = {"train", "sync_checkout_gpu"}
ON_DEFAULT_HOST = {
    "apply_run_params", *STAGES, "choose_promotion", "restore_params", *SYNC_TASKS
} - ON_GPU_HOST  # fmt: skip
SKIPPED_TASKS = {"approve_promotion", "promote_challenger"}


@dataclass
class Hosts:
    stack: CeleryAirflow
    network: Network
    checkouts: dict[str, Path]
    workers: dict[str, Component]
    mlflow: MlflowServer
    redis: RedisServer
    webdav: WebdavServer


def clone(origin: Path, target: Path) -> Path:
    """A checkout of its own, as on another host (the venv linked, like make_project's)."""
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True)
    (target / ".venv").symlink_to(REPO_ROOT / ".venv")
    return target


def worker_env(hosts_checkout: Path, mlflow: MlflowServer, webdav: WebdavServer) -> dict[str, str]:
    return {
        "MT_PROJECT_DIR": str(hosts_checkout),
        "MLFLOW_TRACKING_URI": mlflow.url,
        "MT_DVC_REMOTE": webdav.dvc_url,
        "MT_DVC_REMOTE_USER": REMOTE_USER,
        "MT_DVC_REMOTE_PASSWORD": REMOTE_PASSWORD,
        "MT_CHECKPOINT_MIRROR": "mlflow",
    }


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    root = tmp_path_factory.mktemp("multi_host")
    corpus = write_tiny_corpus(root / "corpus")
    origin = make_project(root / "origin", corpus, PROJECT_OVERRIDES)
    checkouts = {name: clone(origin, root / f"checkout-{name}") for name in ("default", "gpu")}
    with (
        isolated_hosts(["default", "gpu"]) as network,
        private_postgres(root / "postgres", network.server_address) as postgres,
        private_redis(root / "redis", network.server_address) as redis,
        private_webdav(
            root / "webdav", network.server_address, REMOTE_USER, REMOTE_PASSWORD
        ) as webdav,
    ):
        postgres.create_database("airflow")
        postgres.create_database("mlflow")
        mlflow = MlflowServer(
            postgres.url("mlflow"), root / "mlartifacts", root / "mlflow.log",
            host=network.server_address,
        ).start()  # fmt: skip
        try:
            with celery_airflow(
                root / "airflow", origin, {"MLFLOW_TRACKING_URI": mlflow.url}, redis.url,
                database_url=postgres.url("airflow"), host=network.server_address,
                with_worker=False,
            ) as stack:  # fmt: skip
                workers = {
                    name: stack.remote_worker(
                        f"worker-{name}",
                        name,
                        network.namespace(name).command([]),
                        worker_env(checkouts[name], mlflow, webdav),
                    )
                    for name in ("default", "gpu")
                }
                api = stack.api()
                with stack.logs_on_failure():
                    api.wait_for_dag(DAG_ID, timeout_s=300)
                    api.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
                yield Hosts(stack, network, checkouts, workers, mlflow, redis, webdav)
        finally:
            mlflow.stop()


def assert_params_free_and_clean(checkout: Path) -> None:
    assert ParamsLock(project_paths(checkout)).owner() is None
    diff = subprocess.run(["git", "diff", "--quiet", "--", "params.yaml"], cwd=checkout)
    assert diff.returncode == 0


def test_stages_move_between_hosts_through_the_dvc_remote(hosts: Hosts) -> None:
    stack, checkouts = hosts.stack, hosts.checkouts
    with stack.logs_on_failure():
        run_id = stack.api().trigger({"epochs": FIRST_RUN_EPOCHS})
        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        assert state == "success", {task: ti["state"] for task, ti in instances.items()}
        assert {task: ti["state"] for task, ti in instances.items()} == {
            **{task: "success" for task in ON_DEFAULT_HOST | ON_GPU_HOST},
            **{task: "skipped" for task in SKIPPED_TASKS},
        }
        ran_on = {name: executed_by(w.log_text(), run_id) for name, w in hosts.workers.items()}
        assert ran_on["gpu"] == {task: [1] for task in ON_GPU_HOST}
        assert ran_on["default"] == {task: [1] for task in ON_DEFAULT_HOST}

        assert versions_of_run(hosts.mlflow.url, run_id) == ["1"]
        locks = {name: (path / "dvc.lock").read_text("utf-8") for name, path in checkouts.items()}
        assert locks["default"] == locks["gpu"]
        assert all(f"\n  {stage}:\n" in locks["gpu"] for stage in STAGES)
        models = {
            name: (path / "models/seq2seq.keras").read_bytes() for name, path in checkouts.items()
        }
        assert models["default"] == models["gpu"]
        for checkout in checkouts.values():
            assert_params_free_and_clean(checkout)
        # The model reached the default host through the remote: DVC's objects and run-cache.
        stored = [path for path in hosts.webdav.root.rglob("*") if path.is_file()]
        assert any("runs" in path.parts for path in stored)
        assert len(stored) > 10


def add_gpu_queue(hosts: Hosts, worker: str) -> None:
    """Tell a running worker to consume the gpu queue too (Celery's remote control)."""
    from celery import Celery

    app = Celery(broker=hosts.redis.url)
    destination = f"worker-{worker}@{socket.gethostname()}"
    replies = app.control.add_consumer("gpu", destination=[destination], reply=True, timeout=30)
    assert replies == [{destination: {"ok": "add consumer gpu"}}]


def test_a_killed_gpu_host_s_train_resumes_on_the_other_host(hosts: Hosts) -> None:
    stack, checkouts = hosts.stack, hosts.checkouts
    with stack.logs_on_failure():
        run_id = stack.api().trigger({"epochs": KILL_RUN_EPOCHS})

        def train_state() -> str | None:
            state: str | None = task_instances(stack, run_id).get("train", {}).get("state")
            return state

        wait_for(lambda: train_state() == "running", RUN_TIMEOUT_S, "train running", stack)
        add_gpu_queue(hosts, "default")
        gpu_checkout = checkouts["gpu"]
        wait_for(lambda: recorded_epochs(gpu_checkout) >= 2, 600, "2 epochs", stack, 0.05)
        killed = hosts.workers["gpu"].kill()
        assert running(killed) == []
        epochs_at_kill = recorded_epochs(gpu_checkout)
        assert 2 <= epochs_at_kill < KILL_RUN_EPOCHS

        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        assert state == "success", {task: ti["state"] for task, ti in instances.items()}
        assert instances["train"]["try_number"] == 2
        assert executed_by(hosts.workers["gpu"].log_text(), run_id) == {"train": [1]}
        assert executed_by(hosts.workers["default"].log_text(), run_id)["train"] == [2]

        retry_log = stack.api().task_log(run_id, "train", try_number=2)
        restored = re.search(r"restored the checkpoint of epoch (\d+) from MLflow", retry_log)
        resumed = re.search(r"resumed from the checkpoint of epoch (\d+);", retry_log)
        assert restored and resumed, retry_log[-4000:]
        # The history row of an epoch is stored just before its Keras backup: one may lead.
        assert int(restored.group(1)) == int(resumed.group(1))
        assert epochs_at_kill - 1 <= int(resumed.group(1)) <= epochs_at_kill
        # The scheduler failed try 1 for its missing heartbeats; try 2 went on with the same
        # MLflow training run (its id came with the checkpoint), and finished every epoch once.
        scheduler_log = stack.components["scheduler"].log_text()
        assert "Detected a task instance without a heartbeat" in scheduler_log
        assert "continuing MLflow run" in retry_log
        default_checkout = checkouts["default"]
        assert history_epochs(default_checkout) == list(range(1, KILL_RUN_EPOCHS + 1))
        assert not (default_checkout / "models" / "checkpoints").exists()
        assert len(versions_of_run(hosts.mlflow.url, run_id)) == 1
        assert dvc_changed_outs(default_checkout) == {}
        assert leftover_temp_files(default_checkout) == []
        assert_params_free_and_clean(default_checkout)
