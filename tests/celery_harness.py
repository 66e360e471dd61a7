"""A real CeleryExecutor Airflow on 127.0.0.1, the topology of docker/compose.yaml without Docker.

PostgreSQL holds the metadata DB (`mt_airflow_<random>`) and Celery's result backend, Redis
(a free db number, not 0) is the broker; api-server, scheduler and dag-processor run as separate
processes and the tasks run in `airflow celery worker` processes that a test can kill and
replace. `airflow standalone` cannot be used: in 3.3.2 it forces LocalExecutor whenever the
configured executor is not a local one (StandaloneCommand.calculate_env).

Every component has its own process group and log file under the stack's folder; teardown
stops them all, drops the database and flushes the Redis db.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.airflow_harness import DAG_ID, VENV_BIN, AirflowServer, base_env, free_port
from tests.postgres import postgres_database

REDIS_URL = "redis://127.0.0.1:6379"
STARTUP_TIMEOUT_S = 420  # a loaded 2-core machine: migrate + 4 components can take minutes
# A task whose worker vanished is failed (or retried) this long after its last heartbeat;
# live tasks heartbeat every [workers] min_heartbeat_interval (5 s), so 45 s leaves slack.
HEARTBEAT_TIMEOUT_S = 45
ADMIN = "admin"
REDIS_CLAIM_KEY = "mt:celery-test:claimed-by"


@contextlib.contextmanager
def redis_broker() -> Iterator[str]:
    """A Redis db (1..15) that nothing else uses, claimed with SET NX; flushed afterwards."""
    import redis

    token = secrets.token_hex(8)
    for number in random.sample(range(1, 16), 15):
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        # Empty and claimed atomically: a parallel test run probing the same db backs off.
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True):
            break
        client.close()
    else:
        raise RuntimeError("no free Redis db among 1..15 on 127.0.0.1:6379")
    try:
        yield f"{REDIS_URL}/{number}"
    finally:
        client.flushdb()
        client.close()


def kill_process_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and everything it started, like a host that dies.

    Airflow puts the task runner in its own process group and the bash task in its own
    session, so killing the worker's group alone would leave `dvc repro` running as an
    orphan. The tree is frozen first so nothing forks between listing and killing.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    tree = [root]
    for _ in range(3):
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = [root, *root.children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(tree, timeout=30)
    return [proc.pid for proc in tree]


def running(pids: list[int]) -> list[int]:
    """Those of `pids` that still run (a zombie waiting to be reaped does not)."""
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


@dataclass
class Component:
    """One Airflow process (and its children), its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 60) -> str:
        text = self.log_text() if self.log_file.is_file() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> list[int]:
        """SIGKILL the whole process tree (a lost host) and reap it; the pids that were killed."""
        killed = kill_process_tree(self.process.pid)
        self.process.wait(timeout=30)
        return killed

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL whatever is left of the tree."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        kill_process_tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class CeleryAirflow:
    """The running stack: its env, its components, and a REST client on the api-server."""

    home: Path
    env: dict[str, str]
    base_url: str
    components: dict[str, Component] = field(default_factory=dict)
    workers_started: int = 0
    server: AirflowServer | None = None

    def start(
        self,
        name: str,
        *args: str,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Component:
        log_file = self.home / "logs" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as sink:
            process = subprocess.Popen(
                [*prefix, str(VENV_BIN / "airflow"), *args],
                env=env or self.env,
                cwd=self.home,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.components[name] = Component(name, process, log_file)
        return self.components[name]

    def start_worker(self) -> Component:
        """A new `airflow celery worker` (one task at a time, like the compose worker)."""
        self.workers_started += 1
        return self._worker(f"worker-{self.workers_started}")

    @contextlib.contextmanager
    def extra_worker(self) -> Iterator[Component]:
        """One more worker for the block (tasks fan out over both); `worker()` stays the
        last one `start_worker` started, so other tests see the stack as it was."""
        extra = self._worker(f"worker-extra-{len(self.components)}")
        try:
            yield extra
        finally:
            extra.stop()

    def _worker(
        self,
        name: str,
        queues: str = "default,gpu",
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Component:
        worker = self.start(
            name, "celery", "worker", "--concurrency", "1", "--queues", queues,
            "--celery-hostname", f"{name}@%h", "--skip-serve-logs",
            "--without-mingle", "--without-gossip",
            prefix=prefix, env=env,
        )  # fmt: skip
        wait_for(lambda: _worker_ready(worker), STARTUP_TIMEOUT_S, f"{name} ready", self)
        return worker

    def remote_worker(
        self, name: str, queues: str, prefix: Sequence[str], env: dict[str, str]
    ) -> Component:
        """A worker on "another host": run under `prefix` (e.g. `ip netns exec NS`) with
        `env` over the stack's (its own project checkout, its own server addresses)."""
        return self._worker(name, queues, prefix, {**self.env, **env})

    def worker(self) -> Component:
        """The most recently started worker."""
        return self.components[f"worker-{self.workers_started}"]

    def api(self) -> AirflowServer:
        if self.server is None:
            raise RuntimeError("the api-server is not logged in yet")
        return self.server

    def tails(self, lines: int = 60) -> str:
        """The end of every component's log, and of every task attempt that logged an error."""
        parts = [
            f"----- {c.name} ({c.log_file}) -----\n{c.tail(lines)}"
            for c in self.components.values()
        ]
        for attempt in sorted((self.home / "logs").glob("dag_id=*/run_id=*/task_id=*/attempt=*")):
            text = attempt.read_text(encoding="utf-8", errors="replace")
            if '"level":"error"' in text:
                tail = "\n".join(text.splitlines()[-lines:])
                parts.append(f"----- task log {attempt} -----\n{tail}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        dead = [c.name for c in self.components.values() if not c.alive()]
        dead = [name for name in dead if not name.startswith("worker-")]
        if dead:
            raise RuntimeError(f"Airflow component(s) exited: {', '.join(dead)}")

    def stop(self) -> None:
        for component in reversed(list(self.components.values())):
            component.stop()

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Print every component's log tail when the block fails (pytest shows it)."""
        try:
            yield
        except BaseException:
            print(self.tails())
            raise


def _worker_ready(worker: Component) -> bool:
    if not worker.alive():
        raise RuntimeError(f"{worker.name} exited ({worker.process.returncode})")
    return worker.log_file.is_file() and " ready." in worker.log_text()


def wait_for(
    check: Any,
    timeout_s: float,
    what: str,
    stack: CeleryAirflow | None = None,
    interval_s: float = 2.0,
) -> Any:
    """Poll `check()` until it returns something truthy, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack is not None:
            stack.check_alive()
        result = check()
        if result:
            return result
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s")


def celery_env(
    home: Path, project: Path, db_url: str, broker_url: str, port: int, host: str = "127.0.0.1"
) -> dict[str, str]:
    """The settings every component shares (docker/compose.yaml's x-airflow-env), with the
    api-server on `host`."""
    base_url = f"http://{host}:{port}"
    env = base_env(home, project, db_url)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db_url}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # Free ports, so parallel test runs on this machine do not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    return env


@contextlib.contextmanager
def celery_airflow(
    home: Path,
    project: Path,
    extra_env: dict[str, str] | None = None,
    broker_url: str | None = None,
    database_url: str | None = None,
    host: str = "127.0.0.1",
    with_worker: bool = True,
) -> Iterator[CeleryAirflow]:
    """Migrate a fresh metadata DB, start api-server, scheduler, dag-processor and one worker.

    The broker is a free db of the machine's Redis unless `broker_url` names another (a
    private redis-server that a test may stop); the metadata DB a fresh one on the machine's
    PostgreSQL unless `database_url` names one. The api-server listens on `host`. Without
    `with_worker` the caller starts its own workers (tests/test_multi_host.py, elsewhere).
    """
    home.mkdir(parents=True, exist_ok=True)
    claimed = contextlib.nullcontext(broker_url) if broker_url else redis_broker()
    database = (
        contextlib.nullcontext(database_url) if database_url else postgres_database("mt_airflow")
    )
    with database as db_url, claimed as broker:
        port = free_port()
        env = {**celery_env(home, project, db_url, broker, port, host), **(extra_env or {})}
        password = secrets.token_hex(8)
        (home / "passwords.json").write_text(json.dumps({ADMIN: password}), encoding="utf-8")
        stack = CeleryAirflow(home, env, f"http://{host}:{port}")
        try:
            _migrate(stack)
            stack.start("api-server", "api-server")
            stack.start("scheduler", "scheduler")
            stack.start("dag-processor", "dag-processor")
            wait_for(lambda: _healthy(stack.base_url), STARTUP_TIMEOUT_S, "Airflow health", stack)
            stack.server = AirflowServer(stack.base_url, ADMIN, password, home / "logs")
            stack.api().login()
            if with_worker:
                stack.start_worker()
            yield stack
        except BaseException:
            print(stack.tails())
            raise
        finally:
            stack.stop()


def _migrate(stack: CeleryAirflow) -> None:
    done = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=stack.env,
        cwd=stack.home,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def _healthy(base_url: str) -> bool:
    """Scheduler and dag-processor heartbeating (the api-server answers, the DB is reachable)."""
    with contextlib.suppress(requests.RequestException, ValueError):
        health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=5).json()
        wanted = ("metadatabase", "scheduler", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in wanted)
    return False


def celery_task_results(stack: CeleryAirflow) -> dict[str, int]:
    """Rows of Celery's result backend table (in the metadata DB) by status: SUCCESS, ..."""
    import psycopg

    db_url = stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        rows = connection.execute("SELECT status, count(*) FROM celery_taskmeta GROUP BY status")
        return {str(status): int(count) for status, count in rows}


def task_instances(stack: CeleryAirflow, run_id: str) -> dict[str, dict[str, Any]]:
    """task_id -> the REST API's task instance of `run_id` (state, try_number, queue, ...)."""
    return {ti["task_id"]: ti for ti in all_task_instances(stack, run_id)}


def all_task_instances(
    stack: CeleryAirflow, run_id: str, dag_id: str = DAG_ID
) -> list[dict[str, Any]]:
    """Every task instance of `run_id`, one per mapped index of a mapped task."""
    found = stack.api().api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
    instances: list[dict[str, Any]] = found["task_instances"]
    return instances


def executed_by(worker_log: str, run_id: str) -> dict[str, list[int]]:
    """task_id -> try numbers that this worker's log says it executed for `run_id`."""
    executed: dict[str, list[int]] = {}
    for line in worker_log.splitlines():
        if "Executing workload in Celery" not in line or f"run_id='{run_id}'" not in line:
            continue
        task = re.search(r"task_id='([^']+)'", line)
        attempt = re.search(r"try_number=(\d+)", line)
        if task and attempt:
            executed.setdefault(task.group(1), []).append(int(attempt.group(1)))
    return executed
