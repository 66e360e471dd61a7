"""Moves of @champion made outside mt, and the smoke check, against the test
run's real `mlflow server` (tests/conftest.py `shared_mlflow`: PostgreSQL; webhooks need a SQL
backend) and the webhook receiver as a process.

The alias is moved the way an MLflow user moves it: the server's REST API
(`POST /api/2.0/mlflow/registered-models/alias`). `mt registry history` and `rollback` run as
`mt` processes. Each test has a registered model of its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from pipeline import cli
from pipeline.config import load_config
from pipeline.paths import project_paths
from pipeline.registry.commands import registry_main
from pipeline.registry.store import CHAMPION, Registry
from pipeline.registry.webhooks import SECRET_ENV, WEBHOOK_NAME
from pipeline.tracking import fluent_store
from tests.mlflow_server import (
    BIN_DIR,
    UPPERCASE_MODEL_CODE,
    MlflowServer,
    free_port,
    prepare_registry_project,
    venv_environ,
)

pytestmark = pytest.mark.slow

SECRET = "webhook-secret-of-this-test"
WAIT_S = 60


@pytest.fixture(scope="module")
def server(shared_mlflow: MlflowServer) -> MlflowServer:
    """The test run's server (tests/conftest.py: webhooks to 127.0.0.1 allowed, used at once);
    every test here names its model after itself."""
    return shared_mlflow


@pytest.fixture(scope="module")
def standin(server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    """The upper-casing stand-in pyfunc (tests/mlflow_server.py), logged once.

    Packaged lightly (no code_paths, no input example, no requirement inference): every
    version made from it is loaded by the smoke check, in this process, where `pipeline`
    is importable anyway.
    """
    directory = tmp_path_factory.mktemp("standin")
    code, prefix = directory / "uppercase_model.py", directory / "prefix.txt"
    code.write_text(UPPERCASE_MODEL_CODE, encoding="utf-8")
    prefix.write_text("", encoding="utf-8")
    experiment_id = MlflowClient(server.url).create_experiment("stand-in")
    with (
        fluent_store(server.url),
        mlflow.start_run(experiment_id=experiment_id, run_name="stand-in"),
    ):
        return mlflow.pyfunc.log_model(
            name="translator",
            python_model=str(code),
            artifacts={"prefix": str(prefix)},
            model_config={"max_input_chars": 50, "max_batch_rows": 4, "max_request_work": 120},
            pip_requirements=["mlflow"],
        )


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
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return project_dir


def standin_versions(standin: ModelInfo, count: int) -> Registry:
    """The project's model with `count` versions of the stand-in and v1 promoted by mt."""
    registry = open_registry()
    registry.ensure_model()
    for _ in range(count):
        registry.client.create_model_version(
            registry.name, standin.model_uri, standin.run_id, model_id=standin.model_id
        )
    assert registry_main(["promote", "1", "--reason", "first"]) == 0
    return registry


def open_registry() -> Registry:
    return Registry.connect(project_paths(), load_config().register.model_name)


def champion(registry: Registry) -> str | None:
    return registry.champion_number()


def set_alias_through_rest(server: MlflowServer, name: str, version: str) -> None:
    """What the MLflow UI does when a person moves @champion."""
    body = {"name": name, "alias": CHAMPION, "version": version}
    answer = requests.post(f"{server.url}/api/2.0/mlflow/registered-models/alias", json=body)
    assert answer.status_code == 200, answer.text


def delete_alias_through_rest(server: MlflowServer, name: str) -> None:
    body = {"name": name, "alias": CHAMPION}
    answer = requests.delete(f"{server.url}/api/2.0/mlflow/registered-models/alias", json=body)
    assert answer.status_code == 200, answer.text


