"""Helpers for the Airflow tests: a throw-away project, a real Airflow, its REST API.

Everything Airflow-side runs in child processes with its own AIRFLOW_HOME, so the tests never
touch ~/airflow or a developer's `make airflow` instance, and every process group is killed in
teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.conftest import REPO_ROOT, TINY_OVERRIDES, deep_merge

DAG_ID = "retrain_translation"
VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 300  # Airflow takes 60+ s to come up on a loaded 2-core machine
TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_project(root: Path, corpus_dir: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A git + DVC project that runs the real stages on `corpus_dir` with tiny params.

    The pipeline code is copied (dvc.yaml lists it as a dependency); `.venv` links to the repo's
    so the DAG finds `dvc` and `mt` where it looks for them.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, root / name)
    shutil.copytree(
        REPO_ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / ".venv").symlink_to(REPO_ROOT / ".venv")
    source = {"data": {"source": "dir", "path": str(corpus_dir)}}
    params = deep_merge(deep_merge(_repo_params(), TINY_OVERRIDES), source)
    params = deep_merge(params, overrides or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / ".gitignore").write_text(".venv\nmlruns.db\nmlartifacts/\n", encoding="utf-8")
    _init_git_and_dvc(root)
    return root


def _repo_params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text("utf-8"))
    return loaded


def _init_git_and_dvc(root: Path) -> None:
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    run = {"cwd": root, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **run)  # type: ignore[call-overload]
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], **run)  # type: ignore[call-overload]
    subprocess.run(["git", "add", "-A"], **run)  # type: ignore[call-overload]
    subprocess.run([*git, "commit", "-q", "-m", "tiny project"], **run)  # type: ignore[call-overload]


def base_env(home: Path, project: Path, db_url: str) -> dict[str, str]:
    """Environment of every Airflow process: its own home and DB, our DAG, the tiny project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            # A loaded 2-core CI machine can take longer than the default 5 s to answer the
            # task supervisor's execution-API calls; a task must not fail before it starts.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "MT_PROJECT_DIR": str(project),
            "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
            "CI": "true",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    return env


@dataclass
class AirflowServer:
    """A running `airflow standalone` and an authenticated REST API v2 client."""

    base_url: str
    username: str
    password: str
    log_file: Path
    token: str = ""

    def login(self) -> None:
        response = requests.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=30,
        )
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        response = requests.request(
            method, f"{self.base_url}/api/v2{path}", headers=headers, timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout_s: float = 240) -> dict[str, Any]:
        """The DAG once the dag-processor has parsed it (import errors fail at once)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            errors = self.api("GET", "/importErrors")["import_errors"]
            assert not errors, f"DAG import errors: {errors}"
            with contextlib.suppress(requests.HTTPError):
                dag: dict[str, Any] = self.api("GET", f"/dags/{dag_id}")
                return dag
            time.sleep(3)
        raise TimeoutError(f"{dag_id} not parsed within {timeout_s}s; see {self.log_file}")

    def trigger(self, conf: dict[str, Any], dag_id: str = DAG_ID) -> str:
        body = {"logical_date": None, "conf": conf}
        run: dict[str, Any] = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def emit_asset_event(self, asset_name: str, extra: dict[str, Any]) -> None:
        """What a data producer does when new raw data has landed."""
        found = self.api("GET", "/assets", params={"name_pattern": asset_name})["assets"]
        asset_id = next(asset["id"] for asset in found if asset["name"] == asset_name)
        self.api("POST", "/assets/events", json={"asset_id": asset_id, "extra": extra})

    def run_ids(self, dag_id: str = DAG_ID) -> set[str]:
        return {
            run["dag_run_id"] for run in self.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
        }

    def wait_for_new_run(
        self,
        run_type: str,
        timeout_s: float,
        dag_id: str = DAG_ID,
        known: frozenset[str] = frozenset(),
    ) -> str:
        """The id of the first run of `run_type` (e.g. asset_triggered) not in `known`, once it
        exists."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = self.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
            matching = [
                run["dag_run_id"]
                for run in runs
                if run["run_type"] == run_type and run["dag_run_id"] not in known
            ]
            if matching:
                return str(matching[0])
            time.sleep(3)
        raise TimeoutError(f"no {run_type} run of {dag_id} within {timeout_s}s")

    def wait_for_run(self, run_id: str, timeout_s: float, dag_id: str = DAG_ID) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in TERMINAL_RUN_STATES:
                return str(state)
            time.sleep(5)
        raise TimeoutError(f"run {run_id} still running after {timeout_s}s")

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in found["task_instances"]}

    def task_log(self, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        payload = self.api("GET", path, params={"full_content": "true"})
        return "\n".join(strings_in(payload["content"]))


def strings_in(value: Any) -> Iterator[str]:
    """Every string of a structured task log: each line's event, and the exception's message
    and other fields beside it."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def _wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited ({process.returncode}); see {log}")
        with contextlib.suppress(requests.RequestException):
            health = requests.get(f"{base_url}/api/v2/monitor/health", timeout=5).json()
            if health.get("scheduler", {}).get("status") == "healthy":
                return
        time.sleep(3)
    raise TimeoutError(f"Airflow not healthy after {STARTUP_TIMEOUT_S}s; see {log}")


def _read_password(home: Path, username: str) -> str:
    generated = home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 60
    while not generated.is_file() and time.monotonic() < deadline:
        time.sleep(1)
    return str(json.loads(generated.read_text(encoding="utf-8"))[username])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the whole process group: standalone's api-server, scheduler, workers, ..."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@contextlib.contextmanager
def airflow_standalone(
    home: Path, project: Path, db_url: str, extra_env: dict[str, str] | None = None
) -> Iterator[AirflowServer]:
    """`airflow standalone` on a free port of 127.0.0.1, its own process group; `extra_env`
    adds to (or overrides) its environment, e.g. an Airflow connection as AIRFLOW_CONN_*."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = base_env(home, project, db_url)
    env.update(
        {
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            **(extra_env or {}),
        }
    )
    log = home / "standalone.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "standalone"],
            env=env,
            cwd=home,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_healthy(base_url, process, log)
        server = AirflowServer(base_url, "admin", _read_password(home, "admin"), log)
        server.login()
        yield server
    finally:
        _stop(process)


def registered_versions(project: Path, model_name: str) -> list[str]:
    """Version numbers of `model_name` in the project's MLflow store (SQLite)."""
    db = project / "mlruns.db"
    if not db.is_file():
        return []
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.search_model_versions(f"name = '{model_name}'")
    return sorted((str(v.version) for v in found), key=int)
