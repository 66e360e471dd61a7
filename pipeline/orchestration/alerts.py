"""Alerts as Airflow notifiers: a failed task, an approval waiting on a person, watch findings.

Targets come from params.yaml `monitor:`; none is required (no targets: no notifiers):

- `alert_emails` → `MailNotifier`, the SMTP provider's `SmtpNotifier` with the message composed
  here. The server is the Airflow connection `smtp_conn_id` (default `smtp_default`), e.g.
  `AIRFLOW_CONN_SMTP_DEFAULT='smtp://mail.example.org:25?disable_ssl=true&disable_tls=true&from_email=mt%40example.org'`
  (the hook reads `disable_ssl`/`disable_tls` as "set or not": leave them out for TLS); the
  sender is Airflow's `[email] from_email`, else the connection's `from_email` extra.
- `alert_webhook_url` → `WebhookNotifier`: POSTs the message as JSON to that URL. The HTTP
  provider's `HttpNotifier` takes its target from an Airflow connection, not a URL, so this
  small notifier posts with `requests` instead; a non-2xx answer is an error.

Each message is composed in Python from the Airflow context (no Jinja on our text, so a task
error or a batch id with braces arrives as it is): one subject, the same lines as the mail's
HTML paragraphs and as the JSON's `text`, and the facts as JSON fields.
Light imports only: the DAG files build their notifiers at parse time.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import BaseNotifier

from pipeline.config import MonitorConfig

# The task of dags/retrain_translation.py that leaves the approval request in XCom.
APPROVAL_REQUEST_TASK, APPROVAL_REQUEST_KEY = "choose_promotion", "approval"
WEBHOOK_TIMEOUT_S = 10
Context = Mapping[str, Any]


@dataclass(frozen=True)
class AlertMessage:
    """One alert: `event` names its kind; `details` are its facts for the webhook's JSON."""

    event: str
    subject: str
    lines: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def html(self) -> str:
        """The mail body: one paragraph per line, escaped."""
        return "\n".join(f"<p>{html.escape(line)}</p>" for line in self.lines)

    def payload(self) -> dict[str, Any]:
        return {"event": self.event, "subject": self.subject, "text": self.text, **self.details}


Compose = Callable[[Context], AlertMessage]


class MailNotifier(SmtpNotifier):
    """`SmtpNotifier` whose subject and HTML body are composed from the context when it fires."""

    def __init__(self, to: Sequence[str], smtp_conn_id: str, compose: Compose) -> None:
        super().__init__(to=list(to), from_email=_configured_sender(), smtp_conn_id=smtp_conn_id)
        self.compose = compose

    def notify(self, context: Any) -> None:
        message = self.compose(context)
        self.subject, self.html_content = message.subject, message.html()
        super().notify(context)


class WebhookNotifier(BaseNotifier):
    """POST the composed message as JSON to `url`; raises on a refusal or a non-2xx answer."""

    def __init__(self, url: str, compose: Compose, timeout_s: float = WEBHOOK_TIMEOUT_S) -> None:
        super().__init__()
        self.url, self.compose, self.timeout_s = url, compose, timeout_s

    def notify(self, context: Any) -> None:
        import requests

        message = self.compose(context)
        response = requests.post(self.url, json=message.payload(), timeout=self.timeout_s)
        if not response.ok:
            raise RuntimeError(
                f"webhook {self.url} answered HTTP {response.status_code} to the "
                f"{message.event} alert: {response.text[:200]}"
            )


def _configured_sender() -> str | None:
    """Airflow's `[email] from_email`; None lets the SMTP connection's extra decide."""
    from airflow.sdk.configuration import conf

    return conf.get("email", "from_email", fallback=None) or None


def notifiers(monitor: MonitorConfig, compose: Compose) -> list[BaseNotifier]:
    """One notifier per configured target (none when params name none)."""
    found: list[BaseNotifier] = []
    if monitor.alert_emails:
        found.append(MailNotifier(monitor.alert_emails, monitor.smtp_conn_id, compose))
    if monitor.alert_webhook_url:
        found.append(WebhookNotifier(monitor.alert_webhook_url, compose))
    return found


