"""Faults and stale inputs of `mt register` / `mt registry`, each injected for real.

- evaluate's outputs that do not belong together, or not to the model being registered
  (edited, replaced, or left half-swapped by a SIGKILLed `mt evaluate`): refused, nothing
  registered;
- a `mt registry promote` or a gate's `@champion` move SIGKILLed between its audit entry and
  the alias move (or after the move, before the entry is finished): the next command settles
  the entry against the alias, and the rerun finishes the job without a second version;
- the MLflow server's PostgreSQL stopped (a private cluster) in the middle of a registration:
  no half-made version survives a rerun, and the rerun succeeds.

Kills happen at named pause points (pipeline/pause_points.py) in real `mt` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import _load_cached, load_config
from pipeline.eval_provenance import (
    EvaluatedModel,
    StaleEvaluationError,
    check_model_matches,
)
from pipeline.paths import project_paths
from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.registry.errors import RegistryError
from pipeline.registry.store import CHALLENGER, CHAMPION, Registry, champion_stack
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, write_params
from tests.mlflow_server import (
    GATE_SPLIT,
    MlflowServer,
    prepare_registry_project,
    reference_lines,
    register_standin,
    write_evaluation,
    wrong_every_other,
)
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.test_evaluate import write_test_split
from tests.tiny_translator import MEMORISED_PAIRS, memorised_model_dir

REFERENCES = reference_lines()
STRONG = list(REFERENCES)
WEAK = wrong_every_other(REFERENCES, 0)
OTHER_WEAK = wrong_every_other(REFERENCES, 1)
RERUN = "rerun `dvc repro evaluate` (or `mt evaluate`); nothing was registered"
PAUSE_WAIT_S = 600  # a guard against a hung child, not a timing assertion


@pytest.fixture
def registry_project(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return prepare_registry_project(project_dir, monkeypatch)


def open_registry() -> Registry:
    return Registry.connect(project_paths(), load_config().register.model_name)


def alias(registry: Registry, name: str) -> str | None:
    version = registry.alias_version(name)
    return None if version is None else str(version.version)


# --- processes held at a pause point, then SIGKILLed --------------------------------------


def start_paused(args: list[str], point: str, pause_dir: Path) -> subprocess.Popen[bytes]:
    """`python ARGS` in this test's project, told to hold at `point`."""
    env = {
        **os.environ,
        PAUSE_AT_ENV: point,
        PAUSE_DIR_ENV: str(pause_dir),
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    log = (pause_dir / f"{point}.log").open("wb")
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=log)


def kill_at(process: subprocess.Popen[bytes], point: str, pause_dir: Path) -> None:
    """Wait until `process` holds at `point`, then SIGKILL it and reap it."""
    marker = pause_dir / f"{point}.paused"
    deadline = time.monotonic() + PAUSE_WAIT_S
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = (pause_dir / f"{point}.log").read_text(errors="replace")
            pytest.fail(f"never reached {point} (exit {process.returncode}):\n{log[-3000:]}")
        time.sleep(0.1)
    assert marker.read_text() == str(process.pid)
    process.kill()
    assert process.wait() == -9


# --- evaluate's outputs: mismatches refused before anything is written ----------------------


def corrupt_metrics(root: Path) -> None:
    metrics = json.loads((root / "metrics.json").read_text("utf-8"))
    metrics[GATE_SPLIT]["bleu"] = 99.0
    (root / "metrics.json").write_text(json.dumps(metrics), "utf-8")


def corrupt_hypotheses(root: Path) -> None:
    with (root / "reports" / "eval" / "hypotheses" / f"{GATE_SPLIT}.txt").open("a") as handle:
        handle.write("Ein Hund.\n")


def corrupt_references(root: Path) -> None:
    reference = root / "data" / "raw" / f"{GATE_SPLIT}.de"
    reference.write_text(reference.read_text("utf-8").replace("Hund", "Katze"), "utf-8")


