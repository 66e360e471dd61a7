"""pipeline/tracking.py: every MLflow call names its store, and nothing MLflow reads from
process-wide state (the fluent API's URIs, the HTTP retry settings) outlives the block that
set it: the registry's 4 retries and the checkpoint mirror's 1 never leak into each other."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel

from pipeline.paths import project_paths
from pipeline.registry.errors import RegistryError
from pipeline.registry.store import Registry
from pipeline.tracking import (
    ensure_experiment,
    fluent_store,
    load_pyfunc,
    mlflow_settings,
    model_metadata,
    redact,
    redacted,
    store_client,
    tracking_uri,
)
from pipeline.training.checkpoint_mirror import CheckpointMirror
from tests.conftest import REPO_ROOT
from tests.local_http import serving

VENV_BIN = Path(sys.executable).parent

MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_SETTINGS = (MAX_RETRIES, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def no_http_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No retry setting of the user's, so the modules' own policies are what is measured."""
    for name in HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def http_settings() -> dict[str, str]:
    return {name: os.environ[name] for name in HTTP_SETTINGS if name in os.environ}


# ------------------------------------------------------------------------- mlflow_settings


def test_settings_hold_inside_the_block_only() -> None:
    with mlflow_settings({MAX_RETRIES: "4", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}):
        assert http_settings() == {MAX_RETRIES: "4", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    assert http_settings() == {}


def test_a_value_the_user_set_wins_and_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_RETRIES, "2")
    with mlflow_settings({MAX_RETRIES: "4", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}):
        assert http_settings() == {MAX_RETRIES: "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    assert http_settings() == {MAX_RETRIES: "2"}


def test_an_inner_block_overrides_its_enclosing_block_then_gives_it_back() -> None:
    with mlflow_settings({MAX_RETRIES: "4"}):
        with mlflow_settings({MAX_RETRIES: "1"}):
            assert http_settings() == {MAX_RETRIES: "1"}
        assert http_settings() == {MAX_RETRIES: "4"}
    assert http_settings() == {}


def test_the_environment_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), mlflow_settings({MAX_RETRIES: "1"}):
        raise RuntimeError("boom")
    assert http_settings() == {}


# ------------------------------------------------------------------------- fluent_store


def test_the_fluent_store_is_the_blocks_and_the_users_uri_is_back_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    blocks = f"sqlite:///{tmp_path / 'block.db'}"
    with fluent_store(blocks):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (blocks, blocks)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (users, users)
    assert os.environ["MLFLOW_TRACKING_URI"] == users
    assert "MLFLOW_REGISTRY_URI" not in os.environ


def test_without_a_user_uri_none_is_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    default = mlflow.get_tracking_uri()
    with fluent_store(f"sqlite:///{tmp_path / 'block.db'}"):
        pass
    assert mlflow.get_tracking_uri() == default
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ


class Shout(PythonModel):
    def predict(self, context: object, model_input: pd.DataFrame) -> list[str]:
        return [text.upper() for text in model_input["text"]]


@pytest.mark.slow
def test_a_model_is_loaded_from_the_store_named_not_the_process_wide_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tracking_uri(project_paths(tmp_path))  # the project's SQLite default
    client = store_client(store)
    experiment_id = ensure_experiment(client, project_paths(tmp_path))
    with fluent_store(store):  # MLflow's SQL registry store finds the logged model through it
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.pyfunc.log_model(
                name="shout", python_model=Shout(), pip_requirements=["mlflow"]
            )
        client.create_registered_model("shout")
        version = client.create_model_version("shout", info.model_uri, model_id=info.model_id)
    client.set_registered_model_alias("shout", "champion", version.version)
    # What MLflow would resolve models:/ against on its own: another, empty store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")

    model = load_pyfunc(store, "models:/shout@champion")
    assert list(model.predict(pd.DataFrame({"text": ["a dog"]}))) == ["A DOG"]
    assert model_metadata(store, "models:/shout/1").model_id == info.model_id


# ---------------------------------------- the registry's and the mirror's retry policies


