"""The champion watch (pipeline/monitor/watch.py and friends) and the alerts (alerts.py).

The registry is a real SQLite store in a throw-away project with the upper-casing stand-in
pyfunc (tests/mlflow_server.py): v1 upper-cases (canary BLEU 100 against upper-cased
references), v2 puts a wrong prefix before it and was rejected by the gate. Faults are real:
a version made champion with `mt registry promote`, the champion's files in the artifact store
changed or broken. Alerts go through the real notifiers to a real SMTP server (aiosmtpd) and a
real HTTP receiver, both started here on 127.0.0.1.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sacrebleu.metrics import BLEU

from pipeline import cli
from pipeline.config import _load_cached, load_config
from pipeline.evaluate import choose_sample_rows
from pipeline.monitor.canary import RecordedCanary, pick_canary
from pipeline.monitor.champion_check import ChampionCheck
from pipeline.monitor.drift import DriftResult, too_few_lines
from pipeline.monitor.findings import Finding, canary_findings, drift_findings
from pipeline.monitor.monitoring_runs import MONITORING_EXPERIMENT
from pipeline.monitor.watch import read_history, retrain_event_extra, run_watch, watch_record
from pipeline.orchestration import alerts
from pipeline.orchestration.run_params import event_values
from pipeline.paths import ProjectPaths, project_paths
from pipeline.registry.commands import build_candidate, registry_main
from pipeline.registry.gate import GateRules
from pipeline.registry.registration import register_candidate
from pipeline.registry.store import Registry
from tests.conftest import REPO_ROOT, tiny_pairs, write_params
from tests.mlflow_server import free_port, uppercase_spec, venv_environ, write_evaluation

MODEL = "multi30k-en-de-lstm"
SPLIT = "test_2016_flickr"
SOURCES = [en for en, _ in tiny_pairs(40, offset=200)]
REFERENCES = [line.upper() for line in SOURCES]  # what v1 (the stand-in) translates them to
WEAK_PREFIX = "ZZ QQ XX "
CANARY_ROWS = choose_sample_rows(40, 12, 1234)
CANARY_REFERENCES = [REFERENCES[row] for row in CANARY_ROWS]
# The weak stand-in's canary BLEU, computed independently of the code under test.
WEAK_HYPOTHESES = [WEAK_PREFIX + ref for ref in CANARY_REFERENCES]
WEAK_BLEU = round(BLEU().corpus_score(WEAK_HYPOTHESES, [CANARY_REFERENCES]).score, 4)
MONITOR_PARAMS = {"canary_size": 12, "max_canary_drop": 2.0, "min_canary_score": 20.0}


def register_standin_version(root: Path, prefix: str, folder: str) -> Any:
    """Register the stand-in whose translations start with `prefix`, with matching evidence."""
    write_evaluation(root, [prefix + ref for ref in REFERENCES], REFERENCES)
    config, paths = load_config(), project_paths()
    spec = uppercase_spec(root.parent / folder)
    Path(spec.artifacts["prefix"]).write_text(prefix, encoding="utf-8")
    registry = Registry.connect(paths, config.register.model_name)
    rules = GateRules.from_config(config.register, config.seed)
    return register_candidate(registry, spec, build_candidate(paths, config), rules, "pytest")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """v1 champion (gate-promoted), v2 weak and rejected; data/clean holds the sources."""
    root = tmp_path_factory.mktemp("watch") / "project"
    root.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MT_PROJECT_DIR", str(root))
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for var in ("AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_TASK_ID"):
            patch.delenv(var, raising=False)
        register = {"min_score": 20.0, "bootstrap_resamples": 200, "model_name": MODEL}
        write_params(root, {"register": register, "monitor": MONITOR_PARAMS})
        _load_cached.cache_clear()
        clean = root / "data" / "clean"
        clean.mkdir(parents=True)
        (clean / f"{SPLIT}.en").write_text("".join(f"{s}\n" for s in SOURCES), "utf-8")
        first = register_standin_version(root, "", "standin-v1")
        second = register_standin_version(root, WEAK_PREFIX, "standin-v2")
        assert (first.decision.outcome, second.decision.outcome) == ("promoted", "rejected")
        yield root
        _load_cached.cache_clear()


@pytest.fixture
def paths(project: Path) -> Iterator[ProjectPaths]:
    """The project with v1 as champion and no watch history (each test starts from there)."""
    paths = project_paths(project)
    shutil.rmtree(paths.monitoring_dir, ignore_errors=True)
    registry = Registry.connect(paths, MODEL)
    if registry.champion_number() != "1":
        registry.move_champion("1", "promote", "pytest", "back to the healthy champion")
    yield paths


def champion_file(paths: ProjectPaths, version: str, name: str) -> Path:
    """A file of the version's logged model in the project's artifact store."""
    registry = Registry.connect(paths, MODEL)
    root = registry.client.get_model_version_download_uri(MODEL, version)
    found = list(Path(root.removeprefix("file://")).rglob(name))
    assert len(found) == 1, found
    return found[0]


# --- the canary rules, pure ----------------------------------------------------------------


def monitor(**overrides: Any) -> Any:
    """The repository's monitor: section with `overrides`."""
    return replace(load_config(REPO_ROOT / "params.yaml").monitor, **overrides)


