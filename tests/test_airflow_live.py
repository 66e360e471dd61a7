"""A real Airflow runs retrain_translation on a tiny project: runs that meet each other, a
human's approval, and runs that must stop before they change anything.

One `airflow standalone` for the module (a fresh PostgreSQL metadata database, dropped
afterwards; REST API v2 with a JWT from /auth/token) over one tiny project. One Airflow and one
project serve every test here (an Airflow start costs ~25 CPU s and each pipeline run ~70 on a
2-core CI machine); no test depends on another having run.

- Two runs triggered through the REST API at the same moment with different params run side by
  side (`orchestration.max_active_runs` 2), each in its own workspace (pipeline/workspaces.py),
  while a hand-run `dvc repro` of the data stages in the project checkout succeeds. One keeps
  params.yaml's model and the auto policy and becomes @champion with nothing to beat; the other
  registers under a model of its own (the `model_name` run param) with manual promotion, waits
  for a human in approve_promotion, and the approval (REST) makes its version @champion. Both
  are saved as DVC experiments with their own params; each version, its MLflow training run and its
  experiment name each other; params.yaml is as it was, and neither run leaves a workspace or a
  git worktree. (Gates racing for one model's @champion: tests/test_registry_postgres.py and
  tests/test_champion_lock.py, with real processes.)
- New raw data announced as an asset event (its `extra` names the corpus) starts a run; the
  corpus is corrupt, so validate_raw fails with the stage's error in its task log, nothing
  after it runs, the registry and params.yaml are untouched, and the failed run's workspace is
  kept for inspection.
- An asset event whose `extra` breaks the Trigger form's rules fails the run at its first task.
- A real browser (Debian's Chromium through Playwright, tests/browser.py) logs into the UI,
  finds the DAG, fills its trigger form and triggers a run: the run has the form's params, and
  its corpus folder, outside `orchestration.data_root`, fails it at its first task. Screenshots
  go to the test's reports/ui/ (docs/airflow.md says how to copy a set into the repository).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import expect

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
from tests.browser import UI_TIMEOUT_MS, chromium_page
from tests.conftest import tiny_pairs, write_corpus, write_tiny_corpus
from tests.postgres import postgres_database
from tests.test_dag import experiments_of

pytestmark = pytest.mark.slow

MODEL = "multi30k-en-de-lstm"
REVIEWED_MODEL = "multi30k-en-de-lstm-reviewed"  # the manual run's own registered model
RUN_TIMEOUT_S = 1500
# Every task of a run but the approval branch, and the two tasks of that branch.
SUCCEEDED_TASKS = {
    "start_run", *STAGES, "choose_promotion", "save_experiment",
    "close_run_default", "close_run_gpu",
}  # fmt: skip
APPROVAL_TASKS = ("approve_promotion", "promote_challenger")


@dataclass
class Live:
    server: AirflowServer
    project: Path
    scratch: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The Airflow, with the DAG parsed and unpaused, its project and a scratch folder."""
    scratch = tmp_path_factory.mktemp("live")
    corpus = write_tiny_corpus(scratch / "corpus")
    # No schedule: unpausing a weekly DAG would start the latest missed interval's run at once.
    # data_root: the only folder an asset event's corpus may come from.
    settings = {"schedule": "none", "data_root": str(scratch)}
    project = make_project(scratch / "project", corpus, {"orchestration": settings})
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
        yield Live(server, project, scratch)


# ---- two runs at once, one of them approved by a person ----------------------------------


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


