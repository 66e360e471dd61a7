"""The registry through a real `mlflow server` on PostgreSQL: gate, promote, rollback, serve,
and a server SIGKILLed in the middle of a registration.

Each test gets its own registered model name on one server whose backend store is a
throw-away `mt_test_<random>` database (dropped at the end) and whose artifacts live in tmp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.paths import project_paths
from pipeline.registry.commands import registry_main
from pipeline.registry.errors import RegistryError
from pipeline.registry.store import CHALLENGER, CHAMPION, Registry
from tests.mlflow_server import (
    MlflowServer,
    ModelServer,
    prepare_registry_project,
    reference_lines,
    register_standin,
    wrong_every_other,
)
from tests.postgres import postgres_database
from tests.test_serving import assert_serves_champion

pytestmark = pytest.mark.slow

REFERENCES = reference_lines()
WEAK = wrong_every_other(REFERENCES, 0)
STRONG = list(REFERENCES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    directory = tmp_path_factory.mktemp("mlflow-server")
    with postgres_database() as backend_uri:
        server = MlflowServer(backend_uri, directory / "artifacts", directory / "server.log")
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    project_dir: Path,
    server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A project whose MLflow store is the server, with a model name of its own."""
    prepare_registry_project(project_dir, monkeypatch, model_name=request.node.name[:60])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    return project_dir


def open_registry(project: Path) -> Registry:
    from pipeline.config import load_config

    return Registry.connect(project_paths(project), load_config().register.model_name)


def test_gate_promote_and_rollback_through_the_server(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = register_standin(project, WEAK, REFERENCES)
    second = register_standin(project, STRONG, REFERENCES)
    assert (first.decision.outcome, second.decision.outcome) == ("promoted", "promoted")
    assert second.decision.p_value is not None and second.decision.p_value < 0.05
    capsys.readouterr()
    assert registry_main(["rollback", "--reason", "regression in prod"]) == 0
    assert capsys.readouterr().out.endswith("rolled back: v2 -> v1\n")
    registry = open_registry(project)
    assert str(registry.alias_version(CHAMPION).version) == "1"  # type: ignore[union-attr]
    assert str(registry.alias_version(CHALLENGER).version) == "2"  # type: ignore[union-attr]
    moves = registry.champion_moves()
    assert [(m.action, m.from_version, m.to_version) for m in moves] == [
        ("gate", None, "1"),
        ("gate", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert moves[2].reason == "regression in prod"
    assert registry.version("2").tags["params"].startswith('{"clean"')


def test_champion_is_served_from_the_postgres_registry(
    project: Path, server: MlflowServer, tmp_path: Path
) -> None:
    register_standin(project, STRONG, REFERENCES)
    name = open_registry(project).name
    served = ModelServer(f"models:/{name}@champion", server.url, tmp_path / "serve.log", tmp_path)
    try:
        assert_serves_champion(served.start())
    finally:
        served.stop()


def kill_after(step: str, server: MlflowServer) -> Callable[[str], None]:
    def on_step(name: str) -> None:
        if name == step:
            server.kill()

    return on_step


def test_server_killed_mid_registration_leaves_no_orphans(
    project: Path, server: MlflowServer
) -> None:
    register_standin(project, WEAK, REFERENCES)  # v1, champion
    with pytest.raises(RegistryError, match=f"against the tracking store {server.url}"):
        register_standin(project, STRONG, REFERENCES, on_step=kill_after("logged", server))
    server.start()
    registry = open_registry(project)
    assert [str(v.version) for v in registry.versions()] == ["1"]
    assert str(registry.alias_version(CHAMPION).version) == "1"  # type: ignore[union-attr]
    assert str(registry.alias_version(CHALLENGER).version) == "1"  # type: ignore[union-attr]
    assert [m.to_version for m in registry.champion_moves()] == ["1"]
    again = register_standin(project, STRONG, REFERENCES)
    assert (again.version, again.decision.outcome, again.champion_after) == ("2", "promoted", "2")
    assert registry.version("2").tags["gate.outcome"] == "promoted"
