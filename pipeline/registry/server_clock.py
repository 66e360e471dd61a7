"""The tracking server's clock, which the audit trail dates mt's moves by and the webhook
receiver checks deliveries against.

MLflow dates what its server sends: a webhook delivery's signed `X-MLflow-Timestamp` header and
its payload's `timestamp`. A run's `start_time`, on the other hand, is whatever the client sends,
by the clock of the host that runs mt. Compared directly, the two compare two hosts' clocks: an
mt host a minute fast made its own move look newer than the delivery reporting it (recorded as
a move made outside mt), and a receiver five minutes off refused every genuine delivery, which
MLflow does not retry (a 4xx). So mt reads the server's clock instead: the `Date` header of its
answer to `GET /health` (RFC 9110 has every origin server with a clock send it; uvicorn and
gunicorn, which run `mlflow server`, do), set against the middle of the round trip, plus half a
second for the header's whole seconds. The offset is kept for OFFSET_TTL_S.

A store that is not a server (`sqlite:`, a database URI) needs none of this: MLflow sends
webhooks from its server's request handlers only, so a move mt makes that way is never
delivered, and the host's own clock is used.
"""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

from pipeline.registry.errors import RegistryError
from pipeline.tracking import redact

SERVER_SCHEMES = ("http://", "https://")
HEALTH_ENDPOINT = "/health"
# Long enough that one move or delivery reads the clock once, short enough to follow a server
# whose clock is stepped (NTP) while a receiver runs for weeks.
OFFSET_TTL_S = 60.0

_offsets: dict[str, tuple[float, float]] = {}  # uri -> (offset_s, monotonic time measured)
_offsets_lock = threading.Lock()


def server_now_ms(uri: str) -> int:
    """Milliseconds since the epoch by the clock of the tracking server at `uri`."""
    return round((time.time() + server_offset_s(uri)) * 1000)


def server_offset_s(uri: str) -> float:
    """Seconds the server's clock is ahead of this host's; 0 for a store that is not a server.

    Raises MlflowException when the server does not answer (callers run inside
    `registry_call`, which turns it into a one-line RegistryError), RegistryError when its
    answer has no usable `Date`.
    """
    if not uri.startswith(SERVER_SCHEMES):
        return 0.0
    with _offsets_lock:
        known = _offsets.get(uri)
    if known is not None and time.monotonic() - known[1] < OFFSET_TTL_S:
        return known[0]
    offset = _measured_offset_s(uri)
    with _offsets_lock:
        _offsets[uri] = (offset, time.monotonic())
    return offset


def _measured_offset_s(uri: str) -> float:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    sent = time.time()
    response = http_request(get_default_host_creds(uri), HEALTH_ENDPOINT, "GET")
    received = time.time()
    date = response.headers.get("Date")
    try:
        server_s = parsedate_to_datetime(date).timestamp() + 0.5 if date else None
    except (TypeError, ValueError):
        server_s = None
    if server_s is None:
        raise RegistryError(
            f"the tracking server {redact(uri)} answered GET {HEALTH_ENDPOINT} without a usable "
            f"Date header ({date!r}); mt dates champion moves and checks webhook deliveries by "
            "the server's clock (fix: serve MLflow through a server or proxy that sends the HTTP "
            "Date header)"
        )
    return server_s - (sent + received) / 2