def test_canary_rules_name_floor_own_record_and_the_gates_last_promoted() -> None:
    own, baseline = RecordedCanary("2", 40.0, "sig"), RecordedCanary("1", 45.0, "sig")
    strict = monitor(min_canary_score=41.0, max_canary_drop=2.0)
    assert canary_findings("m v2", 37.5, own, baseline, strict) == [
        Finding("canary", "canary BLEU of m v2 is 37.50, below monitor.min_canary_score 41.00"),
        Finding(
            "canary",
            "canary BLEU of m v2 is 37.50, 2.50 points below 40.00 of v2, its own recorded "
            "canary BLEU (allowed: monitor.max_canary_drop 2.00)",
        ),
        Finding(
            "canary",
            "canary BLEU of m v2 is 37.50, 7.50 points below 45.00 of v1, the version the gate "
            "last promoted (allowed: monitor.max_canary_drop 2.00)",
        ),
    ]
    # Exactly the allowed drop, and a healthy champion (drop 0 even with max_canary_drop 0).
    assert canary_findings("m v2", 38.0, own, None, replace(strict, min_canary_score=0.0)) == []
    assert canary_findings("m v1", 45.0, baseline, None, monitor(max_canary_drop=0.0)) == []
    unknown = canary_findings("m v3", 50.0, "m v3 has no recorded canary BLEU: x", None, strict)
    assert unknown == [
        Finding(
            "canary",
            "canary of m v3 not compared with its own recorded canary BLEU: m v3 has no "
            "recorded canary BLEU: x",
        )
    ]


def test_canary_pick_is_seeded_and_in_file_order() -> None:
    canary = pick_canary(SPLIT, SOURCES, REFERENCES, 12, 1234)
    assert canary.rows == tuple(CANARY_ROWS) and list(canary.rows) == sorted(canary.rows)
    assert canary.sources == tuple(SOURCES[row] for row in CANARY_ROWS)
    assert pick_canary(SPLIT, SOURCES[:5], REFERENCES[:5], 12, 1234).rows == (0, 1, 2, 3, 4)


def drift_result(batch_id: str, checked_at: str, drifted: tuple[str, ...], gx: bool) -> Any:
    return DriftResult(
        batch_id=batch_id,
        checked_at=checked_at,
        statistics={"length_psi": 0.5123, "language_share": 0.25},
        thresholds={"length_psi": 0.2, "language_share": 0.9},
        drifted=drifted,
        gx_success=gx,
        data_docs=f"reports/monitoring/drift/data_docs/{batch_id}/index.html",
        gx_failed_rules=() if gx else ("expect_column_values_to_match_regex",),
    )


