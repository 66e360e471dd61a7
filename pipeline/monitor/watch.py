"""`mt monitor watch`: one run of the champion watch (the `watch` task of dags/watch_champion.py).

A run:
1. checks `@champion` (pipeline/monitor/champion_check.py): it loads and answers, and its
   canary score in the task's metric (register.metric) against its recorded one and that of
   the version the gate last promoted;
2. collects the drift results of the incoming batches checked since the previous run
   (pipeline/monitor/drift.py, `drift_results_since`): every batch is looked at once;
3. turns both into findings (pipeline/monitor/findings.py); a batch of too few lines to judge
   (fewer than monitor.min_drift_lines) is counted, never a finding, so it cannot alert nor
   request a retrain;
4. logs the numbers as one run of the MLflow experiment `monitoring` (tag monitor.kind=watch);
5. appends its record to reports/monitoring/watch/history.jsonl and rewrites report.md and
   its chart (canary_bleu.png, or canary_<metric>.png) there (pipeline/monitor/
   watch_report.py), under an exclusive flock of
   watch/.history.lock: the DAG's run and a person's `mt monitor watch` may end at the same
   moment, and each would otherwise rewrite the history from what it read before, dropping the
   other's line.

Nothing is written before the MLflow run is logged, so a run that fails (store unreachable,
data missing) leaves the history as it was and its retry looks at the same batches. Findings
are not errors: `mt monitor watch` prints them and exits 1; the DAG alerts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from typing import Any

from pipeline.atomic import atomic_write_text
from pipeline.config import Config, MonitorConfig, load_config
from pipeline.errors import DataError
from pipeline.file_lock import exclusive_flock
from pipeline.monitor.champion_check import ChampionCheck, check_champion
from pipeline.monitor.drift import DriftResult, drift_results_since
from pipeline.monitor.findings import drift_findings
from pipeline.monitor.monitoring_runs import log_monitoring_run
from pipeline.monitor.watch_report import canary_numbers, write_report
from pipeline.paths import ProjectPaths, project_paths
from pipeline.registry.store import Registry
from pipeline.tasks import metric_label

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
HISTORY_LOCK = ".history.lock"
WATCH_KIND = "watch"
# MLflow keeps tag values up to 8000 characters; the findings tag stays well inside.
MAX_TAG_CHARS = 5000
# Canary numbers logged as metrics `canary.<key>` where measured, `<metric>` the canary's
# (register.metric): canary.bleu, canary.recorded_bleu, canary.baseline_bleu for BLEU.
CANARY_METRICS = ("{metric}", "recorded_{metric}", "baseline_{metric}")


def run_watch(paths: ProjectPaths, config: Config) -> dict[str, Any]:
    """One watch run; returns its history record (JSON-ready, `findings` a list of dicts)."""
    history = read_history(paths)
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    registry = Registry.connect(paths, config.register.model_name)
    champion = check_champion(registry, paths, config)
    since = history[-1]["drift_until"] if history else None
    drift = drift_results_since(paths, since)
    record = watch_record(checked_at, champion, drift, since)
    record["mlflow_run_id"] = log_watch_run(paths, record)
    record_run(paths, record, config.monitor)
    log.info("watch of %s: %d finding(s)", champion.model_name, len(record["findings"]))
    return record


def watch_record(
    checked_at: str, champion: ChampionCheck, drift: list[DriftResult], since: str | None
) -> dict[str, Any]:
    """The history line of one run. `drift_until` is where the next run's look at drift starts:
    the newest batch seen (or this run's start bound again when there was none)."""
    findings = [*champion.findings, *drift_findings(drift)]
    return {
        "checked_at": checked_at,
        **champion.as_dict(),
        "drift": [result.to_json() for result in drift],
        "drift_until": drift[-1].checked_at if drift else since,
        "findings": [finding.as_dict() for finding in findings],
    }


def watch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a run as MLflow metrics (absent where not measured)."""
    numbers = canary_numbers(record["canary"])
    drift = [DriftResult.from_json(item) for item in record["drift"]]
    metrics = {
        "loads": float(record["loads"]),
        "findings": float(len(record["findings"])),
        "drift.batches": float(len(record["drift"])),
        "drift.drifted_batches": float(sum(1 for result in drift if result.alarming)),
        "drift.too_few_lines_batches": float(sum(1 for result in drift if not result.judged)),
    }
    values = (numbers.score, numbers.recorded, numbers.baseline)
    for key, value in zip(CANARY_METRICS, values, strict=True):
        if value is not None:
            metrics[f"canary.{key.format(metric=numbers.metric)}"] = float(value)
    return metrics


def log_watch_run(paths: ProjectPaths, record: dict[str, Any]) -> str:
    findings = "\n".join(item["message"] for item in record["findings"]) or "none"
    tags = {
        "mt.model_name": record["model_name"],
        "mt.version": record["version"] or "none",
        "watch.findings": findings[:MAX_TAG_CHARS],
    }
    name = f"watch {record['checked_at']}"
    return log_monitoring_run(paths, WATCH_KIND, name, watch_metrics(record), tags=tags)


def history_file(paths: ProjectPaths) -> Any:
    return paths.watch_dir / HISTORY_FILE


def read_history(paths: ProjectPaths) -> list[dict[str, Any]]:
    """Every run's record, oldest first (none before the first run)."""
    path = history_file(paths)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: line {number} is not JSON ({error.msg}); restore the file from a "
                "backup or remove that line"
            ) from None
    return records


