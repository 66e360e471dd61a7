"""The `default_args` every DAG of this project shares (imported by dags/ only, at parse time).

One owner, the retry policy of params.yaml `orchestration:` (no retries by default: a stage
that may retry says so itself; when it does, the delay doubles from `retry_delay_s` up to
`max_retry_delay_s`), and the failure alerts of `monitor:` on every task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipeline.config import MonitorConfig, OrchestrationConfig
from pipeline.monitor import alerts


def task_defaults(settings: OrchestrationConfig, monitor: MonitorConfig) -> dict[str, Any]:
    return {
        "owner": "mt-team",
        "retries": 0,
        "retry_delay": timedelta(seconds=settings.retry_delay_s),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=settings.max_retry_delay_s),
        "on_failure_callback": alerts.failure_notifiers(monitor),
    }
