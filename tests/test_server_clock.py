"""The tracking server's clock (pipeline/registry/server_clock.py), read from a real HTTP server
on 127.0.0.1 whose `Date` header the test sets, and the webhook receiver when it cannot be read.

The end-to-end cases (an mt host and a receiver under libfaketime against `mlflow server`) are
in tests/test_registry_outside_moves.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from pipeline.paths import project_paths
from pipeline.registry.errors import RegistryError
from pipeline.registry.server_clock import server_offset_s
from pipeline.registry.webhooks import Receiver
from tests.local_http import serving
from tests.test_registry_outside_moves import alias_event, signed_headers

SECRET = "secret-of-this-test"


@dataclass
class ClockServer:
    """A server whose answers carry `Date` = this host's clock + `ahead_s` (None: no Date)."""

    ahead_s: float | None
    requests: list[str] = field(default_factory=list)
    url: str = ""


@contextlib.contextmanager
def clock_server(ahead_s: float | None) -> Iterator[ClockServer]:
    served = ClockServer(ahead_s)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(self.path)
            self.send_response_only(200)  # no Date, no Server: added below as the test says
            if served.ahead_s is not None:
                self.send_header("Date", formatdate(time.time() + served.ahead_s, usegmt=True))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as server:
        served.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield served


def test_the_offset_is_the_servers_date_against_this_hosts_clock_read_once_a_minute() -> None:
    with clock_server(ahead_s=600) as server:
        offset = server_offset_s(server.url)
        assert server_offset_s(server.url) == offset  # kept: the server is asked once
        assert server.requests == ["/health"]
    # The Date header counts whole seconds; the reading sits mid-second and mid-round-trip.
    assert 599 <= offset <= 601


def test_a_store_that_is_not_a_server_uses_this_hosts_clock() -> None:
    for uri in ("sqlite:////tmp/mlruns.db", "postgresql://mt@db/mlflow"):
        assert server_offset_s(uri) == 0.0


def test_a_server_without_a_date_header_is_named_in_one_line() -> None:
    with clock_server(ahead_s=None) as server, pytest.raises(RegistryError) as error:
        server_offset_s(server.url)
    assert str(error.value) == (
        f"the tracking server {server.url} answered GET /health without a usable Date header "
        "(None); mt dates champion moves and checks webhook deliveries by the server's clock "
        "(fix: serve MLflow through a server or proxy that sends the HTTP Date header)"
    )


def test_the_receiver_answers_503_when_the_servers_clock_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow retries a 5xx (and never a 4xx): a delivery it cannot check yet is not lost. An
    unsigned request is refused before the receiver calls the server at all."""
    payload = alias_event("m", "1")
    with clock_server(ahead_s=None) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        receiver = Receiver(project_paths(tmp_path), SECRET)
        unsigned = receiver.handle(*signed_headers("not-the-secret", payload))
        assert server.requests == []
        status, answer = receiver.handle(*signed_headers(SECRET, payload))
    assert unsigned[0] == 401
    assert (status, answer) == (
        503,
        {
            "error": f"the tracking server {server.url} answered GET /health without a usable "
            "Date header (None); mt dates champion moves and checks webhook deliveries by the "
            "server's clock (fix: serve MLflow through a server or proxy that sends the HTTP "
            "Date header)"
        },
    )
