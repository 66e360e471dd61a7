"""What `mt serve` tells Prometheus (GET /metrics, the text exposition format).

One registry per server (not prometheus_client's process-wide default, so that tests and
several apps in one process count apart):
- `mt_serve_requests_total{status}`: /invocations answers by HTTP status;
- `mt_serve_request_seconds`: their latency, from the request's arrival to its answer;
- `mt_serve_batch_requests` and `mt_serve_batch_rows`: how many requests and texts each decoded
  batch held (serving_batch.py), `mt_serve_batch_seconds`: how long the model took;
- `mt_serve_model_info{uri,version}` = 1 for the version serving (0 for those before it);
- `mt_serve_model_switches_total` and `mt_serve_model_switch_failures_total`: @champion moves
  followed, and versions refused because they did not load or answer.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.serving_batch import BatchRecord
from pipeline.serving_follow import ServedModel

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The server's counters and histograms, and their exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mt_serve_requests", "Requests to /invocations by HTTP status", ["status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mt_serve_request_seconds", "Latency of /invocations requests",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "mt_serve_batch_requests", "Requests per decoded batch",
            buckets=SIZE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "mt_serve_batch_rows", "Texts per decoded batch",
            buckets=SIZE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "mt_serve_batch_seconds", "Model time per decoded batch",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.model_info = Gauge(
            "mt_serve_model_info", "1 for the model version serving now", ["uri", "version"],
            registry=self.registry,
        )  # fmt: skip
        self.switches = Counter(
            "mt_serve_model_switches", "Switches to a new @champion version",
            registry=self.registry,
        )  # fmt: skip
        self.switch_failures = Counter(
            "mt_serve_model_switch_failures",
            "Versions not switched to: they did not load or answer the canary sentences",
            ["version"], registry=self.registry,
        )  # fmt: skip

    def answered(self, status: int, seconds: float) -> None:
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)

    def batch(self, record: BatchRecord) -> None:
        self.batch_requests.observe(record.requests)
        self.batch_rows.observe(record.rows)
        self.batch_seconds.observe(record.seconds)

    def serving(self, model: ServedModel, previous: ServedModel | None = None) -> None:
        if previous is not None:
            self.model_info.labels(uri=previous.uri, version=previous.version or "").set(0)
            self.switches.inc()
        self.model_info.labels(uri=model.uri, version=model.version or "").set(1)

    def refused(self, version: str) -> None:
        self.switch_failures.labels(version=version).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
