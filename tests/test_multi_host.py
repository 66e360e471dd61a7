"""Workers on two hosts with no shared project folder (issue 18): two network namespaces.

Each namespace runs one `airflow celery worker` with its own git checkout of the project, and
reaches Redis, PostgreSQL (Airflow's metadata DB and Celery's results, MLflow's store), the
MLflow server (artifacts proxied: `mlflow-artifacts:`) and the DVC remote (WebDAV, with a
user and password) only at the host side of its veth pair (tests/netns.py). The scheduler,
api-server and dag-processor run on the host. Stage outputs move through the DVC remote, the
run's commit, params and dvc.lock entries through XCom (pipeline/orchestration/). Each
worker makes the run's workspace in its own checkout (pipeline/workspaces.py); the run ends
as a DVC experiment pushed to the repository both checkouts were cloned from.

One run on the tiny corpus proves both halves of the issue (one run, not two: CI time):
- `train` starts on the "gpu" worker, every other task runs on the "default" one;
- the "gpu" worker is SIGKILLed (its whole tree, a lost host) mid-train; the default worker,
  told to consume the gpu queue too, runs the retry, which restores the last mirrored epoch's
  checkpoint from the MLflow server (MT_CHECKPOINT_MIRROR) and resumes there;
- a replacement "gpu" worker comes up meanwhile and runs the gpu queue's close task (it removes
  the workspace the killed try left on that host); the run registers one version tagged with
  its experiment, the experiment reaches the origin repository with every stage's lock entry
  and the resumed training's history, and both checkouts end as they began.
"""

from __future__ import annotations

import csv
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration.tasks import STAGES
from pipeline.workspaces import RUNS_DIR, experiment_name, experiment_rev
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
from tests.run_outputs import recorded_epochs
from tests.test_celery_topology import versions_of_run
from tests.webdav_server import WebdavServer, private_webdav

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 1200
# 1-2 s an epoch on the tiny corpus: the kill comes right after epoch 2 (polled every 50 ms).
KILL_RUN_EPOCHS = 8
REMOTE_USER, REMOTE_PASSWORD = "mt-worker", "dav-secret"
PROJECT_OVERRIDES: dict[str, Any] = {
    "train": {"patience": 1000},
    "orchestration": {"schedule": "none", "retry_delay_s": 2, "max_retry_delay_s": 10},
}
EXECUTED_TASKS = {
    "start_run", *STAGES, "choose_promotion", "save_experiment",
    "close_run_default", "close_run_gpu",
}  # fmt: skip
SKIPPED_TASKS = {"approve_promotion", "promote_challenger"}


@dataclass
class Hosts:
    stack: CeleryAirflow
    network: Network
    origin: Path
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
                yield Hosts(stack, network, origin, checkouts, workers, mlflow, redis, webdav)
        finally:
            mlflow.stop()


def assert_as_cloned(checkout: Path) -> None:
    """The checkout as `git clone` left it: no change, no output, no workspace."""
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=checkout, capture_output=True, text=True
    )
    assert status.stdout == ""
    assert not any((checkout / name).exists() for name in ("data", "models", "dvc.lock"))
    assert list((checkout / RUNS_DIR).glob("*/")) == []


def git_show(repo: Path, rev: str, path: str) -> str:
    return subprocess.check_output(["git", "show", f"{rev}:{path}"], cwd=repo, text=True)


def control_gpu_queue(hosts: Hosts, worker: str, action: str) -> None:
    """Make a running worker start or stop consuming the gpu queue (Celery remote control)."""
    from celery import Celery

    app = Celery(broker=hosts.redis.url)
    destination = f"worker-{worker}@{socket.gethostname()}"
    command = app.control.add_consumer if action == "add" else app.control.cancel_consumer
    replies = command("gpu", destination=[destination], reply=True, timeout=30)
    assert [list(reply) for reply in replies] == [[destination]], replies
    assert "ok" in replies[0][destination], replies


def train_try(stack: CeleryAirflow, run_id: str) -> tuple[str | None, int]:
    train = task_instances(stack, run_id).get("train", {})
    return train.get("state"), int(train.get("try_number") or 0)


