"""watch_champion: is @champion still loading, still scoring, and is the incoming text drifting?

This file is configuration: no work and no heavy import at parse time. The watch is
pipeline/monitor/watch.py (the same code as `mt monitor watch`); alerts are the notifiers of
pipeline/orchestration/alerts.py, built from params.yaml `monitor:`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from airflow.sdk import Asset, CronTriggerTimetable, dag, task

from pipeline.config import load_config
from pipeline.orchestration import alerts
from pipeline.orchestration.dag_defaults import parse_time_config, project_dir, task_defaults
from pipeline.paths import project_paths

# At parse time the params.yaml beside this DAG (or MT_PROJECT_DIR's) gives schedule and targets.
CONFIG = parse_time_config(__file__)
SETTINGS, MONITOR = CONFIG.orchestration, CONFIG.monitor
# The Asset retrain_translation is scheduled on (dags/retrain_translation.py RAW_CORPUS).
RAW_CORPUS = Asset(name="mt_raw_corpus", uri=SETTINGS.raw_data_asset, group="translation")

DOC_MD = """
### Watch the champion

**watch** runs what `mt monitor watch` runs: it loads the version `@champion` points at as
serving does and has it answer the smoke check's sentences (the load check); re-scores it
on the canary (`monitor.canary_size` seeded pairs of the gate split) in the task's metric
(`register.metric`) and compares that canary score with its recorded one and with that of the
version the gate last promoted (a drop of more than `monitor.max_canary_drop`, or below
`monitor.min_canary_score`, is a finding); and collects the drift results of the incoming
batches checked since the previous run. It logs the numbers to the MLflow experiment
`monitoring` and writes `reports/monitoring/watch/report.md` with a chart of the canary score
per run (`canary_bleu.png`; `canary_<metric>.png` for another metric).

**With findings**, *alert* sends them to `monitor.alert_emails` (SMTP, connection
`monitor.smtp_conn_id`) and `monitor.alert_webhook_url`, and, when `monitor.retrain_on_alert`
is true, *request_retrain* emits an event on `mt_raw_corpus`, which starts
`retrain_translation` (its `extra`: the findings, and `data_path` for a `dir`/`tsv` corpus).
Without findings both are skipped. A failed task of this DAG is alerted the same way.
"""


@task(execution_timeout=timedelta(minutes=SETTINGS.stage_timeout_min), retries=SETTINGS.retries)
def watch() -> dict[str, Any]:
    """One watch run; its record (findings included) goes to the next tasks."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import DataError
    from pipeline.monitor.watch import run_watch

    paths = project_paths(project_dir())
    try:
        return run_watch(paths, load_config(paths.params))
    except DataError as error:  # missing canary data: no retry can fix it (the registry's can)
        raise AirflowFailException(str(error)) from None


@task.short_circuit
def has_findings(record: dict[str, Any]) -> bool:
    """Skip the alert and the retrain request when the watch found nothing."""
    return bool(record["findings"])


@task(execution_timeout=timedelta(minutes=5), retries=SETTINGS.retries)
def alert(record: dict[str, Any], **context: Any) -> int:
    """Send the findings to every target in params.yaml; how many targets got them."""
    paths = project_paths(project_dir())
    monitor = load_config(paths.params).monitor
    report = str(paths.watch_dir / "report.md")
    message = alerts.findings_message(record, report, monitor.retrain_on_alert)
    return alerts.send_alert(monitor, message, context)


@task(outlets=[RAW_CORPUS], execution_timeout=timedelta(minutes=5))
def request_retrain(record: dict[str, Any], **context: Any) -> dict[str, Any]:
    """An event on the raw-corpus Asset (when monitor.retrain_on_alert), else skipped."""
    from airflow.sdk.exceptions import AirflowSkipException

    from pipeline.monitor.watch import retrain_event_extra

    config = load_config(project_paths(project_dir()).params)
    if not config.monitor.retrain_on_alert:
        raise AirflowSkipException("monitor.retrain_on_alert is false: no retrain requested")
    extra = retrain_event_extra(config, record)
    context["outlet_events"][RAW_CORPUS].extra.update(extra)
    return extra


def _schedule() -> Any:
    if MONITOR.watch_schedule.lower() in {"none", ""}:
        return None
    return CronTriggerTimetable(MONITOR.watch_schedule, timezone=SETTINGS.timezone)


@dag(
    dag_id="watch_champion",
    schedule=_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["translation", "mlops", "monitoring"],
    default_args=task_defaults(SETTINGS, MONITOR),
)
def watch_champion() -> None:
    # At parse time `watch()` is an XComArg; Airflow hands each task the dict it resolves to.
    record = cast("dict[str, Any]", watch())
    found = has_findings(record)
    found >> [alert(record), request_retrain(record)]


watch_champion()
