"""Runs that meet each other in a real Airflow: two runs at once, a hand-run during them.

One `airflow standalone` for the module (fresh PostgreSQL metadata database, REST API v2), on a
tiny project. Each run works in its own workspace (pipeline/workspaces.py), so:
- two runs triggered through the REST API at the same moment with different params run side by
  side (`orchestration.max_active_runs` 2), each in its own workspace, and a hand-run `dvc
  repro` in the project checkout meanwhile succeeds; both runs are saved as DVC experiments
  with their own params, the project's params.yaml is as it was, and the registry has exactly
  two versions, the second gated against the first (the order in which they registered); each
  version, its MLflow training run and its experiment name each other, and no workspace or git
  worktree is left;
- an asset event whose `extra` breaks the Trigger form's rules fails the run at its first task.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.orchestration.tasks import STAGES
from pipeline.workspaces import RUNS_DIR, experiment_name
from tests.airflow_harness import (
    DAG_ID,
    VENV_BIN,
    AirflowServer,
    airflow_standalone,
    make_project,
    registered_versions,
)
from tests.conftest import write_tiny_corpus
from tests.postgres import postgres_database
from tests.test_dag import experiments_of

pytestmark = pytest.mark.slow

MODEL = "multi30k-en-de-lstm"
RUN_TIMEOUT_S = 1500
PROJECT_OVERRIDES = {"orchestration": {"schedule": "none"}}
# A run with the default (auto) promotion policy: every task but the approval branch.
SUCCEEDED_TASKS = {
    "start_run", *STAGES, "choose_promotion", "save_experiment",
    "close_run_default", "close_run_gpu",
}  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowServer, Path]]:
    """(server, project) with the DAG parsed and unpaused."""
    scratch = tmp_path_factory.mktemp("concurrency")
    corpus = write_tiny_corpus(scratch / "corpus")
    project = make_project(scratch / "project", corpus, PROJECT_OVERRIDES)
    home = scratch / "airflow_home"
    home.mkdir()
    # Two runs at once on a loaded 2-core machine: give the task supervisor's calls to the
    # execution API more than the default 5 s, or a slow api-server fails a task before it starts.
    (home / "airflow.cfg").write_text("[workers]\nexecution_api_timeout = 60\n", encoding="utf-8")
    with (
        postgres_database() as db_url,
        airflow_standalone(home, project, db_url) as server,
    ):
        server.wait_for_dag()
        server.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        yield server, project


def hand_run(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """What a person types in the project folder: no Airflow context in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "MT_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return subprocess.run(
        list(command), cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def wait_for(what: str, check: Any, timeout_s: float = RUN_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")


def task_log(server: AirflowServer, run_id: str, task_id: str) -> str:
    """Every string of a task's structured log, the exception's message included."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1"
    content = server.api("GET", path, params={"full_content": "true"})["content"]
    return "\n".join(strings_in(content))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def running_workspaces(project: Path) -> list[str]:
    runs = project / RUNS_DIR
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def test_two_runs_at_once_each_in_its_workspace_beside_a_hand_run_dvc_repro(
    live: tuple[AirflowServer, Path],
) -> None:
    server, project = live
    params_before = (project / "params.yaml").read_bytes()
    at_once = threading.Barrier(2)
    run_ids: list[str] = ["", ""]

    def trigger(slot: int) -> None:
        at_once.wait()
        run_ids[slot] = server.trigger({"epochs": 2 + slot})

    threads = [threading.Thread(target=trigger, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    wait_for("both runs in their workspaces", lambda: len(running_workspaces(project)) == 2)
    # The person's own pipeline in the checkout, with its params, up to evaluate (a register
    # here would add a version of its own to the two this test counts).
    repro = hand_run(project, "dvc", "repro", "evaluate")
    assert repro.returncode == 0, repro.stderr[-3000:]
    assert server.wait_for_run(run_ids[0], RUN_TIMEOUT_S) == "success"
    assert server.wait_for_run(run_ids[1], RUN_TIMEOUT_S) == "success"

    # Both workspaces existed at once (above): the runs overlapped.
    assert registered_versions(project, MODEL) == ["1", "2"]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{project / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    tags = {}
    for version in ("1", "2"):
        version_tags = client.get_model_version(MODEL, version).tags
        tags[version_tags["airflow.dag_run_id"]] = version_tags | {"version": version}
    # The champion lock ordered the two gates: the run gated first became @champion with
    # nothing to beat; the other was gated against it. (Which came first is the lock's choice:
    # under load the run whose register task ended first may have been gated second.)
    unopposed = [r for r in run_ids if tags[r].get("gate.champion_version", "none") == "none"]
    assert len(unopposed) == 1, tags
    [first] = unopposed
    [second] = set(run_ids) - {first}
    assert tags[second]["gate.champion_version"] == tags[first]["version"]

    for run_id in run_ids:
        assert server.task_states(run_id) == {
            **{task_id: "success" for task_id in SUCCEEDED_TASKS},
            "approve_promotion": "skipped",
            "promote_challenger": "skipped",
        }
        assert "Running stage 'train':" in task_log(server, run_id, "train")

    # Each run is a DVC experiment with its own params and metrics; its version names it, and
    # its MLflow training run names it too and has the run's params.
    experiments = experiments_of(project)
    assert {name: e["params"]["train"]["epochs"] for name, e in experiments.items()} == {
        tags[run_id]["dvc.experiment"]: 2 + slot for slot, run_id in enumerate(run_ids)
    }
    for slot, run_id in enumerate(run_ids):
        name = tags[run_id]["dvc.experiment"]
        assert name == experiment_name(DAG_ID, run_id)
        assert run_id.startswith("manual__")
        assert tags[run_id]["airflow.dag_id"] == DAG_ID
        test_bleu = experiments[name]["metrics"]["test_2016_flickr"]["bleu"]
        assert tags[run_id]["metrics.test_2016_flickr.bleu"] == str(test_bleu)
        registered = client.get_model_version(MODEL, tags[run_id]["version"])
        train_run = client.get_run(str(registered.run_id))
        assert train_run.data.params["train.epochs"] == str(2 + slot)
        assert train_run.data.tags["mt.dvc_exp_name"] == name

    # No workspace is left: no folder, no git worktree beside the checkout's own.
    assert running_workspaces(project) == []
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=project, capture_output=True, text=True, check=True
    )
    assert len(worktrees.stdout.splitlines()) == 1, worktrees.stdout
    assert (project / "params.yaml").read_bytes() == params_before
    status = hand_run(project, "dvc", "status", "evaluate")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    assert (project / "models" / "seq2seq.keras").is_file()  # the person's model, in place


def test_an_asset_event_outside_the_form_rules_fails_the_first_task(
    live: tuple[AirflowServer, Path],
) -> None:
    server, project = live
    versions_before = registered_versions(project, MODEL)

    server.emit_asset_event("mt_raw_corpus", {"epochs": 10_000})
    run_id = server.wait_for_new_run("asset_triggered", timeout_s=180)
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"

    states = server.task_states(run_id)
    assert states["start_run"] == "failed"
    assert {states[stage] for stage in STAGES} == {"upstream_failed"}
    assert (
        "asset event extra `epochs` is 10000: 10000 is greater than the maximum of 500 (the rule "
        "of the Trigger form's `epochs`)" in task_log(server, run_id, "start_run")
    )
    assert running_workspaces(project) == []
    assert registered_versions(project, MODEL) == versions_before