def record_run(
    paths: ProjectPaths, record: dict[str, Any], monitor: MonitorConfig
) -> list[dict[str, Any]]:
    """Append `record` to the history and rewrite the report from the whole history, holding
    the history's flock; returns that history (this record last)."""
    with exclusive_flock(paths.watch_dir / HISTORY_LOCK):
        history = [*read_history(paths), record]
        append_history(paths, record)
        write_report(paths.watch_dir, history, monitor)
    return history


def append_history(paths: ProjectPaths, record: dict[str, Any]) -> None:
    """Add one line, all or nothing (the file is replaced, never left half appended)."""
    path = history_file(paths)
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = json.dumps(record, sort_keys=True, ensure_ascii=False)
    atomic_write_text(path, f"{before}{line}\n")


def retrain_event_extra(config: Config, record: dict[str, Any]) -> dict[str, Any]:
    """The `extra` of the raw-corpus Asset event that asks retrain_translation for a run.

    `data_path` is a run param of that DAG (pipeline/orchestration/run_params.py): the folder
    the corpus is read from (data.path, for the `dir`/`tsv` sources), where new data is put;
    the Multi30k source has none, it is downloaded again. The other keys are not run params:
    the retrain run logs them as ignored, and the UI shows them with the event.
    """
    extra: dict[str, Any] = {
        "requested_by": "watch_champion",
        "watch_checked_at": record["checked_at"],
        "findings": [item["message"] for item in record["findings"]],
    }
    if config.data.source != "multi30k" and config.data.path:
        extra["data_path"] = config.data.path
    return extra


def summary_lines(record: dict[str, Any]) -> list[str]:
    """What `mt monitor watch` prints: the champion, the canary, the findings."""
    canary = record["canary"]
    lines = [f"champion: {record['model_name']} v{record['version'] or '-'}"]
    if canary is not None:
        numbers = canary_numbers(canary)
        lines.append(
            f"canary: {metric_label(numbers.metric)} {_number(numbers.score)} on "
            f"{canary['pairs']} pairs of {canary['split']} (recorded "
            f"{_number(numbers.recorded)}; version the gate last promoted {_baseline(canary)})"
        )
    lines.append(drift_line(record["drift"]))
    findings = record["findings"]
    lines += [f"finding ({item['kind']}): {item['message']}" for item in findings]
    lines.append(f"{len(findings)} finding(s)" if findings else "no findings")
    return lines


def drift_line(drift: list[dict[str, Any]]) -> str:
    """How many batches were checked, and how many of them were too small to judge."""
    line = f"drift: {len(drift)} batch(es) checked since the previous run"
    unjudged = sum(1 for item in drift if not DriftResult.from_json(item).judged)
    return f"{line} ({unjudged} too few lines to judge)" if unjudged else line


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _baseline(canary: dict[str, Any]) -> str:
    if canary["baseline_version"] is None:
        return "is the champion itself"
    return f"v{canary['baseline_version']}: {_number(canary_numbers(canary).baseline)}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mt monitor", description="The champion watch.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "watch",
        help="check @champion and the drift since the previous run",
        description="Check @champion (load, canary score in register.metric) and the drift of "
        "incoming batches since the previous run; print the findings and exit 1 when there "
        "are any.",
    )
    parser.parse_args(argv)
    record = run_watch(project_paths(), load_config())
    print("\n".join(summary_lines(record)))
    return 1 if record["findings"] else 0
