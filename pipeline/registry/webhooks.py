"""Moves of `@champion` made outside mt, as MLflow reports them: its registry webhooks.

`mt registry webhook install --url URL` subscribes URL to MLflow's `model_version_alias.created`
and `.deleted` events (one webhook, created or updated by name, signed with the secret in
MT_REGISTRY_WEBHOOK_SECRET). `mt registry webhook serve` is the receiver: it checks each
delivery's HMAC signature exactly as `mlflow/webhooks/delivery.py` makes it (HMAC-SHA256 of
`<delivery id>.<unix timestamp>.<body>`, base64, header `X-MLflow-Signature: v1,<signature>`),
refuses a missing or wrong signature (401) and a signed timestamp more than five minutes off
the MLflow server's clock (400: a replay), and records a `@champion` move in the audit trail as
action `outside` unless the trail has it already (audit.record_delivery). A thread per
connection, each with a socket timeout, so a client that sends nothing holds up no one; a body
must declare its length, in digits, within 1 MiB (411, 400 and 413 otherwise), and nothing more
is read.

The timestamp is the server's `time.time()` when it sent the delivery, so it is compared with
the server's clock, read from its `Date` header (server_clock.py), never with this host's: a
receiver whose clock is off would refuse every genuine delivery with a 4xx, which MLflow does
not retry (it retries 429 and 5xx, three times, with the same id and timestamp). Such a host
is named in a warning instead. A replay inside the window changes nothing: a recorded delivery
is found in the trail by its id, and any other is judged at its own signed time again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlflow.entities.webhook import WebhookEvent
from mlflow.webhooks.constants import (
    WEBHOOK_DELIVERY_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_SIGNATURE_VERSION,
    WEBHOOK_TIMESTAMP_HEADER,
)

from pipeline.paths import ProjectPaths
from pipeline.registry.audit import AliasDelivery
from pipeline.registry.errors import RegistryError
from pipeline.registry.server_clock import server_offset_s
from pipeline.registry.store import CHAMPION, Registry, registry_call
from pipeline.tracking import redact, tracking_uri

log = logging.getLogger(__name__)

SECRET_ENV = "MT_REGISTRY_WEBHOOK_SECRET"  # noqa: S105 (an environment variable's name)
WEBHOOK_NAME = "mt-champion-audit"
ALIAS_ENTITY = "model_version_alias"
EVENTS = (WebhookEvent(ALIAS_ENTITY, "created"), WebhookEvent(ALIAS_ENTITY, "deleted"))
# Standard Webhooks' tolerance: a timestamp further from the server's clock is a replay.
TOLERANCE_S = 300
# A host whose clock is this far from the server's is named in a warning (NTP keeps well within).
SKEW_WARNING_S = 60
MAX_BODY_BYTES = 1 << 20
# Seconds a connection may stay silent (headers or body) before the receiver drops it.
SOCKET_TIMEOUT_S = 10.0


class DeliveryRejected(Exception):
    """A delivery the receiver refuses: `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def webhook_secret() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise RegistryError(
            f"{SECRET_ENV} is not set; the webhook is signed with it and the receiver checks "
            f"every delivery against it (fix: export {SECRET_ENV}=<a long random string> for "
            "both `mt registry webhook install` and `mt registry webhook serve`)"
        )
    return secret


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `<delivery id>.<timestamp>.<body>`, as MLflow signs."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{WEBHOOK_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, server_now_s: Callable[[], float]
) -> AliasDelivery | None:
    """The `@champion` alias event a genuine delivery reports, None for any other event;
    DeliveryRejected for a forged, replayed or malformed one.

    `server_now_s` (the server's clock) is read only once the signature holds, so unsigned
    requests make the receiver call no one."""
    lowered = {key.lower(): value for key, value in headers.items()}  # names: any case
    delivery_id = lowered.get(WEBHOOK_DELIVERY_ID_HEADER.lower(), "")
    timestamp = lowered.get(WEBHOOK_TIMESTAMP_HEADER.lower(), "")
    offered = lowered.get(WEBHOOK_SIGNATURE_HEADER.lower(), "").split()
    if not offered:
        raise DeliveryRejected(401, f"missing {WEBHOOK_SIGNATURE_HEADER} header")
    expected = signature(secret, delivery_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise DeliveryRejected(401, "signature does not match (wrong secret, or altered body)")
    if not timestamp.isdigit():
        raise DeliveryRejected(400, f"timestamp {timestamp!r} is not a unix time")
    _check_fresh(int(timestamp), server_now_s())
    return _alias_event(delivery_id, body)


def _check_fresh(timestamp: int, server_now_s: float) -> None:
    """DeliveryRejected unless the signed `timestamp` is within TOLERANCE_S of the server's
    clock now: MLflow sends a delivery at once and retries it within a few minutes."""
    off_s = round(server_now_s) - timestamp
    if abs(off_s) > TOLERANCE_S:
        when = f"{off_s} s before" if off_s > 0 else f"{-off_s} s after"
        raise DeliveryRejected(
            400,
            f"timestamp {timestamp} is {when} the MLflow server's clock now (allowed: "
            f"{TOLERANCE_S} s): a replayed delivery, or one held up that long",
        )


def _alias_event(delivery_id: str, body: bytes) -> AliasDelivery | None:
    try:
        payload = json.loads(body)
        data = payload["data"]
        is_alias = payload["entity"] == ALIAS_ENTITY and data.get("alias") == CHAMPION
        if not is_alias or payload["action"] not in {"created", "deleted"}:
            return None
        when = datetime.fromisoformat(payload["timestamp"])
        version = str(data["version"]) if payload["action"] == "created" else None
        return AliasDelivery(delivery_id, int(when.timestamp() * 1000), str(data["name"]), version)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeliveryRejected(400, f"not an MLflow alias event: {error}") from None


@dataclass
class Receiver:
    """Verifies deliveries and records them, one registry connection per model name."""

    paths: ProjectPaths
    secret: str
    registries: dict[str, Registry] = field(default_factory=dict)
    connecting: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            delivery = verify(self.secret, headers, body, self.server_now_s)
        except DeliveryRejected as rejected:
            log.warning("refused a webhook delivery: %s", rejected.message)
            return rejected.status, {"error": rejected.message}
        except RegistryError as error:  # the server's clock unread: MLflow retries a 5xx
            log.error("delivery not checked: %s", error)
            return 503, {"error": str(error)}
        if delivery is None:
            return 200, {"recorded": False, "outcome": "not a @champion alias event"}
        try:
            outcome = self._registry(delivery.model_name).record_webhook_delivery(delivery)
        except RegistryError as error:  # MLflow retries a 5xx delivery
            log.error("delivery %s not recorded: %s", delivery.delivery_id, error)
            return 503, {"error": str(error)}
        print(f"delivery {delivery.delivery_id} ({delivery.model_name}): {outcome}", flush=True)
        return 200, {"recorded": outcome.startswith("recorded"), "outcome": outcome}

    def server_now_s(self) -> float:
        """Now by the MLflow server's clock; a warning names this host's clock when it is off."""
        uri = tracking_uri(self.paths)
        with registry_call(uri, "reading the MLflow server's clock"):
            offset_s = server_offset_s(uri)
        if abs(offset_s) > SKEW_WARNING_S:
            log.warning(
                "this host's clock is %.0f s %s the MLflow server's (%s); deliveries are "
                "checked against the server's clock, but fix this host's time sync (NTP)",
                abs(offset_s),
                "ahead of" if offset_s < 0 else "behind",
                redact(uri),
            )
        return time.time() + offset_s

    def _registry(self, model_name: str) -> Registry:
        with self.connecting:  # deliveries arrive on threads of their own
            if model_name not in self.registries:
                self.registries[model_name] = Registry.connect(self.paths, model_name)
            return self.registries[model_name]


def body_length(headers: Mapping[str, str]) -> int:
    """The declared body length, or DeliveryRejected: missing (411), not plain digits, e.g.
    `-1` or `abc` (400), or over MAX_BODY_BYTES (413)."""
    declared = {key.lower(): value for key, value in headers.items()}.get("content-length")
    if declared is None:
        raise DeliveryRejected(411, "a delivery must declare its Content-Length")
    if not declared.strip().isdigit():
        raise DeliveryRejected(400, f"Content-Length {declared[:20]!r} is not a length")
    length = int(declared)
    if length > MAX_BODY_BYTES:
        raise DeliveryRejected(413, f"body over {MAX_BODY_BYTES} bytes")
    return length


def serve(paths: ProjectPaths, host: str, port: int) -> None:
    """Run the receiver until interrupted."""
    receiver = Receiver(paths, webhook_secret())

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S

        def do_POST(self) -> None:
            try:
                length = body_length(dict(self.headers.items()))
            except DeliveryRejected as rejected:
                log.warning("refused a webhook delivery: %s", rejected.message)
                self.close_connection = True
                self._answer(rejected.status, {"error": rejected.message})
                return
            status, answer = receiver.handle(dict(self.headers.items()), self.rfile.read(length))
            self._answer(status, answer)

        def _answer(self, status: int, answer: dict[str, Any]) -> None:
            body = json.dumps(answer).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"mt registry webhook receiver listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def install(registry: Registry, url: str, secret: str) -> str:
    """Create the webhook, or update the one of that name: 'created' or 'updated'."""
    client = registry.client
    with registry_call(registry.uri, f"installing the webhook {WEBHOOK_NAME}"):
        existing = [hook for hook in _all_webhooks(registry) if hook.name == WEBHOOK_NAME]
        description = "records @champion moves in mt's audit trail; see docs/registry.md"
        if existing:
            client.update_webhook(
                existing[0].webhook_id,
                url=url,
                events=list(EVENTS),
                description=description,
                secret=secret,
                status="ACTIVE",
            )
            return "updated"
        client.create_webhook(WEBHOOK_NAME, url, list(EVENTS), description, secret)
        return "created"


def _all_webhooks(registry: Registry) -> list[Any]:
    hooks: list[Any] = []
    token = None
    while True:
        page = registry.client.list_webhooks(max_results=100, page_token=token)
        hooks.extend(page)
        token = page.token
        if not token:
            return hooks