def test_drifted_batches_become_one_finding_each() -> None:
    calm = drift_result("calm", "2026-03-01T10:00:00+00:00", (), True)
    french = drift_result(
        "fr-1", "2026-03-01T11:00:00+00:00", ("length_psi", "language_share"), False
    )
    assert drift_findings([calm, french]) == [
        Finding(
            "drift",
            "incoming batch fr-1 (checked 2026-03-01T11:00:00+00:00) drifted from the training "
            "corpus: length_psi 0.512 (threshold 0.2); language_share 0.250 (threshold 0.9); "
            "its Great Expectations suite failed (expect_column_values_to_match_regex); Data "
            "Docs: reports/monitoring/drift/data_docs/fr-1/index.html",
        )
    ]


# --- watch runs against the registry -------------------------------------------------------


def test_healthy_champion_scores_as_recorded_and_raises_nothing(paths: ProjectPaths) -> None:
    record = run_watch(paths, load_config())
    assert (record["model_name"], record["version"], record["loads"]) == (MODEL, "1", True)
    assert record["canary"] == {
        "split": SPLIT,
        "pairs": 12,
        "metric": "bleu",  # register.metric; the numbers are stored under its name
        "bleu": 100.0,
        "recorded_bleu": 100.0,
        "baseline_version": None,  # v1 is the version the gate last promoted
        "baseline_bleu": None,
    }
    assert (record["findings"], record["drift"]) == ([], [])
    assert read_history(paths) == [record]
    registry = Registry.connect(paths, MODEL)
    run = registry.client.get_run(record["mlflow_run_id"])
    experiment = registry.client.get_experiment(run.info.experiment_id)
    assert experiment.name == MONITORING_EXPERIMENT
    assert run.data.metrics == {
        "loads": 1.0,
        "findings": 0.0,
        "drift.batches": 0.0,
        "drift.drifted_batches": 0.0,
        "drift.too_few_lines_batches": 0.0,
        "canary.bleu": 100.0,
        "canary.recorded_bleu": 100.0,
    }
    assert run.data.tags["mt.version"] == "1" and run.data.tags["watch.findings"] == "none"


def test_weak_version_made_champion_by_hand_is_caught_against_the_gates_choice(
    paths: ProjectPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry_main(["promote", "2", "--reason", "by hand"]) == 0
    capsys.readouterr()
    assert cli.main(["monitor", "watch"]) == 1
    drop = round(100.0 - WEAK_BLEU, 4)
    finding = (
        f"canary BLEU of {MODEL} v2 is {WEAK_BLEU:.2f}, {drop:.2f} points below 100.00 of v1, "
        "the version the gate last promoted (allowed: monitor.max_canary_drop 2.00)"
    )
    assert capsys.readouterr().out.splitlines() == [
        f"champion: {MODEL} v2",
        f"canary: BLEU {WEAK_BLEU:.2f} on 12 pairs of {SPLIT} (recorded {WEAK_BLEU:.2f}; "
        "version the gate last promoted v1: 100.00)",
        "drift: 0 batch(es) checked since the previous run",
        f"finding (canary): {finding}",
        "1 finding(s)",
    ]
    # Its own record is as weak as it is (no drop) and it is above the floor: only the
    # comparison with the gate's last choice catches it.
    assert WEAK_BLEU > 20.0
    assert read_history(paths)[-1]["findings"] == [{"kind": "canary", "message": finding}]


def test_champion_translating_differently_from_its_record_is_caught(paths: ProjectPaths) -> None:
    prefix = champion_file(paths, "1", "prefix.txt")
    prefix.write_text(WEAK_PREFIX, encoding="utf-8")  # its files changed in the artifact store
    try:
        record = run_watch(paths, load_config())
    finally:
        prefix.write_text("", encoding="utf-8")
    drop = round(100.0 - WEAK_BLEU, 4)
    assert [item["message"] for item in record["findings"]] == [
        f"canary BLEU of {MODEL} v1 is {WEAK_BLEU:.2f}, {drop:.2f} points below 100.00 of v1, "
        "its own recorded canary BLEU (allowed: monitor.max_canary_drop 2.00)"
    ]


def test_champion_that_no_longer_loads_is_a_load_finding(paths: ProjectPaths) -> None:
    code = champion_file(paths, "1", "uppercase_model.py")
    original = code.read_text(encoding="utf-8")
    code.write_text("raise RuntimeError('artifact store damaged')\n", encoding="utf-8")
    try:
        record = run_watch(paths, load_config())
    finally:
        code.write_text(original, encoding="utf-8")
    assert (record["loads"], record["canary"]) == (False, None)
    [finding] = record["findings"]
    assert finding["kind"] == "load"
    # MLflow's words, with the path of the model's code in the artifact store between them.
    assert finding["message"].startswith(
        f"{MODEL} v1 fails the load check (serving would fail the same way): MlflowException: "
        f"Failed to run user code from {code}. Error: artifact store damaged."
    )


def write_drift(paths: ProjectPaths, result: Any) -> None:
    paths.drift_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_json())
    (paths.drift_dir / f"{result.batch_id}.json").write_text(text, encoding="utf-8")


