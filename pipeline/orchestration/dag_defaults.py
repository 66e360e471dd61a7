"""What every DAG of this project shares (imported by dags/ only, at parse time): the params it
is parsed with, the project its tasks run in, and its `default_args`.

`default_args`: one owner, the retry policy of params.yaml `orchestration:` (no retries by
default: a stage that may retry says so itself; when it does, the delay doubles from
`retry_delay_s` up to `max_retry_delay_s`), and the failure alerts of `monitor:` on every task.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipeline.config import Config, MonitorConfig, OrchestrationConfig, load_config
from pipeline.orchestration import alerts
from pipeline.orchestration.tasks import PROJECT_VARIABLE, resolve_project_dir
from pipeline.paths import project_paths


def parse_time_config(dag_file: str) -> Config:
    """The params.yaml of MT_PROJECT_DIR, else of the repository the DAG file sits in."""
    root = os.environ.get("MT_PROJECT_DIR") or Path(dag_file).resolve().parents[1]
    return load_config(project_paths(root).params)


def project_dir() -> Path:
    """Where a task runs the stages: env MT_PROJECT_DIR, else the Airflow Variable."""
    from airflow.sdk import Variable

    return resolve_project_dir(lambda: Variable.get(PROJECT_VARIABLE, default=None))


def task_defaults(settings: OrchestrationConfig, monitor: MonitorConfig) -> dict[str, Any]:
    return {
        "owner": "mt-team",
        # Every task but train (which names orchestration.train_queue itself).
        "queue": settings.queue,
        "retries": 0,
        "retry_delay": timedelta(seconds=settings.retry_delay_s),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=settings.max_retry_delay_s),
        "on_failure_callback": alerts.failure_notifiers(monitor),
    }
