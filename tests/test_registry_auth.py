"""Who may promote: a real `mlflow server --app-name basic-auth` with the compose stack's config.

One server for the module (SQLite stores in tmp, the user database where the test's copy of
docker/mlflow-basic-auth.ini points). `mt mlflow-users` provisions the accounts as the admin;
everything else logs in through the standard MLFLOW_TRACKING_USERNAME / _PASSWORD variables,
which MLflow's client reads on every request.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.server.auth.client import AuthServiceClient

from pipeline import cli
from pipeline.config import _load_cached
from pipeline.paths import project_paths
from pipeline.registry import auth_setup
from pipeline.registry.commands import registry_main
from pipeline.registry.errors import RegistryError
from pipeline.registry.lock import champion_lock, lock_name
from pipeline.registry.store import CHALLENGER, CHAMPION, Registry
from tests import lock_process
from tests.conftest import write_params
from tests.mlflow_server import (
    BasicAuth,
    MlflowServer,
    reference_lines,
    register_standin,
)

DOCKER_AUTH_CONFIG = Path(__file__).resolve().parents[1] / "docker" / "mlflow-basic-auth.ini"
ADMIN_PASSWORD = "admin-password-for-this-test"
PASSWORDS = {"mt-pipeline": "pipeline-password-1", "mt-promoter": "promoter-password-1"}
REFERENCES = reference_lines()
FIX_403 = (
    "fix: run it as an account that holds this right, or have an MLflow admin grant it "
    "(`mt mlflow-users`; see 'Who may promote' in docs/registry.md)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    directory = tmp_path_factory.mktemp("mlflow-auth-server")
    auth = BasicAuth.write(directory / "auth", ADMIN_PASSWORD, template=DOCKER_AUTH_CONFIG)
    backend = f"sqlite:///{directory / 'mlruns.db'}"
    server = MlflowServer(backend, directory / "artifacts", directory / "server.log", auth=auth)
    try:
        yield server.start()
    finally:
        server.kill()  # its stores are throw-away files: no graceful shutdown to wait for


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    project_dir: Path,
    server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A project on the server with a model of its own; promotion policy manual."""
    for var in ("AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    register = {
        "model_name": request.node.name[:60].replace("_", "-"),
        "policy": "manual",
        "min_score": 20.0,
        "bootstrap_resamples": 200,
    }
    write_params(project_dir, {"register": register})
    _load_cached.cache_clear()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MT_PIPELINE_PASSWORD", PASSWORDS["mt-pipeline"])
    monkeypatch.setenv("MT_PROMOTER_PASSWORD", PASSWORDS["mt-promoter"])
    log_in(monkeypatch, None)
    return project_dir


def log_in(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str = "") -> None:
    """Set (or clear, for None) the login MLflow's client sends."""
    if user is None:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        return
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS.get(user, ""))


def model_name() -> str:
    from pipeline.config import load_config

    return load_config().register.model_name


def open_registry(project: Path) -> Registry:
    return Registry.connect(project_paths(project), model_name())