class Unavailable(BaseHTTPRequestHandler):
    """Answers every request 503, which MLflow's client retries; counts the requests."""

    def do_GET(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unavailable(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    """A "tracking server" that is always 503; retried at once (a user's backoff setting,
    which wins over both policies' 1 s), so a test takes no backoff time."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    with serving(Unavailable) as server:
        server.requests = 0  # type: ignore[attr-defined]
        yield server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def mirror_restore_requests(server: ThreadingHTTPServer, tmp_path: Path) -> int:
    """How many requests one checkpoint-mirror call sent to the unavailable server."""
    local = tmp_path / "checkpoints"
    local.mkdir(exist_ok=True)
    before = server.requests  # type: ignore[attr-defined]
    assert CheckpointMirror(url_of(server), "fp").restore(local, local_epoch=0) is False
    return int(server.requests - before)  # type: ignore[attr-defined]


def registry_connect_requests(
    server: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """How many requests one registry call sent to the unavailable server."""
    before = server.requests  # type: ignore[attr-defined]
    with monkeypatch.context() as scoped:
        scoped.setenv("MLFLOW_TRACKING_URI", url_of(server))
        with pytest.raises(RegistryError, match="connecting failed against the tracking store"):
            Registry.connect(project_paths(tmp_path), "m")
    return int(server.requests - before)  # type: ignore[attr-defined]


def test_a_connected_registry_leaves_no_retry_setting_and_the_mirror_keeps_its_one_retry(
    unavailable: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Registry.connect(project_paths(tmp_path), "m")  # the project's SQLite store answers
    assert MAX_RETRIES not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert mirror_restore_requests(unavailable, tmp_path) == 2  # the first try and 1 retry


def test_each_policy_holds_for_its_own_calls_whichever_ran_first(
    unavailable: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mirror_restore_requests(unavailable, tmp_path) == 2
    assert registry_connect_requests(unavailable, tmp_path, monkeypatch) == 5  # 4 retries
    assert mirror_restore_requests(unavailable, tmp_path) == 2
    assert MAX_RETRIES not in os.environ


def test_a_users_retry_setting_wins_over_both_policies(
    unavailable: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_RETRIES, "2")
    assert registry_connect_requests(unavailable, tmp_path, monkeypatch) == 3
    assert mirror_restore_requests(unavailable, tmp_path) == 3
    assert os.environ[MAX_RETRIES] == "2"


# --- credentials in a tracking URI never reach a message (issue 25) ----------------------------


def test_a_uri_is_shown_without_its_password() -> None:
    assert redact("https://mt:s3cret@mlflow.example:5000") == "https://mt:***@mlflow.example:5000"
    assert redact("postgresql+psycopg2://mt:pw@db:5432/mlflow") == (
        "postgresql+psycopg2://mt:***@db:5432/mlflow"
    )
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact("sqlite:////srv/mt/mlruns.db") == "sqlite:////srv/mt/mlruns.db"
    assert redacted("GET http://mt:s3cret@h/api failed", "http://mt:s3cret@h") == (
        "GET http://mt:***@h/api failed"
    )


def test_a_store_that_does_not_answer_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    from pipeline.registry.store import registry_call

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = "http://mt:hunter2-secret@127.0.0.1:1"  # nothing listens on port 1
    with pytest.raises(RegistryError) as refused, registry_call(uri, "listing models"):
        MlflowClient(uri, uri).search_registered_models()
    message = str(refused.value)
    assert message.startswith("listing models failed against the tracking store http://mt:***@")
    assert "hunter2-secret" not in message


def test_a_database_store_that_does_not_answer_is_one_line_at_once(tmp_path: Path) -> None:
    """MLflow's SQL store would retry for ~100 s and end in SQLAlchemy's traceback."""
    uri = "postgresql://mt:hunter2-secret@127.0.0.1:1/mt"  # nothing listens on port 1
    done = subprocess.run(
        [str(VENV_BIN / "mt"), "registry", "list"],
        cwd=REPO_ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "hunter2-secret" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].split("ERROR pipeline.cli: ")[1] == (
        "registry failed: connecting failed against the tracking store "
        "postgresql://mt:***@127.0.0.1:1/mt: its database does not answer: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused (fix: check '
        "that the MLflow server is up, and its database: HTTP 500s come from a database it "
        "cannot reach, and that MLFLOW_TRACKING_URI is right, then re-run: the rerun picks up "
        "where this one stopped)"
    )


@pytest.mark.parametrize(
    ("message", "lost_race"),
    [
        (  # what CI's sweep point got from `mlflow server` on PostgreSQL (two points at once)
            "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates unique "
            'constraint "dataset_pk" DETAIL: Key (experiment_id, name, digest)=(1, train, 0c5e)',
            True,
        ),
        (
            "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
            "datasets.name, datasets.digest",
            True,
        ),
        ('duplicate key value violates unique constraint "runs_pk"', False),
        (
            "API request to endpoint /api/2.0/mlflow/runs/log-inputs failed with error code 503",
            False,
        ),
    ],
    ids=["postgres", "sqlite", "another-key", "unavailable"],
)
def test_only_a_lost_race_to_create_a_dataset_is_logged_again(
    message: str, lost_race: bool
) -> None:
    from pipeline.training.tracking import created_by_another_run

    assert created_by_another_run(message) is lost_race


FIRST_USE_PROBE = """
import sys, time
from pathlib import Path
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store
from pipeline.tracking import store_client

uri, go, name = sys.argv[1:]
while not Path(go).exists():  # every process ready before any touches the store
    time.sleep(0.01)
print(store_client(uri).create_experiment(name))
"""
FIRST_USERS = 3


def test_processes_first_using_a_new_sqlite_store_at_once_all_get_a_working_store(
    tmp_path: Path,
) -> None:
    """Two DAG runs' `train` starting together on a new project store: without the flock,
    both ran MLflow's migrations and broke it (`_alembic_tmp_metrics already exists`)."""
    uri, go = f"sqlite:///{tmp_path / 'mlruns.db'}", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    users = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE_PROBE, uri, str(go), f"first-use-{n}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(FIRST_USERS)
    ]
    go.touch()
    outcomes = [user.communicate(timeout=300) for user in users]
    assert [user.returncode for user in users] == [0] * FIRST_USERS, [
        e[-800:] for _, e in outcomes
    ]
    names = {e.name for e in mlflow.MlflowClient(uri).search_experiments()}
    assert names == {"Default", *(f"first-use-{n}" for n in range(FIRST_USERS))}
