"""The registry through a real `mlflow server` on PostgreSQL: gate, promote, rollback, serve,
a server SIGKILLed in the middle of a registration, and two registrations racing for @champion.

Each test gets its own registered model name on one server whose backend store is a
throw-away `mt_test_<random>` database (dropped at the end) and whose artifacts live in tmp.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.paths import project_paths
from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.registry.commands import registry_main
from pipeline.registry.errors import RegistryError
from pipeline.registry.store import CHALLENGER, CHAMPION, Registry
from tests.conftest import REPO_ROOT
from tests.mlflow_server import (
    MlflowServer,
    ModelServer,
    prepare_registry_project,
    reference_lines,
    register_standin,
    wrong_every_other,
)
from tests.test_serving import assert_serves_champion

pytestmark = pytest.mark.slow

REFERENCES = reference_lines()
WEAK = wrong_every_other(REFERENCES, 0)
STRONG = list(REFERENCES)
# Right on a quarter of the lines, all of which WEAK gets right too: WEAK beats it (p < 0.05).
WEAKEST = [line if index % 4 == 1 else "Ein Hund." for index, line in enumerate(REFERENCES)]


@pytest.fixture(scope="module")
def server(shared_mlflow: MlflowServer) -> MlflowServer:
    """The test run's PostgreSQL-backed server (tests/conftest.py); models named per test."""
    return shared_mlflow


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


# --- two registrations racing for @champion ----------------------------------------------

REGISTER = (
    "import sys; from pathlib import Path; from tests.mlflow_server import reference_lines, "
    "register_standin; refs = reference_lines(); "
    "hyps = [line for line in Path(sys.argv[2]).read_text('utf-8').splitlines()]; "
    "register_standin(Path(sys.argv[1]), hyps, refs, actor=sys.argv[3])"
)
RACE_WAIT_S = 300  # a guard against a hung child, not a timing assertion


def start_registration(
    project: Path, hypotheses: list[str], who: str, pause_at: str, directory: Path
) -> subprocess.Popen[str]:
    """A registration of the stand-in in its own process, told to hold at `pause_at`."""
    hypotheses_file = directory / f"{who}.txt"
    hypotheses_file.write_text("".join(f"{line}\n" for line in hypotheses), "utf-8")
    env = {
        **os.environ,
        PAUSE_AT_ENV: pause_at,
        PAUSE_DIR_ENV: str(directory),
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    log = (directory / f"{who}.log").open("w")
    command = [sys.executable, "-c", REGISTER, str(project), str(hypotheses_file), who]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log, text=True)


def wait_until(done: Callable[[], bool], process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + RACE_WAIT_S
    while not done():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"exit {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def test_racing_registrations_never_leave_an_ungated_weaker_champion(
    project: Path, tmp_path: Path
) -> None:
    """STRONG decides against v1 and holds before its move; WEAK decides against v1 too and
    holds inside its move, holding the champion lock. STRONG, let go, waits for the lock;
    WEAK, let go, becomes champion. STRONG's compare-and-set then finds v3, not v1: it gates
    again, against WEAK, and wins. Without the lock WEAK would overwrite STRONG, ungated
    against it; without the compare-and-set STRONG would replace WEAK ungated."""
    register_standin(project, WEAKEST, REFERENCES)  # v1 champion
    gate_point, move_point = "registry.gate_decided", "registry.champion_move_recorded"
    strong = start_registration(project, STRONG, "strong", gate_point, tmp_path)
    wait_until(
        lambda: (tmp_path / f"{gate_point}.paused").exists(), strong, tmp_path / "strong.log"
    )
    weak = start_registration(project, WEAK, "weak", move_point, tmp_path)
    wait_until(lambda: (tmp_path / f"{move_point}.paused").exists(), weak, tmp_path / "weak.log")

    (tmp_path / f"{gate_point}.resume").touch()
    waiting = "waiting for the @champion lock"
    strong_log = tmp_path / "strong.log"
    wait_until(lambda: waiting in strong_log.read_text(errors="replace"), strong, strong_log)
    (tmp_path / f"{move_point}.resume").touch()
    exits = (weak.wait(timeout=RACE_WAIT_S), strong.wait(timeout=RACE_WAIT_S))
    assert exits == (0, 0), "\n".join(
        f"--- {who}.log:\n{(tmp_path / f'{who}.log').read_text(errors='replace')[-4000:]}"
        for who in ("weak", "strong")
    )

    registry = open_registry(project)
    assert str(registry.alias_version(CHAMPION).version) == "2"  # type: ignore[union-attr]
    tags = registry.version("2").tags
    assert (tags["gate.outcome"], tags["gate.champion_version"]) == ("promoted", "3")
    card = registry.version("2").description.splitlines()  # the verdict follows the re-gate
    assert ("- compared against champion: v3" in card, "- compared against champion: v1" in card) \
        == (True, False)  # fmt: skip
    assert "@champion is v3, not v1 the gate compared with: gating again" in (
        strong_log.read_text(errors="replace")
    )
    moves = registry.champion_moves()
    assert [(m.action, m.from_version, m.to_version, m.actor) for m in moves] == [
        ("gate", None, "1", "pytest"),
        ("gate", "1", "3", "weak"),
        ("gate", "3", "2", "strong"),
    ]
    assert all(m.status == "FINISHED" for m in moves)