def failure_notifiers(monitor: MonitorConfig) -> list[BaseNotifier]:
    """For `on_failure_callback` of every task."""
    return notifiers(monitor, failure_message)


def approval_notifiers(monitor: MonitorConfig) -> list[BaseNotifier]:
    """For the approval task's `notifiers`: called once its request is in the UI."""
    return notifiers(monitor, approval_message)


def send_alert(monitor: MonitorConfig, message: AlertMessage, context: Context) -> int:
    """Send `message` to every target now (errors propagate: the task fails); how many."""
    targets = notifiers(monitor, lambda _context: message)
    for notifier in targets:
        notifier(dict(context))
    return len(targets)


def failure_message(context: Context) -> AlertMessage:
    ti = context["ti"]
    error = _error_line(context.get("exception"))
    facts = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "error": error,
        "log_url": getattr(ti, "log_url", ""),
    }
    return AlertMessage(
        "task_failed",
        f"[mt] {ti.dag_id}: task {ti.task_id} failed (run {ti.run_id})",
        (
            f"Task {ti.task_id} of DAG {ti.dag_id} failed in run {ti.run_id}, "
            f"try {ti.try_number}.",
            f"Error: {error}",
            f"Log: {facts['log_url']}",
        ),
        facts,
    )


def approval_message(context: Context) -> AlertMessage:
    """The promotion waiting in retrain_translation's approval task, with the link to answer."""
    ti, task = context["ti"], context["task"]
    request = ti.xcom_pull(task_ids=APPROVAL_REQUEST_TASK, key=APPROVAL_REQUEST_KEY) or {}
    name, version = request.get("model_name", "?"), str(request.get("version", "?"))
    link = task.generate_link_to_ui(task_instance=ti, base_url=ui_base_url())
    facts = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "model_name": name,
        "version": version,
        "url": link,
    }
    lines = (
        f"Run {ti.run_id} of {ti.dag_id} waits for a person: promote {name} version {version} "
        "to @champion?",
        f"Approve or reject it in the Airflow UI: {link}",
        _deadline_line(task.response_timeout),
        "",
        *str(request.get("body", "")).splitlines(),
    )
    subject = f"[mt] approval waiting: promote {name} version {version} to @champion?"
    return AlertMessage("approval_waiting", subject, lines, facts)


def findings_message(record: Mapping[str, Any], report: str, retrain: bool) -> AlertMessage:
    """The watch run's findings (pipeline/monitor/watch.py record)."""
    findings = record["findings"]
    champion = f"{record['model_name']} v{record['version'] or '-'}"
    retrain_line = (
        "A retrain was requested through the raw-corpus Asset (monitor.retrain_on_alert)."
        if retrain
        else "No retrain requested (monitor.retrain_on_alert is false)."
    )
    lines = (
        f"The champion watch of {record['checked_at']} found {len(findings)} problem(s) "
        f"with {champion}:",
        *(f"- {item['kind']}: {item['message']}" for item in findings),
        f"Report: {report}",
        retrain_line,
    )
    facts = {
        "model_name": record["model_name"],
        "version": record["version"],
        "checked_at": record["checked_at"],
        "findings": list(findings),
        "report": report,
        "retrain_requested": retrain,
        "mlflow_run_id": record.get("mlflow_run_id"),
    }
    subject = f"[mt] champion watch: {len(findings)} finding(s) for {champion}"
    return AlertMessage("watch_findings", subject, lines, facts)


def ui_base_url() -> str:
    """The Airflow UI's address: `[api] base_url`, with the fallback Airflow's own links use."""
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/"))


def _deadline_line(timeout: timedelta | None) -> str:
    if timeout is None:
        return "It waits until someone answers."
    hours = f"{timeout.total_seconds() / 3600:g} h"
    return f"Unanswered after {hours} (orchestration.approval_timeout_h), it is rejected."


def _error_line(error: BaseException | str | None) -> str:
    if error is None:
        return "(no exception recorded)"
    if isinstance(error, str):
        return error.splitlines()[0] if error.strip() else "(no message)"
    text = str(error).strip()
    first = text.splitlines()[0] if text else "(no message)"
    return f"{type(error).__name__}: {first}"[:500]
