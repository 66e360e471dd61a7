"""Webhook secrets an MLflow server can still read with two workers and after a restart (issue
25: docker/compose.yaml gave MLflow no MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY, so each server
process encrypted them with a key of its own).

A real `mlflow server --workers 2` on SQLite, a real receiver on 127.0.0.1 that checks MLflow's
HMAC signature with pipeline/registry/webhooks.py: with the key the compose file now passes,
every listing answers and a delivery after a restart is signed with the secret. (Without it the
same restart made the webhook unreadable: listing it answered HTTP 500, tried once by hand;
not kept as a test, it would only show MLflow's behaviour and cost CI a server's two starts.)
"""

from __future__ import annotations

import base64
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline.registry.webhooks import signature
from tests.mlflow_server import MlflowServer, free_port

pytestmark = pytest.mark.slow

SECRET = "hmac-secret-of-this-test"
# A refused listing answers at once: MLflow's client would retry a 500 for minutes.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@pytest.fixture(autouse=True)
def client_answers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)


# Settings the compose file gives MLflow for the webhook receiver on its private network.
WEBHOOK_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "0",
}


class Recorder(http.server.BaseHTTPRequestHandler):
    deliveries: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Recorder.deliveries.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    Recorder.deliveries = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def two_worker_server(tmp_path: Path, key: str | None) -> MlflowServer:
    env = WEBHOOK_ENV | ({"MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": key} if key else {})
    return MlflowServer(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        tmp_path / "artifacts",
        tmp_path / "mlflow.log",
        extra_env=env,
        workers=2,
    )


def webhook_names(url: str) -> list[str]:
    from mlflow import MlflowClient

    return [hook.name for hook in MlflowClient(url, url).list_webhooks()]


def test_webhooks_stay_readable_across_workers_and_a_restart_with_the_key(
    tmp_path: Path, receiver: str
) -> None:
    from mlflow import MlflowClient

    fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()  # as docker/make-env.sh makes
    server = two_worker_server(tmp_path, fernet_key).start()
    try:
        client = MlflowClient(server.url, server.url)
        hook = client.create_webhook(
            "audit", receiver, ["model_version_alias.created"], secret=SECRET
        )
        # Each listing goes to one of the two workers: every one of them reads the secret.
        assert [webhook_names(server.url) for _ in range(8)] == [["audit"]] * 8
        server.stop()
        server.start()
        assert webhook_names(server.url) == ["audit"]
        result = client.test_webhook(hook.webhook_id)
        assert (result.success, result.response_status) == (True, 200)
    finally:
        server.stop()
    [(headers, body)] = Recorder.deliveries
    expected = signature(
        SECRET, headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"], body
    )
    assert headers["X-MLflow-Signature"] == expected
    assert abs(int(headers["X-MLflow-Timestamp"]) - time.time()) < 300