def running_workspaces(project: Path) -> list[str]:
    runs = project / RUNS_DIR
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def trigger_at_once(server: AirflowServer, confs: list[dict[str, Any]]) -> list[str]:
    """Trigger one run per conf through the REST API, all at the same moment."""
    at_once = threading.Barrier(len(confs))
    run_ids = [""] * len(confs)

    def trigger(slot: int) -> None:
        at_once.wait()
        run_ids[slot] = server.trigger(confs[slot])

    threads = [threading.Thread(target=trigger, args=(slot,)) for slot in range(len(confs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return run_ids


def hitl_path(run_id: str) -> str:
    return f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails"


def wait_for_approval_request(server: AirflowServer, run_id: str) -> dict[str, Any]:
    """The approval task's request once it waits for a human (fails if the run ends first)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        states = server.task_states(run_id)
        if states.get("approve_promotion") == "awaiting_input":
            detail: dict[str, Any] = server.api("GET", hitl_path(run_id))
            return detail
        run_state = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        assert run_state in {"queued", "running"}, f"run ended ({run_state}): {states}"
        time.sleep(5)
    raise TimeoutError(f"approve_promotion did not wait for input within {RUN_TIMEOUT_S}s")


def wait_until_the_deferral_is_settled(server: AirflowServer, run_id: str) -> None:
    """Wait for the scheduler to drain the exit of the worker that deferred approve_promotion.

    Airflow 3.3 fails a deferred task that resumes before the scheduler has processed its
    worker's defer-exit: the stale 'success' meets a queued task instance, "state mismatch"
    (apache/airflow#67287, #72716; docs/airflow.md, *Manual approval*). A person answers in
    seconds; this test answers as soon as the request exists, so it first waits for the
    scheduler's "TaskInstance Finished" line of that exit.
    """
    marker = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=approve_promotion, run_id={run_id}"
    wait_for(
        "the scheduler processing approve_promotion's deferral",
        lambda: marker in server.log_file.read_text(encoding="utf-8", errors="replace"),
    )


def approve_when_asked(server: AirflowServer, project: Path, run_id: str) -> None:
    """What the approver sees, then their approval through the REST API."""
    approval = wait_for_approval_request(server, run_id)
    assert approval["subject"] == f"Promote {REVIEWED_MODEL} version 1?"
    assert "| test_2016_flickr |" in approval["body"]
    assert "| val |" not in approval["body"]  # the approver sees the gate's split, not val
    assert "Gate: **awaiting_approval**" in approval["body"]
    assert registered_versions(project, REVIEWED_MODEL) == ["1"]
    wait_until_the_deferral_is_settled(server, run_id)
    approve = {"chosen_options": ["Approve"], "params_input": {}}
    server.api("PATCH", hitl_path(run_id), json=approve)


def registry_client(project: Path) -> MlflowClient:
    uri = f"sqlite:///{project / 'mlruns.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_two_runs_at_once_beside_a_hand_run_one_promoted_by_a_person(live: Live) -> None:
    server, project = live.server, live.project
    params_before = (project / "params.yaml").read_bytes()
    auto_conf = {"epochs": 2}
    manual_conf = {"epochs": 3, "promotion_policy": "manual", "model_name": REVIEWED_MODEL}
    auto, manual = run_ids = trigger_at_once(server, [auto_conf, manual_conf])
    names = {run_id: experiment_name(DAG_ID, run_id) for run_id in run_ids}

    ours = set(names.values())
    wait_for("both runs in their workspaces", lambda: ours <= set(running_workspaces(project)))
    # The person's own pipeline in the checkout, with its params, up to the corpus profile (the
    # stages before training: each run's own data stages are in its workspace meanwhile).
    repro = hand_run(project, "dvc", "repro", "profile")
    assert repro.returncode == 0, repro.stderr[-3000:]
    approve_when_asked(server, project, manual)
    assert server.wait_for_run(auto, RUN_TIMEOUT_S) == "success"
    assert server.wait_for_run(manual, RUN_TIMEOUT_S) == "success"

    # Both workspaces existed at once (above): the runs overlapped.
    assert registered_versions(project, MODEL) == ["1"]
    assert registered_versions(project, REVIEWED_MODEL) == ["1"]
    client = registry_client(project)
    models = {auto: MODEL, manual: REVIEWED_MODEL}
    tags = {run_id: client.get_model_version(models[run_id], "1").tags for run_id in run_ids}
    assert tags[auto]["gate.outcome"] == "promoted"
    assert tags[manual]["gate.outcome"] == "awaiting_approval"
    for run_id in run_ids:
        assert tags[run_id]["gate.champion_version"] == "none"  # nothing to beat in its model
        assert str(client.get_model_version_by_alias(models[run_id], "champion").version) == "1"

    approval_states = {auto: "skipped", manual: "success"}
    for run_id in run_ids:
        assert server.task_states(run_id) == {
            **{task_id: "success" for task_id in SUCCEEDED_TASKS},
            **{task_id: approval_states[run_id] for task_id in APPROVAL_TASKS},
        }
        assert "Running stage 'train':" in server.task_log(run_id, "train")

    # Each run is a DVC experiment with its own params and metrics; its version names it, and
    # its MLflow training run names it too and has the run's params.
    experiments = experiments_of(project)
    assert {name: e["params"]["train"]["epochs"] for name, e in experiments.items()} == {
        names[auto]: 2,
        names[manual]: 3,
    }
    assert experiments[names[manual]]["params"]["register"]["model_name"] == REVIEWED_MODEL
    for run_id, conf in ((auto, auto_conf), (manual, manual_conf)):
        assert run_id.startswith("manual__")
        assert tags[run_id]["dvc.experiment"] == names[run_id]
        assert tags[run_id]["airflow.dag_id"] == DAG_ID
        test_bleu = experiments[names[run_id]]["metrics"]["test_2016_flickr"]["bleu"]
        assert tags[run_id]["metrics.test_2016_flickr.bleu"] == str(test_bleu)
        train_run = client.get_run(str(client.get_model_version(models[run_id], "1").run_id))
        assert train_run.data.params["train.epochs"] == str(conf["epochs"])
        assert train_run.data.tags["mt.dvc_exp_name"] == names[run_id]

    # Neither run left its workspace: no folder, no git worktree beside the checkout's own.
    assert not ours & set(running_workspaces(project))
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=project, capture_output=True, text=True, check=True
    )
    assert len(worktrees.stdout.splitlines()) == 1, worktrees.stdout
    assert (project / "params.yaml").read_bytes() == params_before  # runs never write it
    status = hand_run(project, "dvc", "status", "profile")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    assert not (project / "models" / "seq2seq.keras").exists()  # no run trained in the checkout


# ---- runs that stop before they change anything ----------------------------------------


def corrupted_corpus(directory: Path) -> Path:
    """Ten train targets of 120 tokens: the raw suite's max_tokens rule (80) must stop it."""
    pairs = tiny_pairs(60)
    pairs[5:15] = [(source, " ".join(["Wort"] * 120)) for source, _ in pairs[5:15]]
    splits = {
        "train": pairs,
        "val": tiny_pairs(10, offset=100),
        "test_2016_flickr": tiny_pairs(10, offset=200),
    }
    return write_corpus(directory, splits)


def asset_triggered_run(server: AirflowServer, extra: dict[str, Any]) -> str:
    """Announce new raw data with `extra`; the id of the run it starts, once it has failed."""
    known = frozenset(server.run_ids())
    server.emit_asset_event("mt_raw_corpus", extra)
    run_id = server.wait_for_new_run("asset_triggered", timeout_s=180, known=known)
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"
    return run_id


def test_bad_new_data_stops_the_run_and_leaves_the_registry_alone(live: Live) -> None:
    server, project = live.server, live.project
    params_before = (project / "params.yaml").read_bytes()
    versions_before = registered_versions(project, MODEL)
    bad = corrupted_corpus(live.scratch / "bad_corpus")

    run_id = asset_triggered_run(server, {"data_source": "dir", "data_path": str(bad)})

    states = server.task_states(run_id)
    assert states["start_run"] == "success"
    assert states["fetch"] == "success"
    assert states["validate_raw"] == "failed"
    assert {states[stage] for stage in STAGES[2:]} == {"upstream_failed"}
    assert states["close_run_default"] == "success"
    assert (project / RUNS_DIR / experiment_name(DAG_ID, run_id) / "data" / "raw").is_dir()
    assert f'"path": "{bad}"' in server.task_log(run_id, "start_run")
    log = server.task_log(run_id, "validate_raw")
    assert "validate failed: suite" in log
    assert "rule target_max_tokens (10 of 60 rows break" in log
    assert registered_versions(project, MODEL) == versions_before
    assert (project / "params.yaml").read_bytes() == params_before


def test_an_asset_event_outside_the_form_rules_fails_the_first_task(live: Live) -> None:
    server, project = live.server, live.project
    versions_before = registered_versions(project, MODEL)
    workspaces_before = running_workspaces(project)

    run_id = asset_triggered_run(server, {"epochs": 10_000})

    states = server.task_states(run_id)
    assert states["start_run"] == "failed"
    assert {states[stage] for stage in STAGES} == {"upstream_failed"}
    assert (
        "asset event extra `epochs` is 10000: 10000 is greater than the maximum of 500 (the rule "
        "of the Trigger form's `epochs`)" in server.task_log(run_id, "start_run")
    )
    assert running_workspaces(project) == workspaces_before
    assert registered_versions(project, MODEL) == versions_before


# ---- the UI, as a person uses it ------------------------------------------------------------


def test_a_run_triggered_from_the_ui_form_gets_its_params_and_their_checks(
    live: Live, tmp_path: Path
) -> None:
    server, project = live.server, live.project
    versions_before = registered_versions(project, MODEL)
    workspaces_before = running_workspaces(project)
    known = frozenset(server.run_ids())
    # A real corpus, but outside orchestration.data_root (the module's scratch folder).
    untrusted = str(write_tiny_corpus(tmp_path / "corpora" / "new"))
    shots = tmp_path / "reports" / "ui"
    shots.mkdir(parents=True)

    with chromium_page() as page:
        log_in(page, server)
        page.screenshot(path=shots / "01-dags.png")
        open_dag_from_search(page)
        page.screenshot(path=shots / "02-dag.png")
        page.get_by_test_id("trigger-dag-button").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters").wait_for()
        dialog.get_by_label("Epochs").fill("1")
        choose(dialog, "Promotion policy", "manual")
        # The UI labels text fields without a `for`: find them by the field name it gives them.
        dialog.locator("input[name=element_data_path]").fill(untrusted)
        page.screenshot(path=shots / "03-trigger-form.png", full_page=True)
        dialog.get_by_test_id("trigger-dag-submit").click()
        dialog.wait_for(state="hidden")
        page.screenshot(path=shots / "04-triggered.png")

    run_id = server.wait_for_new_run("manual", timeout_s=60, known=known)
    conf = server.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["conf"]
    assert (conf["epochs"], conf["promotion_policy"], conf["data_path"]) == (
        1,
        "manual",
        untrusted,
    )
    assert conf["data_source"] == "params.yaml"
    assert sorted(p.name for p in shots.iterdir()) == [
        "01-dags.png",
        "02-dag.png",
        "03-trigger-form.png",
        "04-triggered.png",
    ]
    # Whoever may trigger a run may not choose where its corpus comes from.
    assert server.wait_for_run(run_id, RUN_TIMEOUT_S) == "failed"
    assert server.task_states(run_id)["start_run"] == "failed"
    assert (
        f"run params: data path {untrusted} is outside orchestration.data_root"
        in server.task_log(run_id, "start_run")
    )
    assert running_workspaces(project) == workspaces_before
    assert registered_versions(project, MODEL) == versions_before


def log_in(page: Any, server: AirflowServer) -> None:
    page.goto(f"{server.base_url}/")
    page.locator("input[name=username]").fill(server.username)
    page.locator("input[name=password]").fill(server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))
    page.goto(f"{server.base_url}/dags")
    page.get_by_role("link", name=DAG_ID).first.wait_for()


def open_dag_from_search(page: Any) -> None:
    """The DAG list's search box narrows the list to our DAG; its link opens the DAG page."""
    page.get_by_test_id("search-dags").fill("retrain")
    page.get_by_role("link", name=DAG_ID).first.click()
    page.wait_for_url(re.compile(f"/dags/{DAG_ID}"))
    # The list (one trigger button per DAG) may still be on screen for a moment after the URL
    # changed: the DAG's own page has exactly one.
    expect(page.get_by_test_id("trigger-dag-button")).to_have_count(1, timeout=UI_TIMEOUT_MS)


def choose(dialog: Any, label: str, option: str) -> None:
    """Pick `option` in the form's select field `label` (a combobox)."""
    dialog.get_by_label(label).click()
    dialog.page.get_by_role("option", name=option, exact=True).click()