def test_each_drift_result_is_reported_once_and_the_report_shows_the_runs(
    paths: ProjectPaths,
) -> None:
    write_drift(paths, drift_result("calm", "2026-03-01T10:00:00+00:00", (), True))
    write_drift(
        paths, drift_result("fr-1", "2026-03-01T11:00:00+00:00", ("language_share",), True)
    )
    first = run_watch(paths, load_config())
    assert [item["batch_id"] for item in first["drift"]] == ["calm", "fr-1"]
    assert first["drift_until"] == "2026-03-01T11:00:00+00:00"
    assert first["findings"] == [
        {
            "kind": "drift",
            "message": "incoming batch fr-1 (checked 2026-03-01T11:00:00+00:00) drifted from "
            "the training corpus: language_share 0.250 (threshold 0.9); Data Docs: "
            "reports/monitoring/drift/data_docs/fr-1/index.html",
        }
    ]
    write_drift(paths, drift_result("fr-2", "2026-03-01T12:00:00+00:00", (), True))
    second = run_watch(paths, load_config())
    assert [item["batch_id"] for item in second["drift"]] == ["fr-2"]  # not calm, fr-1 again
    assert second["findings"] == []
    report = (paths.watch_dir / "report.md").read_text("utf-8").splitlines()
    assert report[:3] == [
        "# Champion watch",
        "",
        f"Last run {second['checked_at']}: **{MODEL} v1**, no findings.",
    ]
    table = report.index("| --- | --- | --- | ---: | ---: | --- | ---: | ---: |")
    assert report[table + 1 : table + 3] == [
        f"| {second['checked_at']} | v1 | yes | 100.00 | 100.00 | the champion | 1 | 0 |",
        f"| {first['checked_at']} | v1 | yes | 100.00 | 100.00 | the champion | 2 | 1 |",
    ]
    assert "![canary BLEU per watch run](canary_bleu.png)" in report
    drift_rows = [line for line in report if line.startswith("| fr-1 |")]
    assert drift_rows == [
        "| fr-1 | 2026-03-01T11:00:00+00:00 | language_share | 0.2500 | 0.9 | **yes** |",
        "| fr-1 | 2026-03-01T11:00:00+00:00 | length_psi | 0.5123 | 0.2 | no |",
    ]
    png = (paths.watch_dir / "canary_bleu.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (800, 400)


def test_a_batch_too_small_to_judge_is_counted_and_never_a_finding(
    paths: ProjectPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 23 §5: the noisy statistics of a 3-line batch became a drift finding (and, with
    # monitor.retrain_on_alert, a retrain). Its result now says too few lines to judge.
    small = replace(too_few_lines("small-3", 3, 125), checked_at="2026-03-01T10:00:00+00:00")
    write_drift(paths, small)
    assert cli.main(["monitor", "watch"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"champion: {MODEL} v1",
        f"canary: BLEU 100.00 on 12 pairs of {SPLIT} (recorded 100.00; version the gate last "
        "promoted is the champion itself)",
        "drift: 1 batch(es) checked since the previous run (1 too few lines to judge)",
        "no findings",
    ]
    [record] = read_history(paths)
    assert (record["drift"], record["findings"]) == ([small.to_json()], [])
    metrics = Registry.connect(paths, MODEL).client.get_run(record["mlflow_run_id"]).data.metrics
    assert {key: value for key, value in metrics.items() if key.startswith("drift.")} == {
        "drift.batches": 1.0,
        "drift.drifted_batches": 0.0,
        "drift.too_few_lines_batches": 1.0,
    }
    report = (paths.watch_dir / "report.md").read_text("utf-8").splitlines()
    assert [line for line in report if line.startswith("| small-3 |")] == [
        "| small-3 | 2026-03-01T10:00:00+00:00 | lines | 3 | min 125 | not judged: too few lines |"
    ]


# --- two watch runs at once ------------------------------------------------------------------

# One watch run in its own process. `pause-before-writing` stops it just before it writes
# history.jsonl (inside the history's lock) until a line arrives on stdin; `announce-lock`
# prints "locking" before it asks for that lock, so the test knows it now waits for it.
WATCH_PROCESS = """
import fcntl, sys
from pipeline.config import load_config
from pipeline.monitor import watch
from pipeline.paths import project_paths

if sys.argv[1] == "pause-before-writing":
    write = watch.atomic_write_text
    def paused(path, text):
        if path.name == "history.jsonl":
            print("writing", flush=True)
            sys.stdin.readline()
        write(path, text)
    watch.atomic_write_text = paused
else:
    flock = fcntl.flock
    def announced(handle, operation):
        if str(getattr(handle, "name", "")).endswith(".history.lock"):
            print("locking", flush=True)
        flock(handle, operation)
    fcntl.flock = announced
record = watch.run_watch(project_paths(), load_config())
print("recorded", record["mlflow_run_id"], flush=True)
"""


def start_watch(
    paths: ProjectPaths, role: str, log: Path, processes: list[subprocess.Popen[str]]
) -> subprocess.Popen[str]:
    env = {**venv_environ(), "MT_PROJECT_DIR": str(paths.root), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen(
        [sys.executable, "-c", WATCH_PROCESS, role],
        cwd=paths.root, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=log.open("w", encoding="utf-8"),
    )  # fmt: skip
    processes.append(process)
    return process


def recorded_run(output: str) -> str:
    """The MLflow run id a watch process printed last."""
    [line] = [line for line in output.splitlines() if line.startswith("recorded ")]
    return line.removeprefix("recorded ")


@pytest.mark.timeout(600)  # a hang guard for the two processes, not a measured time
def test_two_watch_runs_at_once_both_land_in_the_history(
    paths: ProjectPaths, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    # Issue 25 §9: each run rewrote history.jsonl from what it had read before, so a run that
    # wrote in between was lost. The first run is held where it writes; the second runs whole.
    first = start_watch(paths, "pause-before-writing", tmp_path / "first.log", processes)
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline() == "writing\n", (tmp_path / "first.log").read_text("utf-8")
    second = start_watch(paths, "announce-lock", tmp_path / "second.log", processes)
    assert second.stdout is not None
    seen = []  # until the second waits for the lock, or (without one) has finished
    while (line := second.stdout.readline()) not in ("", "locking\n"):
        seen.append(line)
    first.stdin.write("\n")
    first.stdin.flush()
    first_out, _ = first.communicate()
    second_out, _ = second.communicate()
    assert (first.returncode, second.returncode) == (0, 0), (tmp_path / "second.log").read_text()
    history = read_history(paths)
    assert [record["mlflow_run_id"] for record in history] == [
        recorded_run(first_out),
        recorded_run("".join(seen) + second_out),
    ]
    report = (paths.watch_dir / "report.md").read_text("utf-8")
    assert all(f"| {record['checked_at']} | v1 |" in report for record in history)


# --- alerts through the real notifiers ------------------------------------------------------


class MailBox:
    """aiosmtpd handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[Any]:
        return [
            email.message_from_bytes(item.content, policy=email.policy.default)
            for item in self.envelopes
        ]


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[MailBox, int]]:
    """A local SMTP server (aiosmtpd) for the module; its mailbox and port."""
    from aiosmtpd.controller import Controller

    box, port = MailBox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def mailbox(
    smtp_server: tuple[MailBox, int], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MailBox]:
    """The empty mailbox, and the Airflow connection smtp_default pointing at its server."""
    box, port = smtp_server
    box.envelopes.clear()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true&retry_limit=0&timeout=10"
        "&from_email=mt-alerts%40example.org",
    )
    yield box


class Receiver(http.server.BaseHTTPRequestHandler):
    answer: ClassVar[tuple[int, bytes]] = (204, b"")
    received: ClassVar[list[tuple[str, str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        status, text = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[Receiver]]]:
    """A local HTTP receiver on 127.0.0.1; its URL and what it received."""
    handler = type("Hook", (Receiver,), {"received": [], "answer": (204, b"")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/mt", handler
    server.shutdown()
    server.server_close()


TARGETS = {"alert_emails": ("ops@example.org", "ml@example.org"), "smtp_conn_id": "smtp_default"}


class TaskInstance:
    """The task instance facts a notifier reads from Airflow's context (a live run gives the
    Task SDK's RuntimeTaskInstance; tests/test_airflow_live.py covers that)."""

    dag_id, task_id, map_index, try_number = "retrain_translation", "train", -1, 2
    run_id = "manual__2026-03-01T10:00:00+00:00"
    log_url = "http://airflow.example.org/dags/retrain_translation/runs/r/tasks/train"

    def __init__(self, **facts: Any) -> None:
        self.__dict__.update(facts)
        self.xcoms: dict[tuple[str, str], Any] = {}

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.xcoms[(task_ids, key)]


def test_task_failure_reaches_mail_and_webhook_exactly(
    mailbox: MailBox, webhook: tuple[str, type[Receiver]]
) -> None:
    url, receiver = webhook
    context = {"ti": TaskInstance(), "exception": ValueError("no such file: data/raw\ndetails")}
    for notifier in alerts.failure_notifiers(monitor(**TARGETS, alert_webhook_url=url)):
        notifier(context)  # what Airflow does with each on_failure_callback
    [mail] = mailbox.messages()
    assert mailbox.envelopes[0].rcpt_tos == ["ops@example.org", "ml@example.org"]
    assert (mail["Subject"], mail["From"], mail["To"]) == (
        "[mt] retrain_translation: task train failed (run manual__2026-03-01T10:00:00+00:00)",
        "mt-alerts@example.org",
        "ops@example.org, ml@example.org",
    )
    assert mail.get_body(("html",)).get_content() == (
        "<p>Task train of DAG retrain_translation failed in run "
        "manual__2026-03-01T10:00:00+00:00, try 2.</p>\n"
        "<p>Error: ValueError: no such file: data/raw</p>\n"
        f"<p>Log: {TaskInstance.log_url}</p>"
    )
    assert receiver.received == [
        (
            "/hooks/mt",
            "application/json",
            {
                "event": "task_failed",
                "subject": mail["Subject"],
                "text": "Task train of DAG retrain_translation failed in run "
                "manual__2026-03-01T10:00:00+00:00, try 2.\n"
                f"Error: ValueError: no such file: data/raw\nLog: {TaskInstance.log_url}",
                "dag_id": "retrain_translation",
                "task_id": "train",
                "run_id": "manual__2026-03-01T10:00:00+00:00",
                "try_number": 2,
                "error": "ValueError: no such file: data/raw",
                "log_url": TaskInstance.log_url,
            },
        )
    ]


def test_approval_waiting_names_the_version_and_the_link_to_answer(
    mailbox: MailBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/")
    task = ApprovalOperator(
        task_id="approve_promotion", subject="Promote?", response_timeout=timedelta(hours=72)
    )
    ti = TaskInstance(task_id="approve_promotion", try_number=1)
    request = {"model_name": MODEL, "version": "7", "body": "**m** v7\n\n| BLEU | 31.2 |"}
    ti.xcoms[("choose_promotion", "approval")] = request
    [notifier] = alerts.approval_notifiers(monitor(**TARGETS))
    notifier({"ti": ti, "task": task})  # what HITLOperator.execute does with its notifiers
    [mail] = mailbox.messages()
    assert mail["Subject"] == f"[mt] approval waiting: promote {MODEL} version 7 to @champion?"
    link = (
        "https://airflow.example.org/dags/retrain_translation/runs/"
        "manual__2026-03-01T10:00:00+00:00/tasks/approve_promotion/required_actions?map_index=-1"
    )
    assert mail.get_body(("html",)).get_content() == (
        "<p>Run manual__2026-03-01T10:00:00+00:00 of retrain_translation waits for a person: "
        f"promote {MODEL} version 7 to @champion?</p>\n"
        f"<p>Approve or reject it in the Airflow UI: {link}</p>\n"
        "<p>Unanswered after 72 h (orchestration.approval_timeout_h), it is rejected.</p>\n"
        "<p></p>\n<p>**m** v7</p>\n<p></p>\n<p>| BLEU | 31.2 |</p>"
    )


def test_watch_findings_are_sent_and_a_refusing_webhook_is_an_error(
    mailbox: MailBox, webhook: tuple[str, type[Receiver]]
) -> None:
    url, receiver = webhook
    record = {
        "checked_at": "2026-03-02T00:00:05+00:00",
        "model_name": MODEL,
        "version": "2",
        "findings": [{"kind": "drift", "message": "incoming batch fr-1 <b> drifted"}],
        "mlflow_run_id": "abc123",
    }
    message = alerts.findings_message(record, "/srv/mt/reports/monitoring/watch/report.md", True)
    targets = monitor(**TARGETS, alert_webhook_url=url)
    assert alerts.send_alert(targets, message, {}) == 2
    [mail] = mailbox.messages()
    assert mail["Subject"] == f"[mt] champion watch: 1 finding(s) for {MODEL} v2"
    assert mail.get_body(("html",)).get_content() == (
        f"<p>The champion watch of 2026-03-02T00:00:05+00:00 found 1 problem(s) with {MODEL} "
        "v2:</p>\n<p>- drift: incoming batch fr-1 &lt;b&gt; drifted</p>\n"
        "<p>Report: /srv/mt/reports/monitoring/watch/report.md</p>\n"
        "<p>A retrain was requested through the raw-corpus Asset "
        "(monitor.retrain_on_alert).</p>"
    )
    [(_, _, payload)] = receiver.received
    assert payload == {
        "event": "watch_findings",
        "subject": mail["Subject"],
        "text": message.text,
        "model_name": MODEL,
        "version": "2",
        "checked_at": "2026-03-02T00:00:05+00:00",
        "findings": record["findings"],
        "report": "/srv/mt/reports/monitoring/watch/report.md",
        "retrain_requested": True,
        "mlflow_run_id": "abc123",
    }
    receiver.answer = (503, b"receiver is down for maintenance")
    with pytest.raises(RuntimeError) as refused:
        alerts.send_alert(monitor(alert_webhook_url=url), message, {})
    assert str(refused.value) == (
        f"webhook {url} answered HTTP 503 to the watch_findings alert: receiver is down for "
        "maintenance"
    )
    assert (
        alerts.notifiers(monitor(alert_emails=(), alert_webhook_url=""), alerts.failure_message)
        == []
    )


# --- the DAGs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alerting_dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """The dags/ folder parsed for a project whose params name alert targets and retrain."""
    root = tmp_path_factory.mktemp("alerting")
    (root / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    monitor_params = {
        "alert_emails": ["ops@example.org"],
        "alert_webhook_url": "http://127.0.0.1:9/hook",
        "retrain_on_alert": True,
    }
    data = {"source": "dir", "path": "/srv/mt/corpus"}
    write_params(root, {"monitor": monitor_params, "data": data})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        patch.setenv("MT_PROJECT_DIR", str(root))
        _load_cached.cache_clear()
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(REPO_ROOT / "dags")), root
        _load_cached.cache_clear()


def test_every_task_of_every_dag_alerts_on_failure(alerting_dagbag: tuple[Any, Path]) -> None:
    dagbag, _ = alerting_dagbag
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == [
        "retrain_translation",
        "sweep_translation",
        "translate_batch",
        "watch_champion",
    ]
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            kinds = [type(callback).__name__ for callback in task.on_failure_callback]
            assert kinds == ["MailNotifier", "WebhookNotifier"], (dag.dag_id, task.task_id)
    approval = dagbag.dags["retrain_translation"].get_task("approve_promotion")
    assert [type(n).__name__ for n in approval.notifiers] == ["MailNotifier", "WebhookNotifier"]


def test_watch_dag_alerts_then_requests_a_retrain_on_the_raw_corpus_asset(
    alerting_dagbag: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException
    from airflow.sdk.execution_time.context import OutletEventAccessors

    dagbag, root = alerting_dagbag
    dag = dagbag.dags["watch_champion"]
    assert {task.task_id: task.upstream_task_ids for task in dag.tasks} == {
        "watch": set(),
        "has_findings": {"watch"},
        "alert": {"watch", "has_findings"},
        "request_retrain": {"watch", "has_findings"},
    }
    request = dag.get_task("request_retrain")
    raw_corpus = dagbag.dags["retrain_translation"].timetable.asset_condition
    assert request.outlets == [raw_corpus]  # the Asset retrain_translation runs on
    finding = {"kind": "drift", "message": "incoming batch fr-1 drifted"}
    record = {"checked_at": "2026-03-02T00:00:05+00:00", "findings": [finding]}
    monkeypatch.setenv("MT_PROJECT_DIR", str(root))
    events = OutletEventAccessors()
    extra = request.python_callable(record, outlet_events=events)
    assert (
        events[raw_corpus].extra
        == extra
        == {
            "requested_by": "watch_champion",
            "watch_checked_at": "2026-03-02T00:00:05+00:00",
            "findings": ["incoming batch fr-1 drifted"],
            "data_path": "/srv/mt/corpus",
        }
    )
    # retrain_translation takes `data_path` from it and ignores the rest.
    config = load_config(root / "params.yaml")
    assert event_values([extra], config) == {"data_path": "/srv/mt/corpus"}
    multi30k = replace(config, data=replace(config.data, source="multi30k"))
    assert "data_path" not in retrain_event_extra(multi30k, record)  # it downloads again
    write_params(root, {"monitor": {"retrain_on_alert": False}})
    _load_cached.cache_clear()
    with pytest.raises(AirflowSkipException, match="monitor.retrain_on_alert is false"):
        request.python_callable(record, outlet_events=OutletEventAccessors())


def test_a_batch_too_small_to_judge_stops_at_the_watch_dags_short_circuit(
    alerting_dagbag: tuple[Any, Path],
) -> None:
    dagbag, _ = alerting_dagbag  # its params set monitor.retrain_on_alert: true
    healthy = ChampionCheck(MODEL, "1", True, None, ())
    record = watch_record("2026-03-02T00:00:05+00:00", healthy, [too_few_lines("s", 3, 125)], None)
    assert record["findings"] == []
    has_findings = dagbag.dags["watch_champion"].get_task("has_findings")
    assert has_findings.python_callable(record) is False  # alert and request_retrain skipped