def run_mt(
    project: Path, *args: str, clock: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mt ARGS` as a process; `clock`: a command it runs under (`skewed_clock`)."""
    env = {**venv_environ(), "MT_PROJECT_DIR": str(project), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [*(clock or []), str(BIN_DIR / "mt"), *args], cwd=project, env=env,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def history_lines(stdout: str) -> list[str]:
    """The moves `mt registry history` printed (MLflow adds "View run" lines of its own)."""
    return [line for line in stdout.splitlines() if line[:4].isdigit()]


def moves_of(registry: Registry) -> list[tuple[str, str | None, str | None, str]]:
    return [(m.action, m.from_version, m.to_version, m.status) for m in registry.recorded_moves()]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class WebhookReceiver:
    """`mt registry webhook serve` as a process, its stdout in a file."""

    process: subprocess.Popen[bytes]
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def output(self) -> str:
        return self.log_file.read_text(errors="replace")


@contextlib.contextmanager
def webhook_receiver(
    project: Path, directory: Path, clock: list[str] | None = None
) -> Iterator[WebhookReceiver]:
    """The receiver as a process; `clock`: a command it runs under (`skewed_clock`)."""
    port = free_port()
    log_file = directory / "receiver.log"
    env = {**venv_environ(), "MT_PROJECT_DIR": str(project), "PYTHONUNBUFFERED": "1"}
    command = [str(BIN_DIR / "mt"), "registry", "webhook", "serve", "--port", str(port)]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [*(clock or []), *command],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    receiver = WebhookReceiver(process, port, log_file)
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, "the receiver")
        assert process.poll() is None, receiver.output()
        yield receiver
    finally:
        # The whole group: `faketime` runs the receiver as its child and does not pass SIGTERM
        # on, so terminating faketime alone left the receiver running after the test.
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def signed_post(url: str, secret: str, payload: dict[str, object], age_s: int = 0) -> int:
    """A delivery signed as MLflow signs one (mlflow/webhooks/delivery.py); its HTTP status."""
    return signed_delivery(url, secret, payload, age_s).status_code


def signed_delivery(
    url: str, secret: str, payload: dict[str, object], age_s: int = 0
) -> requests.Response:
    """A delivery signed as MLflow signs one, dated `age_s` before this host's clock."""
    headers, body = signed_headers(secret, payload, age_s)
    return requests.post(url, data=body, headers=headers, timeout=30)


def signed_headers(
    secret: str, payload: dict[str, object], age_s: int = 0
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a delivery as MLflow signs one (mlflow/webhooks/delivery.py)."""
    body = json.dumps(payload)
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time()) - age_s)
    signed = f"{delivery_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": f"v1,{base64.b64encode(digest).decode()}",
    }
    return headers, body.encode()


def alias_event(name: str, version: str) -> dict[str, object]:
    return {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": {"name": name, "alias": CHAMPION, "version": version},
    }


# --- a move through the REST API, recorded by the webhook receiver -------------------------


def test_webhook_records_a_move_made_through_the_rest_api_and_rollback_undoes_it(
    project: Path,
    server: MlflowServer,
    standin: ModelInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    with webhook_receiver(project, tmp_path) as receiver:
        try:
            assert registry_main(["webhook", "install", "--url", receiver.url]) == 0
            assert registry_main(["webhook", "install", "--url", receiver.url]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out == [
                f"webhook {WEBHOOK_NAME} created: @champion alias events -> {receiver.url}",
                f"webhook {WEBHOOK_NAME} updated: @champion alias events -> {receiver.url}",
            ]
            assert [h.name for h in client.list_webhooks()] == [WEBHOOK_NAME]
            capsys.readouterr()
            _webhook_scenario(project, server, standin, receiver, capsys)
        finally:
            for hook in client.list_webhooks():
                client.delete_webhook(hook.webhook_id)


def _webhook_scenario(
    project: Path,
    server: MlflowServer,
    standin: ModelInfo,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = standin_versions(standin, 2)  # v1 promoted by mt, v2 not
    # The receiver recognises mt's own move when its alias event comes in.
    wait_for(lambda: "already in the trail: promote v- -> v1" in receiver.output(), "echo")

    set_alias_through_rest(server, registry.name, "2")
    wait_for(lambda: ": recorded: outside v1 -> v2" in receiver.output(), "the receiver")
    outside = registry.recorded_moves()[1]
    assert (outside.action, outside.from_version, outside.to_version) == ("outside", "1", "2")
    delivery_id = registry.client.get_run(outside.run_id).data.tags["mt.webhook.delivery_id"]
    assert outside.actor == f"outside mt (MLflow webhook delivery {delivery_id})"
    recorded = f"delivery {delivery_id} ({registry.name}): recorded: outside v1 -> v2"
    assert recorded in receiver.output()

    forged = signed_post(receiver.url, "not-the-secret", alias_event(registry.name, "1"))
    replayed = signed_post(receiver.url, SECRET, alias_event(registry.name, "1"), age_s=900)
    assert (forged, replayed) == (401, 400)
    assert len(registry.recorded_moves()) == 2

    history = run_mt(project, "registry", "history")
    assert history.returncode == 0, history.stderr
    assert history_lines(history.stdout)[1].endswith(
        f"outside  v1 -> v2  [FINISHED]  outside mt, by {outside.actor}: @champion set outside "
        f"mt, reported by MLflow's webhook at {outside.when} (MLflow does not say who)"
    )
    capsys.readouterr()
    assert registry_main(["rollback", "--reason", "undo the UI move"]) == 0
    rolled_back = f"@champion of {registry.name} rolled back: v2 -> v1\n"
    assert capsys.readouterr().out.endswith(rolled_back)
    # The receiver sees the rollback's own alias event and does not record it twice.
    wait_for(lambda: "already in the trail: rollback v2 -> v1" in receiver.output(), "echo")
    assert moves_of(registry) == [
        ("promote", None, "1", "FINISHED"),
        ("outside", "1", "2", "FINISHED"),
        ("rollback", "2", "1", "FINISHED"),
    ]
    assert champion(registry) == "1"


# --- the same without a receiver: reconcile finds the move -----------------------------------


def test_reconcile_records_a_move_made_through_the_rest_api_and_rollback_undoes_it(
    project: Path, server: MlflowServer, standin: ModelInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = standin_versions(standin, 2)  # v1 promoted by mt, v2 not
    set_alias_through_rest(server, registry.name, "2")

    history = run_mt(project, "registry", "history")
    assert history.returncode == 0, history.stderr
    line = history_lines(history.stdout)[1]
    assert " outside  v1 -> v2  [FINISHED]  outside mt, by outside mt (found by reconcile): " in (
        line
    )
    assert "@champion was at v2, the trail at v1; MLflow records neither who" in line
    capsys.readouterr()
    assert registry_main(["rollback"]) == 0
    assert capsys.readouterr().out.endswith(
        f"@champion of {registry.name} rolled back: v2 -> v1\n"
    )

    # @champion deleted outside mt: rollback puts back the champion it had.
    delete_alias_through_rest(server, registry.name)
    assert registry_main(["rollback", "--reason", "restore"]) == 0
    assert capsys.readouterr().out.endswith(
        f"@champion of {registry.name} rolled back: v- -> v1\n"
    )
    assert moves_of(registry) == [
        ("promote", None, "1", "FINISHED"),
        ("outside", "1", "2", "FINISHED"),
        ("rollback", "2", "1", "FINISHED"),
        ("outside", "1", None, "FINISHED"),
        ("rollback", None, "1", "FINISHED"),
    ]
    assert champion(registry) == "1"


# --- clocks: an mt host or a receiver whose clock is off the server's (issue 25) ---------------

# Far past what the old code allowed: 60 s between an mt host and the server, and 300 s between
# the receiver and the server.
SKEW = "+10m"


def skewed_clock(offset: str) -> list[str]:
    """`faketime -f OFFSET`: the command after it runs with its clock moved by OFFSET
    (libfaketime, preloaded: time(), gettimeofday() and clock_gettime() of the process)."""
    if shutil.which("faketime") is None:
        pytest.fail("libfaketime is not installed: run `make test-packages`")
    return ["faketime", "-f", offset]


@contextlib.contextmanager
def subscribed(server: MlflowServer, receiver: WebhookReceiver) -> Iterator[None]:
    """The webhook installed for `receiver`, and deleted after (the server is shared)."""
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    assert registry_main(["webhook", "install", "--url", receiver.url]) == 0
    try:
        yield
    finally:
        for hook in client.list_webhooks():
            client.delete_webhook(hook.webhook_id)


def outcomes(receiver: WebhookReceiver, name: str) -> list[str]:
    """What the receiver did with each delivery about model `name`, in order, without the
    actor of an echoed move ("... by <user>@<host> ...")."""
    about = f" ({name}): "
    return [
        line.split(about, 1)[1].split(" by ")[0]
        for line in receiver.output().splitlines()
        if line.startswith("delivery ") and about in line
    ]


def test_a_move_by_an_mt_host_whose_clock_is_ahead_is_known_as_its_own_when_delivered(
    project: Path, server: MlflowServer, standin: ModelInfo, tmp_path: Path
) -> None:
    """An mt host 10 minutes fast dated its move 10 minutes after the delivery that reported
    it, so the receiver recorded mt's own move as one made outside mt. Its moves are dated by
    the server's clock now (pipeline/registry/server_clock.py)."""
    clock = skewed_clock(SKEW)
    with webhook_receiver(project, tmp_path) as receiver, subscribed(server, receiver):
        registry = standin_versions(standin, 2)  # v1 promoted by mt in this process
        wait_for(lambda: len(outcomes(receiver, registry.name)) == 1, "the delivery of v1")
        promoted = run_mt(project, "registry", "promote", "2", "--reason", "fast", clock=clock)
        assert promoted.returncode == 0, promoted.stderr
        wait_for(lambda: len(outcomes(receiver, registry.name)) == 2, "the delivery of v2")
    assert outcomes(receiver, registry.name) == [
        "already in the trail: promote v- -> v1",
        "already in the trail: promote v1 -> v2",
    ]
    assert moves_of(registry) == [
        ("promote", None, "1", "FINISHED"),
        ("promote", "1", "2", "FINISHED"),
    ]
    fast_hosts_move = registry.recorded_moves()[1]
    assert fast_hosts_move.start_ms < time.time() * 1000 + 60_000  # not 10 minutes ahead


def test_a_receiver_whose_clock_is_ahead_keeps_genuine_deliveries_and_refuses_replays(
    project: Path, server: MlflowServer, standin: ModelInfo, tmp_path: Path
) -> None:
    """A receiver 10 minutes fast refused every genuine delivery (400, which MLflow does not
    retry): it held MLflow's signed timestamp against its own clock. It holds it against the
    server's now, says its own is off, and still refuses a delivery sent again 15 minutes on."""
    with (
        webhook_receiver(project, tmp_path, skewed_clock(SKEW)) as receiver,
        subscribed(server, receiver),
    ):
        registry = standin_versions(standin, 2)  # v1 promoted by mt in this process
        wait_for(lambda: len(outcomes(receiver, registry.name)) == 1, "the delivery of v1")
        set_alias_through_rest(server, registry.name, "2")
        wait_for(lambda: len(outcomes(receiver, registry.name)) == 2, "the delivery of v2")
        replayed = signed_delivery(receiver.url, SECRET, alias_event(registry.name, "1"), 900)
    assert outcomes(receiver, registry.name) == [
        "already in the trail: promote v- -> v1",
        "recorded: outside v1 -> v2",
    ]
    assert moves_of(registry) == [
        ("promote", None, "1", "FINISHED"),
        ("outside", "1", "2", "FINISHED"),
    ]
    timestamp = replayed.request.headers["X-MLflow-Timestamp"]
    # The server's clock is read to the second (its Date header), hence 899 to 901.
    assert replayed.status_code == 400 and replayed.json()["error"] in {
        f"timestamp {timestamp} is {age} s before the MLflow server's clock now (allowed: "
        "300 s): a replayed delivery, or one held up that long"
        for age in (899, 900, 901)
    }
    skew_warning = re.compile(
        r"this host's clock is (599|600|601) s ahead of the MLflow server's "
        rf"\({re.escape(server.url)}\); deliveries are checked against the server's clock, "
        r"but fix this host's time sync \(NTP\)"
    )
    assert skew_warning.search(receiver.output()), receiver.output()


# --- the smoke check: a broken version never becomes champion --------------------------------

BROKEN_MODEL_CODE = '''\
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class BrokenModel(PythonModel):
    """Loads fine; then raises, or gives too few translations or no text (model_config mode)."""

    def load_context(self, context):
        self.mode = context.model_config["mode"]

    def predict(self, context, model_input, params=None):
        if self.mode == "raise":
            raise RuntimeError("decoder weights missing")
        if self.mode == "short":
            return pd.DataFrame({"translation": ["EIN HUND."]})
        return pd.DataFrame({"translation": [None for _ in model_input["text"]]})


set_model(BrokenModel())
'''


def log_broken_version(registry: Registry, code: Path, mode: str) -> str:
    """A real pyfunc that misbehaves, logged and registered as a version of the model."""
    experiment = registry.client.get_experiment_by_name("stand-in")
    assert experiment is not None
    with (
        fluent_store(registry.uri),
        mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"broken-{mode}"),
    ):
        info = mlflow.pyfunc.log_model(
            name="translator",
            python_model=str(code),
            model_config={"mode": mode},
            pip_requirements=["mlflow"],  # no inference: it would load the model in a process
        )
    version = registry.client.create_model_version(
        registry.name, source=info.model_uri, run_id=info.run_id, model_id=info.model_id
    )
    return str(version.version)


def test_a_version_failing_the_smoke_check_never_becomes_champion(
    project: Path, standin: ModelInfo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = standin_versions(standin, 1)  # v1 champion: it passed the smoke check
    code = tmp_path / "broken_model.py"
    code.write_text(BROKEN_MODEL_CODE, encoding="utf-8")
    problems = {
        "raise": "RuntimeError: decoder weights missing",
        "short": "predict returned 1 outputs for 3 inputs",
        "none": "output 0 of 'A dog runs on the grass.' is None, not a string",
    }
    for mode, problem in problems.items():
        version = log_broken_version(registry, code, mode)
        caplog.clear()
        assert cli.main(["registry", "promote", version, "--reason", "try it"]) == 2
        assert (
            f"{registry.name} version {version} failed the smoke check, so it does not become "
            f"@champion: {problem} (fix: register a version"
        ) in caplog.text
    assert champion(registry) == "1"
    assert moves_of(registry) == [("promote", None, "1", "FINISHED")]


# --- the receiver under bad or idle clients (issue 25) ----------------------------------------


def raw_status(port: int, request: bytes, timeout_s: float = 5.0) -> int:
    """Send `request` as is on a fresh connection; the HTTP status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        answer = sock.recv(4096)
    status_line = answer.split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1])


def declared(head: str, length: str) -> bytes:
    return f"{head}Content-Length: {length}\r\n\r\n".encode()


def test_the_receiver_refuses_bodies_of_no_plain_length_and_serves_beside_an_idle_client(
    project: Path, tmp_path: Path
) -> None:
    with webhook_receiver(project, tmp_path) as receiver:
        idle = socket.create_connection(("127.0.0.1", receiver.port))  # connects, sends nothing
        try:
            head = "POST / HTTP/1.1\r\nHost: receiver\r\n"
            statuses = {
                length: raw_status(receiver.port, declared(head, length))
                for length in ("-1", "abc", str(2 << 20))
            }
            assert statuses == {"-1": 400, "abc": 400, str(2 << 20): 413}
            assert raw_status(receiver.port, f"{head}\r\n".encode()) == 411
            forged = signed_post(receiver.url, "not-the-secret", alias_event("m", "1"))
            assert forged == 401  # answered while the idle connection is still open
        finally:
            idle.close()
        assert receiver.process.poll() is None
        assert "Traceback" not in receiver.output()