def drop_provenance(root: Path) -> None:
    (root / "reports" / "eval" / "provenance.json").unlink()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (corrupt_metrics, "is not the metrics.json written with"),
        (corrupt_hypotheses, "is changed since evaluate wrote it"),
        (corrupt_references, f"is changed since evaluate scored {GATE_SPLIT} against it"),
        (drop_provenance, "provenance.json: missing, so nothing says which model"),
    ],
    ids=["metrics", "hypotheses", "references", "no-provenance"],
)
def test_register_refuses_evaluation_outputs_that_do_not_belong_together(
    registry_project: Path,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[Path], None],
    message: str,
) -> None:
    write_evaluation(registry_project, WEAK, REFERENCES)
    corrupt(registry_project)
    assert cli.main(["register"]) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.startswith("register failed: ") and message in error and error.endswith(RERUN)
    assert "\n" not in error
    assert not (registry_project / "mlruns.db").exists()  # the store was never opened
    assert not (registry_project / "reports" / "registration.json").exists()


def test_register_refuses_a_model_that_evaluate_did_not_measure(
    registry_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_evaluation(registry_project, WEAK, REFERENCES)  # provenance: the stand-in's hashes
    (registry_project / "models" / "tokenizer").mkdir(parents=True)
    (registry_project / "models" / "seq2seq.keras").write_bytes(b"a model trained later")
    assert cli.main(["register"]) == 2
    assert (
        "models/seq2seq.keras (sha256 4ad01591559d) is not what metrics.json and reports/eval "
        f"were computed from (sha256 stand-in); {RERUN}"
    ) in caplog.text
    assert not (registry_project / "mlruns.db").exists()


def test_changed_decoding_params_are_refused_naming_each_change() -> None:
    evaluated = EvaluatedModel("m", "t", {"beam_size": 5, "length_penalty": 0.6})
    check_model_matches(evaluated, evaluated)
    now = EvaluatedModel("m", "t", {"beam_size": 2, "length_penalty": 0.6})
    with pytest.raises(StaleEvaluationError) as refused:
        check_model_matches(evaluated, now)
    assert str(refused.value) == (
        f"params.yaml `decode:` changed since evaluate ran (beam_size 5 -> 2); {RERUN}"
    )


# --- a SIGKILLed `mt evaluate` between (or inside) its output renames ----------------------


@pytest.fixture
def evaluated_project(project_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The memorised tiny model, its test split, and one complete `mt evaluate`."""
    write_params(project_dir, TINY_OVERRIDES)
    _load_cached.cache_clear()
    shutil.copytree(memorised_model_dir(tmp_path_factory), project_dir / "models")
    write_test_split(project_dir, MEMORISED_PAIRS[:10])
    assert cli.main(["evaluate"]) == 0
    return project_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "refusal"),
    [
        ("evaluate.between_outputs", "is not the metrics.json written with"),
        ("atomic.old_moved_aside.eval", "provenance.json: missing"),
    ],
    ids=["between-outputs", "inside-eval-swap"],
)
def test_evaluate_killed_during_its_output_swap_is_not_trusted(
    evaluated_project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    point: str,
    refusal: str,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resamples = {"evaluate": {**TINY_OVERRIDES["evaluate"], "bootstrap_resamples": 60}}
    write_params(evaluated_project, {**TINY_OVERRIDES, **resamples})  # new metrics.json
    _load_cached.cache_clear()
    old_metrics = (evaluated_project / "metrics.json").read_text("utf-8")
    kill_at(start_paused(["-m", "pipeline.cli", "evaluate"], point, tmp_path), point, tmp_path)
    assert (evaluated_project / "metrics.json").read_text("utf-8") == old_metrics

    assert cli.main(["register"]) == 2
    assert refusal in caplog.text and RERUN in caplog.text
    assert not (evaluated_project / "mlruns.db").exists()

    assert cli.main(["evaluate"]) == 0  # the rerun: whole outputs again, leftovers gone
    metrics = json.loads((evaluated_project / "metrics.json").read_text("utf-8"))
    assert metrics[GATE_SPLIT]["signatures"]["bleu"].startswith("nrefs:1|bs:60|")
    assert sorted(p.name for p in (evaluated_project / "reports").iterdir()) == ["eval"]
    assert cli.main(["register"]) == 0
    report = json.loads((evaluated_project / "reports" / "registration.json").read_text())
    assert (report["version"], report["registration"]) == ("1", "created")


@pytest.mark.slow
def test_register_refuses_a_model_trained_or_params_changed_after_evaluate(
    evaluated_project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = evaluated_project / "models" / "seq2seq.keras"
    evaluated_bytes = model.read_bytes()
    model.write_bytes(evaluated_bytes + b"retrained")  # what a later `mt train` leaves
    assert cli.main(["register"]) == 2
    retrained = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    evaluated = hashlib.sha256(evaluated_bytes).hexdigest()[:12]
    assert (
        f"models/seq2seq.keras (sha256 {retrained}) is not what metrics.json and reports/eval "
        f"were computed from (sha256 {evaluated}); {RERUN}"
    ) in caplog.text
    model.write_bytes(evaluated_bytes)
    caplog.clear()
    beam_one = {"decode": {**TINY_OVERRIDES["decode"], "beam_size": 1}}
    write_params(evaluated_project, {**TINY_OVERRIDES, **beam_one})
    _load_cached.cache_clear()
    assert cli.main(["register"]) == 2
    assert f"changed since evaluate ran (beam_size 2 -> 1); {RERUN}" in caplog.text
    assert not (evaluated_project / "mlruns.db").exists()


# --- a SIGKILLed @champion move: promote, and the gate's move inside a registration ---------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "settled_as", "champion_after_kill"),
    [
        ("registry.champion_move_recorded", "FAILED", "1"),
        ("registry.champion_alias_moved", "FINISHED", "2"),
    ],
    ids=["before-alias-move", "after-alias-move"],
)
def test_promote_killed_around_the_alias_move_is_settled_and_rerun(
    registry_project: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    point: str,
    settled_as: str,
    champion_after_kill: str,
) -> None:
    register_standin(registry_project, WEAK, REFERENCES)  # v1 champion
    register_standin(registry_project, OTHER_WEAK, REFERENCES)  # v2 rejected
    promote = ["-m", "pipeline.cli", "registry", "promote", "2", "--reason", "hotfix"]
    kill_at(start_paused(promote, point, tmp_path), point, tmp_path)

    registry = open_registry()
    assert alias(registry, CHAMPION) == champion_after_kill
    assert [m.status for m in registry.recorded_moves()] == ["FINISHED", "RUNNING"]

    capsys.readouterr()
    assert cli.main(["registry", "history"]) == 0  # the next command settles the entry
    last = capsys.readouterr().out.splitlines()[-1]
    assert f"promote  v1 -> v2  [{settled_as}]  by " in last and last.endswith(": hotfix")
    moves = registry.recorded_moves()
    assert [m.status for m in moves] == ["FINISHED", settled_as]
    assert champion_stack(moves)[-1] == alias(registry, CHAMPION) == champion_after_kill

    assert cli.main(["registry", "promote", "2", "--reason", "hotfix"]) == 0  # the rerun
    assert champion_stack(registry.recorded_moves())[-1] == alias(registry, CHAMPION) == "2"
    assert cli.main(["registry", "rollback", "--reason", "check"]) == 0
    assert alias(registry, CHAMPION) == "1"


REGISTER_STRONG = (
    "import sys; from pathlib import Path; from tests.mlflow_server import reference_lines, "
    "register_standin; refs = reference_lines(); register_standin(Path(sys.argv[1]), refs, refs)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "statuses"),
    [
        ("registry.champion_move_recorded", ["FINISHED", "FAILED", "FINISHED"]),
        ("registry.champion_alias_moved", ["FINISHED", "FINISHED"]),
    ],
    ids=["before-alias-move", "after-alias-move"],
)
def test_registration_killed_at_the_gates_move_is_finished_by_the_rerun(
    registry_project: Path, tmp_path: Path, point: str, statuses: list[str]
) -> None:
    register_standin(registry_project, WEAK, REFERENCES)  # v1 champion
    command = ["-c", REGISTER_STRONG, str(registry_project)]
    kill_at(start_paused(command, point, tmp_path), point, tmp_path)
    registry = open_registry()
    assert registry.version("2").tags["registration.state"] == "created"

    again = register_standin(registry_project, STRONG, REFERENCES)
    assert (again.action, again.version, again.decision.outcome) == ("resumed", "2", "promoted")
    assert [str(v.version) for v in registry.versions()] == ["2", "1"]
    assert registry.version("2").tags["registration.state"] == "complete"
    moves = registry.recorded_moves()
    assert [m.status for m in moves] == statuses
    assert champion_stack(moves) == ["1", "2"]
    assert alias(registry, CHAMPION) == alias(registry, CHALLENGER) == "2"


# --- PostgreSQL (the tracking server's backend store) stopped mid-registration ---------------


@pytest.fixture(scope="module")
def postgres_and_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrivatePostgres, MlflowServer]]:
    directory = tmp_path_factory.mktemp("mlflow-private-postgres")
    with private_postgres() as postgres:
        backend = postgres.create_database("mlflow")
        server = MlflowServer(backend, directory / "artifacts", directory / "server.log")
        try:
            yield postgres, server.start()
        finally:
            server.stop()


@pytest.fixture
def server_project(
    request: pytest.FixtureRequest,
    project_dir: Path,
    postgres_and_server: tuple[PrivatePostgres, MlflowServer],
    monkeypatch: pytest.MonkeyPatch,
) -> PrivatePostgres:
    """A project on the private server, with a model name of its own; the cluster."""
    postgres, server = postgres_and_server
    prepare_registry_project(project_dir, monkeypatch, model_name=request.node.name[:60])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    return postgres


def stop_after(step: str, postgres: PrivatePostgres) -> Callable[[str], None]:
    def on_step(name: str) -> None:
        if name == step:
            postgres.stop()

    return on_step


@pytest.mark.slow
def test_postgres_stopped_before_the_version_exists_leaves_nothing(
    server_project: PrivatePostgres, project_dir: Path
) -> None:
    register_standin(project_dir, WEAK, REFERENCES)  # v1 champion
    with pytest.raises(
        RegistryError,
        match=r"^creating a version of .* failed against .*HTTP 500s come from",
    ):
        register_standin(
            project_dir, STRONG, REFERENCES, on_step=stop_after("logged", server_project)
        )
    server_project.start()
    registry = open_registry()
    assert [str(v.version) for v in registry.versions()] == ["1"]
    assert alias(registry, CHAMPION) == alias(registry, CHALLENGER) == "1"
    assert [m.to_version for m in registry.champion_moves()] == ["1"]
    again = register_standin(project_dir, STRONG, REFERENCES)
    assert (again.action, again.version, again.champion_after) == ("created", "2", "2")


@pytest.mark.slow
def test_postgres_stopped_after_the_version_exists_is_finished_by_the_rerun(
    server_project: PrivatePostgres, project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_standin(project_dir, WEAK, REFERENCES)  # v1 champion
    with pytest.raises(
        RegistryError,
        match=r"^pointing @challenger at version 2 failed against .*HTTP 500s come from",
    ):
        register_standin(
            project_dir, STRONG, REFERENCES, on_step=stop_after("versioned", server_project)
        )
    server_project.start()
    registry = open_registry()
    assert registry.version("2").tags["registration.state"] == "created"
    capsys.readouterr()
    assert cli.main(["registry", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["2", "(unfinished:", "rerun)"]

    again = register_standin(project_dir, STRONG, REFERENCES)
    assert (again.action, again.version, again.champion_after) == ("resumed", "2", "2")
    assert [str(v.version) for v in registry.versions()] == ["2", "1"]
    assert registry.version("2").tags["registration.state"] == "complete"
    assert alias(registry, CHAMPION) == alias(registry, CHALLENGER) == "2"
    assert [(m.to_version, m.status) for m in registry.champion_moves()] == [
        ("1", "FINISHED"),
        ("2", "FINISHED"),
    ]