def test_anonymous_requests_and_wrong_passwords_are_refused(
    server: MlflowServer, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = f"{server.url}/api/2.0/mlflow/registered-models/search"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(search, timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'

    with pytest.raises(RegistryError) as anonymous:
        open_registry(project)
    assert str(anonymous.value) == (
        f"the tracking server {server.url} wants a login (HTTP 401 UNAUTHENTICATED) while "
        "connecting; fix: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an "
        "account on it"
    )
    log_in(monkeypatch, "admin", "not-the-admin-password")
    with pytest.raises(RegistryError) as wrong:
        open_registry(project)
    assert str(wrong.value) == (
        f"the tracking server {server.url} rejected the login of user 'admin' (HTTP 401 "
        "UNAUTHENTICATED: wrong password, or no such user) while connecting; fix: set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server"
    )


def test_mlflow_users_provisions_the_accounts_and_a_rerun_changes_only_what_differs(
    server: MlflowServer,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = model_name()
    users = ["--pipeline-user", "pipeline-idem", "--promoter-user", "promoter-idem"]
    log_in(monkeypatch, "admin", ADMIN_PASSWORD)
    assert auth_setup.main(users) == 0
    assert capsys.readouterr().out.splitlines() == [
        "user pipeline-idem: created",
        "  EDIT   on experiment translation: granted",
        "  EDIT   on experiment registry-audit: granted",
        f"  EDIT   on registered model {name}: granted",
        "user promoter-idem: created",
        "  READ   on experiment translation: unchanged",  # the server's default_permission
        "  EDIT   on experiment registry-audit: granted",
        f"  MANAGE on registered model {name}: granted",
        "role mt-champion-lock: created",
        f"  EDIT   on registered model {name}.champion-lock: granted",
        "  member pipeline-idem: added",
        "  member promoter-idem: added",
    ]
    # A rerun changes only what differs: here the pipeline's right on the audit trail.
    assert auth_setup.main([*users, "--separate-promotion"]) == 0
    separated = capsys.readouterr().out.splitlines()
    assert [line for line in separated if not line.endswith(": unchanged")] == [
        "user pipeline-idem: password set",
        "  READ   on experiment registry-audit: granted",
        "user promoter-idem: password set",
    ]
    # The admin created the model, so the pipeline holds EDIT on it, not the creator's MANAGE.
    admin = AuthServiceClient(server.url)
    granted = admin.get_user_permission("pipeline-idem", "registered_model", name)
    assert granted.permission == "EDIT"
    assert admin.get_user_permission("promoter-idem", "registered_model", name).permission == (
        "MANAGE"
    )


def test_mlflow_users_refuses_without_a_server_or_a_password(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MT_PIPELINE_PASSWORD", PASSWORDS["mt-pipeline"])
    monkeypatch.setenv("MT_PROMOTER_PASSWORD", "short")
    assert cli.main(["mlflow-users"]) == 2
    assert caplog.messages[-1].startswith("mlflow-users failed: MLFLOW_TRACKING_URI is sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # never contacted
    assert cli.main(["mlflow-users"]) == 2
    assert caplog.messages[-1] == (
        "mlflow-users failed: MT_PROMOTER_PASSWORD is shorter than 12 characters: it is the "
        "password of the MLflow user 'mt-promoter'; fix: set it (docker/make-env.sh writes one "
        "into docker/.env); nothing was changed"
    )


def test_pipeline_registers_promoter_promotes_and_the_pipeline_cannot(
    server: MlflowServer,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    log_in(monkeypatch, "admin", ADMIN_PASSWORD)
    assert auth_setup.main(["--separate-promotion"]) == 0

    log_in(monkeypatch, "mt-pipeline")
    result = register_standin(project, list(REFERENCES), REFERENCES, actor="pipeline")
    assert (result.version, result.decision.outcome) == ("1", "awaiting_approval")
    caplog.clear()
    assert cli.main(["registry", "promote", "1"]) == 2  # `mt registry promote 1`
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.levelname == "ERROR"] == [
        (
            "ERROR",
            f"registry failed: the tracking server {server.url} refused user 'mt-pipeline' "
            "(HTTP 403 PERMISSION_DENIED: 'Permission denied') while moving @champion to "
            f"version 1; {FIX_403}",
        )
    ]
    registry = open_registry(project)
    assert registry.alias_version(CHAMPION) is None
    assert registry.recorded_moves() == []

    log_in(monkeypatch, "mt-promoter")
    capsys.readouterr()
    assert registry_main(["promote", "1", "--reason", "reviewed"]) == 0
    assert capsys.readouterr().out.endswith(f"\n@champion of {model_name()}: v- -> v1\n")
    registry = open_registry(project)
    assert str(registry.alias_version(CHAMPION).version) == "1"  # type: ignore[union-attr]
    assert str(registry.alias_version(CHALLENGER).version) == "1"  # type: ignore[union-attr]
    moves = registry.recorded_moves()
    assert [(m.action, m.to_version, m.status, m.reason) for m in moves] == [
        ("promote", "1", "FINISHED", "reviewed")
    ]


# --- the champion lock between mt's two accounts (issue 25) ---------------------------------


def lock_holder_as(user: str, model: str) -> subprocess.Popen[str]:
    """A process holding the champion lock with `user`'s login."""
    login = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": PASSWORDS[user]}
    return lock_process.start_holder(model, env=lock_process.environ(**login))


def kill(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def test_either_account_takes_over_the_lock_the_others_killed_process_left(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's creator gets MANAGE on it, and MLflow deletes a model's user grants with it
    and moves them with a rename: only the role `mt mlflow-users` makes lets the other account
    rename (take over) it, every time."""
    log_in(monkeypatch, "admin", ADMIN_PASSWORD)
    assert auth_setup.main([]) == 0
    name, client = lock_name(model_name()), MlflowClient()
    tokens = []
    for user in ("mt-pipeline", "mt-promoter"):  # each takes over the lock the other left
        holder = lock_holder_as(user, model_name())
        tokens.append(client.get_registered_model(name).tags["token"])
        kill(holder)
    log_in(monkeypatch, "mt-pipeline")
    with champion_lock(open_registry(project), "the pipeline again", wait_s=5):
        assert client.get_registered_model(name).tags["holder"] == "the pipeline again"
    stale = [client.get_registered_model(f"{name}.stale.{token}") for token in tokens]
    assert [model.tags["token"] for model in stale] == tokens
    assert not client.search_registered_models(f"name = '{name}'")


def test_an_account_without_the_lock_role_is_refused_taking_over_in_one_line(
    server: MlflowServer, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_in(monkeypatch, "admin", ADMIN_PASSWORD)
    assert auth_setup.main([]) == 0
    AuthServiceClient(server.url).create_user("lock-outsider", "outsider-password-1")
    kill(lock_holder_as("mt-promoter", model_name()))
    log_in(monkeypatch, "lock-outsider", "outsider-password-1")
    name, registry = lock_name(model_name()), open_registry(project)
    with pytest.raises(RegistryError) as refused, champion_lock(registry, "outsider", wait_s=5):
        pass
    message = str(refused.value)
    assert message.startswith(f"the @champion lock {name} is held by holder (pid ")
    assert message.endswith(
        "which is gone, but the tracking server refused user 'lock-outsider' taking it over "
        "(HTTP 403 PERMISSION_DENIED on renaming it); nothing moved; fix: an MLflow admin runs "
        f"`mt mlflow-users` (its role mt-champion-lock gives mt's accounts EDIT on {name}), or "
        f"deletes registered model {name} once no mt command runs"
    )
    assert MlflowClient().get_registered_model(name).tags["holder"] == "holder"
