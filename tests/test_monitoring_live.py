"""The loop after promotion in a real Airflow: batch translation, drift, the watch, alerts.

One `airflow standalone` (PostgreSQL metadata DB, dropped afterwards) for the module, over a
project whose registry (SQLite) holds the upper-casing stand-in as @champion v1 (gate-promoted)
and a weak stand-in v2 (rejected by the gate), with a corpus profile of the training sources
(tests/test_watch.py and tests/test_batch_translate.py build the same pieces). Alerts go to a
real SMTP server (aiosmtpd) and a real HTTP receiver started here; Airflow reaches the SMTP
server through its connection `smtp_default` (AIRFLOW_CONN_SMTP_DEFAULT).

1. A clean batch announced on the incoming Asset is translated by @champion into a file with
   its manifest, and the translated Asset gets its event; the watch then finds nothing and
   nobody is alerted.
2. The weak version made @champion by hand: the watch's canary check alerts.
3. A French batch into the en→de pipeline is translated but drifts; the next watch mails and
   posts the drift alert and starts a retrain_translation run through the raw-corpus Asset
   (last: that run's fetch replaces data/raw, which the canary reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import _load_cached
from pipeline.paths import project_paths
from tests.airflow_harness import DAG_ID, AirflowServer, airflow_standalone, make_project
from tests.conftest import tiny_pairs, write_tiny_corpus
from tests.mlflow_server import free_port
from tests.postgres import postgres_database
from tests.test_batch_translate import write_profile
from tests.test_watch import (
    MODEL,
    SOURCES,
    SPLIT,
    WEAK_PREFIX,
    MailBox,
    Receiver,
    register_standin_version,
)

pytestmark = pytest.mark.slow

BATCH_DAG, WATCH_DAG = "translate_batch", "watch_champion"
RUN_TIMEOUT_S = 600
ALERT_TO = "ops@example.org"
FRENCH = [
    "Un chien court sur la plage.",
    "Deux hommes parlent dans la rue.",
    "Une fille sourit à sa mère.",
    "Les enfants jouent dans le parc avec un ballon.",
    "Une femme lit un livre sous un arbre.",
    "Un homme fait du vélo dans la montagne.",
]


@dataclass
class Loop:
    server: AirflowServer
    project: Path
    scratch: Path
    mailbox: MailBox
    hook: type[Receiver]


def monitor_params(scratch: Path, hook_url: str) -> dict[str, Any]:
    return {
        "canary_size": 12,
        "max_canary_drop": 2.0,
        "min_canary_score": 20.0,
        "batch_size": 4,
        # The tiny corpus's batches are a few lines: judge them (the minimum's own rule and its
        # measured value are tests/test_drift.py's).
        "min_drift_lines": 3,
        "alert_emails": [ALERT_TO],
        "smtp_conn_id": "smtp_default",
        "alert_webhook_url": hook_url,
        "retrain_on_alert": True,
        "watch_schedule": "none",
        "incoming_asset": (scratch / "incoming").as_uri(),
        "translated_asset": (scratch / "translated").as_uri(),
    }


def build_project(scratch: Path, hook_url: str) -> Path:
    """The tiny project: v1 champion, v2 weak, data/clean sources, the corpus profile."""
    overrides = {
        # The watch asks for a retrain on its corpus folder: inside the run's data root.
        "orchestration": {"schedule": "none", "data_root": str(scratch)},
        "register": {"min_score": 20.0, "bootstrap_resamples": 200, "model_name": MODEL},
        "monitor": monitor_params(scratch, hook_url),
    }
    project = make_project(scratch / "project", write_tiny_corpus(scratch / "corpus"), overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MT_PROJECT_DIR", str(project))
        patch.chdir(project)
        for var in ("MLFLOW_TRACKING_URI", "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID"):
            patch.delenv(var, raising=False)
        _load_cached.cache_clear()
        clean = project / "data" / "clean"
        clean.mkdir(parents=True)
        (clean / f"{SPLIT}.en").write_text("".join(f"{s}\n" for s in SOURCES), "utf-8")
        first = register_standin_version(project, "", "standin-v1")
        second = register_standin_version(project, WEAK_PREFIX, "standin-v2")
        assert (first.decision.outcome, second.decision.outcome) == ("promoted", "rejected")
        write_profile(project)
    _load_cached.cache_clear()
    return project


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    import http.server
    import threading

    from aiosmtpd.controller import Controller

    scratch = tmp_path_factory.mktemp("loop")
    mailbox, smtp_port = MailBox(), free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    hook = type("Hook", (Receiver,), {"received": [], "answer": (204, b"")})
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), hook)
    threading.Thread(target=receiver.serve_forever, args=(0.05,), daemon=True).start()
    hook_url = f"http://127.0.0.1:{receiver.server_port}/hooks/mt"
    smtp.start()
    try:
        project = build_project(scratch, hook_url)
        smtp_uri = (
            f"smtp://127.0.0.1:{smtp_port}?disable_ssl=true&disable_tls=true&retry_limit=0"
            "&timeout=10&from_email=mt-alerts%40example.org"
        )
        with (
            postgres_database() as db_url,
            airflow_standalone(
                scratch / "airflow_home",
                project,
                db_url,
                {"AIRFLOW_CONN_SMTP_DEFAULT": smtp_uri},
            ) as server,
        ):
            for dag_id in (BATCH_DAG, WATCH_DAG, DAG_ID):
                server.wait_for_dag(dag_id)
            for dag_id in (BATCH_DAG, WATCH_DAG):
                server.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
            yield Loop(server, project, scratch, mailbox, hook)
    finally:
        smtp.stop()
        receiver.shutdown()
        receiver.server_close()


# --- helpers ----------------------------------------------------------------------------------


def run_ids(server: AirflowServer, dag_id: str) -> set[str]:
    runs = server.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
    return {str(run["dag_run_id"]) for run in runs}


def next_run(server: AirflowServer, dag_id: str, known: set[str]) -> str:
    """The id of the first run of `dag_id` that is not in `known`, once it exists."""
    import time

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        new = run_ids(server, dag_id) - known
        if new:
            return sorted(new)[0]
        time.sleep(2)
    raise TimeoutError(f"no new run of {dag_id} within {RUN_TIMEOUT_S}s")


def translate_announced_batch(loop: Loop, name: str, lines: list[str]) -> tuple[str, Path]:
    """Write a batch, announce it on the incoming Asset, wait for its translate_batch run."""
    source = loop.scratch / "incoming" / f"{name}.txt"
    source.parent.mkdir(exist_ok=True)
    source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    output = loop.scratch / "translated" / f"{name}.txt"
    known = run_ids(loop.server, BATCH_DAG)
    extra = {"input_path": str(source), "output_path": str(output)}
    loop.server.emit_asset_event("mt_incoming_text", extra)
    run_id = next_run(loop.server, BATCH_DAG, known)
    state = loop.server.wait_for_run(run_id, RUN_TIMEOUT_S, dag_id=BATCH_DAG)
    assert state == "success", loop.server.task_states(run_id, dag_id=BATCH_DAG)
    return run_id, output


def run_watch(loop: Loop) -> tuple[str, dict[str, str | None]]:
    run_id = loop.server.trigger({}, dag_id=WATCH_DAG)
    loop.server.wait_for_run(run_id, RUN_TIMEOUT_S, dag_id=WATCH_DAG)
    return run_id, loop.server.task_states(run_id, dag_id=WATCH_DAG)


def translated_events(loop: Loop) -> list[dict[str, Any]]:
    found = loop.server.api("GET", "/assets", params={"name_pattern": "mt_translated_text"})
    asset_id = next(a["id"] for a in found["assets"] if a["name"] == "mt_translated_text")
    events = loop.server.api("GET", "/assets/events", params={"asset_id": asset_id})
    return list(events["asset_events"])


def stop_retrain(loop: Loop, run_id: str) -> None:
    """Pause retrain_translation and fail its run: the test needs the run, not the training."""
    loop.server.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    loop.server.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})


def alert_subjects(loop: Loop) -> list[str]:
    return [str(message["Subject"]) for message in loop.mailbox.messages()]


def clear_alerts(loop: Loop) -> None:
    loop.mailbox.envelopes.clear()
    loop.hook.received.clear()


# --- the loop -------------------------------------------------------------------------------


def test_a_clean_batch_is_translated_with_a_manifest_and_the_watch_stays_quiet(
    loop: Loop,
) -> None:
    clear_alerts(loop)
    clean = [en for en, _ in tiny_pairs(8)]  # training sources: no drift
    run_id, output = translate_announced_batch(loop, "clean", clean)
    assert output.read_text("utf-8").splitlines() == [line.upper() for line in clean]
    manifest = json.loads(output.with_name("clean.txt.manifest.json").read_text("utf-8"))
    assert (manifest["model_name"], manifest["model_version"]) == (MODEL, "1")
    assert (manifest["line_count"], manifest["drift"]["drifted"]) == (8, [])
    assert manifest["reused_from"] is None
    events = [e for e in translated_events(loop) if e["source_run_id"] == run_id]
    assert [e["extra"]["files"][0]["output"] for e in events] == [str(output)]

    _, states = run_watch(loop)
    assert states == {
        "watch": "success",
        "has_findings": "success",
        "alert": "skipped",
        "request_retrain": "skipped",
    }
    assert (alert_subjects(loop), loop.hook.received) == ([], [])
    history = project_paths(loop.project).watch_dir / "history.jsonl"
    record = json.loads(history.read_text("utf-8").splitlines()[-1])
    assert (record["version"], record["findings"], record["canary"]["bleu"]) == ("1", [], 100.0)


def test_a_weak_version_made_champion_by_hand_is_caught_by_the_canary(loop: Loop) -> None:
    clear_alerts(loop)
    # The project's own store, named outright: this process may carry another tracking URI.
    store = f"sqlite:///{project_paths(loop.project).mlruns_db}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.set_registered_model_alias(MODEL, "champion", "2")  # as in the MLflow UI
    try:
        _, states = run_watch(loop)
    finally:
        client.set_registered_model_alias(MODEL, "champion", "1")
    assert (states["alert"], states["request_retrain"]) == ("success", "success")
    history = project_paths(loop.project).watch_dir / "history.jsonl"
    record = json.loads(history.read_text("utf-8").splitlines()[-1])
    assert (record["version"], record["canary"]["baseline_version"]) == ("2", "1")
    kinds = [finding["kind"] for finding in record["findings"]]
    assert kinds == ["canary"]
    (subject,) = alert_subjects(loop)
    assert subject == f"[mt] champion watch: 1 finding(s) for {MODEL} v2"


def test_a_french_batch_drifts_and_the_watch_alerts_and_queues_a_retrain(loop: Loop) -> None:
    clear_alerts(loop)
    _, output = translate_announced_batch(loop, "french", FRENCH)
    manifest = json.loads(output.with_name("french.txt.manifest.json").read_text("utf-8"))
    assert "language_share" in manifest["drift"]["drifted"]

    # retrain_translation unpaused: only an unpaused DAG gets a run from an asset event.
    loop.server.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    retrain_runs = run_ids(loop.server, DAG_ID)
    _, states = run_watch(loop)
    assert states == {
        "watch": "success",
        "has_findings": "success",
        "alert": "success",
        "request_retrain": "success",
    }
    retrain = next_run(loop.server, DAG_ID, retrain_runs)
    stop_retrain(loop, retrain)
    assert retrain.startswith("asset_triggered__")
    (subject,) = alert_subjects(loop)
    assert subject == f"[mt] champion watch: 1 finding(s) for {MODEL} v1"
    (message,) = loop.mailbox.messages()
    assert message["To"] == ALERT_TO
    body = message.get_body(preferencelist=("html", "plain")).get_content()
    assert f"incoming batch {manifest['drift']['batch_id']}" in body
    ((path, _, payload),) = loop.hook.received
    assert path == "/hooks/mt"
    assert [finding["kind"] for finding in payload["findings"]] == ["drift"]
    events = loop.server.api("GET", f"/dags/{DAG_ID}/dagRuns/{retrain}/upstreamAssetEvents")
    # Every retrain request so far is consumed by this run: this watch's, and the
    # weak-champion watch's when that test ran (queued while the DAG was paused).
    requests = [
        (event["source_dag_id"], event["extra"]["requested_by"], event["extra"]["data_path"])
        for event in events["asset_events"]
    ]
    assert set(requests) == {(WATCH_DAG, WATCH_DAG, str(loop.scratch / "corpus"))}