def kill_gpu_host_mid_train(hosts: Hosts, run_id: str) -> int:
    """SIGKILL the gpu worker's tree after 2 epochs; the epochs checkpointed by then."""
    stack = hosts.stack
    gpu_checkout = hosts.checkouts["gpu"] / RUNS_DIR / experiment_name(DAG_ID, run_id)
    wait_for(lambda: train_try(stack, run_id) == ("running", 1), RUN_TIMEOUT_S, "train", stack)
    control_gpu_queue(hosts, "default", "add")
    wait_for(lambda: recorded_epochs(gpu_checkout) >= 2, 600, "2 epochs", stack, 0.05)
    killed = hosts.workers["gpu"].kill()
    assert running(killed) == []
    epochs_at_kill = recorded_epochs(gpu_checkout)
    assert 2 <= epochs_at_kill < KILL_RUN_EPOCHS
    return epochs_at_kill


def replace_gpu_host(hosts: Hosts, run_id: str) -> Component:
    """Once the retry runs on the default host, a new gpu worker takes the gpu queue back."""
    stack = hosts.stack
    wait_for(lambda: train_try(stack, run_id) == ("running", 2), RUN_TIMEOUT_S, "retry", stack)
    control_gpu_queue(hosts, "default", "cancel")
    env = worker_env(hosts.checkouts["gpu"], hosts.mlflow, hosts.webdav)
    prefix = hosts.network.namespace("gpu").command([])
    return stack.remote_worker("worker-gpu-2", "gpu", prefix, env)


def test_stages_move_between_hosts_and_a_lost_host_s_train_resumes_on_another(
    hosts: Hosts,
) -> None:
    stack, checkouts = hosts.stack, hosts.checkouts
    with stack.logs_on_failure():
        run_id = stack.api().trigger({"epochs": KILL_RUN_EPOCHS})
        epochs_at_kill = kill_gpu_host_mid_train(hosts, run_id)
        new_gpu_worker = replace_gpu_host(hosts, run_id)
        state = stack.api().wait_for_run(run_id, RUN_TIMEOUT_S)
        instances = task_instances(stack, run_id)
        assert {task: ti["state"] for task, ti in instances.items()} == {
            **{task: "success" for task in EXECUTED_TASKS},
            **{task: "skipped" for task in SKIPPED_TASKS},
        }, state

        # Who ran what: train's first try on the gpu host, its retry on the default host.
        assert executed_by(hosts.workers["gpu"].log_text(), run_id) == {"train": [1]}
        assert executed_by(new_gpu_worker.log_text(), run_id) == {"close_run_gpu": [1]}
        on_default = EXECUTED_TASKS - {"close_run_gpu"}
        assert executed_by(hosts.workers["default"].log_text(), run_id) == {
            **{task: [1] for task in on_default},
            "train": [2],
        }
        scheduler_log = stack.components["scheduler"].log_text()
        assert "Detected a task instance without a heartbeat" in scheduler_log

        # The retry restored the mirrored checkpoint and resumed there, on the same MLflow run.
        retry_log = stack.api().task_log(run_id, "train", try_number=2)
        restored = re.search(r"restored the checkpoint of epoch (\d+) from MLflow", retry_log)
        resumed = re.search(r"resumed from the checkpoint of epoch (\d+);", retry_log)
        assert restored and resumed, retry_log[-4000:]
        assert int(restored.group(1)) == int(resumed.group(1))
        # An epoch's upload follows its journal entry: the last one may not have been mirrored.
        assert epochs_at_kill - 1 <= int(resumed.group(1)) <= epochs_at_kill
        assert "continuing MLflow run" in retry_log

        # One version, tagged with the run's experiment, which reached the origin repository
        # (`dvc exp push`) with every stage's lock entry and the whole training history.
        assert versions_of_run(hosts.mlflow.url, run_id) == ["1"]
        name = experiment_name(DAG_ID, run_id)
        assert version_tags(hosts.mlflow.url, "1")["dvc.experiment"] == name
        baseline = subprocess.check_output(
            ["git", "rev-parse", "HEAD"], cwd=hosts.origin, text=True
        ).strip()
        rev = experiment_rev(hosts.origin, baseline, name)
        assert rev is not None
        lock = git_show(hosts.origin, rev, "dvc.lock")
        assert all(f"\n  {stage}:\n" in lock for stage in STAGES)
        history = csv.DictReader(
            git_show(hosts.origin, rev, "reports/train/history.csv").splitlines()
        )
        assert [int(row["epoch"]) for row in history] == list(range(1, KILL_RUN_EPOCHS + 1))
        for checkout in checkouts.values():
            assert_as_cloned(checkout)
        # The model reached the default host through the remote: DVC's objects and run-cache.
        stored = [path for path in hosts.webdav.root.rglob("*") if path.is_file()]
        assert any("runs" in path.parts for path in stored)


def version_tags(uri: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return dict(client.get_model_version("multi30k-en-de-lstm", version).tags)
