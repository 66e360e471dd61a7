"""What a person reads after a watch run: reports/monitoring/watch/report.md and its chart,
canary_bleu.png (canary_<metric>.png when register.metric is not BLEU: canary_rouge_l.png).

The chart has one point per watch run: the champion's canary score then (the task's metric,
register.metric), its recorded canary score (what it scored at registration) and the floor
monitor.min_canary_score; a change of champion is where the recorded line steps. The report
shows the last run's findings, every run in a table (newest first) and the drift statistics
of the batches each of the last runs collected. History records older than the `metric` field
hold BLEU under `bleu`, `recorded_bleu` and `baseline_bleu` (`canary_numbers` reads both).
Pure apart from `write_report`; the figure is built without pyplot's global state.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_text
from pipeline.config import MonitorConfig
from pipeline.monitor.drift import DriftResult
from pipeline.tasks import metric_label

REPORT_FILE = "report.md"
CHART_FILE = "canary_bleu.png"  # BLEU's; another metric's is canary_<metric>.png
# Runs shown in the report's tables (the chart and history.jsonl keep all of them).
TABLE_RUNS = 30
DRIFT_RUNS = 5


@dataclass(frozen=True)
class CanaryNumbers:
    """A history record's canary: the metric and its three numbers (None where not measured)."""

    metric: str
    score: float | None
    recorded: float | None
    baseline: float | None


def canary_numbers(canary: Mapping[str, Any] | None) -> CanaryNumbers:
    """The numbers of a record's `canary`, stored under the metric's name; a record without
    `metric` (written before the watch scored other metrics) is BLEU."""
    canary = canary or {}
    metric = str(canary.get("metric", "bleu"))
    return CanaryNumbers(
        metric,
        canary.get(metric),
        canary.get(f"recorded_{metric}"),
        canary.get(f"baseline_{metric}"),
    )


def current_metric(history: Sequence[dict[str, Any]]) -> str:
    """The metric of the newest record that measured the canary (BLEU before any did)."""
    measured = [record for record in history if record["canary"]]
    return canary_numbers(measured[-1]["canary"]).metric if measured else "bleu"


def chart_file(metric: str) -> str:
    return CHART_FILE if metric == "bleu" else f"canary_{metric}.png"


def write_report(
    directory: Path, history: Sequence[dict[str, Any]], monitor: MonitorConfig
) -> None:
    """The chart, then the Markdown that shows it; each replaced in one rename."""
    chart = chart_file(current_metric(history))
    _write_bytes(directory / chart, chart_png(history, monitor))
    atomic_write_text(directory / REPORT_FILE, report_markdown(history, monitor))


def report_markdown(history: Sequence[dict[str, Any]], monitor: MonitorConfig) -> str:
    last, metric = history[-1], current_metric(history)
    label = metric_label(metric)
    lines = [
        "# Champion watch",
        "",
        f"Last run {last['checked_at']}: **{last['model_name']} v{last['version'] or '-'}**, "
        + (f"{len(last['findings'])} finding(s)." if last["findings"] else "no findings."),
        "",
        *_findings_section(last),
        f"## Canary {label} over time",
        "",
        f"![canary {label} per watch run]({chart_file(metric)})",
        "",
        f"Thresholds: floor monitor.min_canary_score = {monitor.min_canary_score:g}; a drop of "
        f"more than monitor.max_canary_drop = {monitor.max_canary_drop:g} {label} below the "
        f"champion's recorded canary {label}, or below that of the version the gate last "
        "promoted.",
        "",
        *runs_table(history[-TABLE_RUNS:], metric),
        "",
        "## Drift of incoming batches",
        "",
        *drift_section(history[-DRIFT_RUNS:]),
    ]
    return "\n".join(lines) + "\n"


def _findings_section(record: dict[str, Any]) -> list[str]:
    if not record["findings"]:
        return []
    items = [f"- **{item['kind']}**: {item['message']}" for item in record["findings"]]
    return ["## Findings of the last run", "", *items, ""]


def runs_table(history: Sequence[dict[str, Any]], metric: str = "bleu") -> list[str]:
    """One row per run, newest first; a run scored by another metric than `metric` (the
    project changed register.metric) names its own after each number."""
    lines = [
        f"| checked at (UTC) | champion | loads | canary {metric_label(metric)} | recorded | "
        "gate's last promoted | drift batches | findings |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for record in reversed(history):
        canary = record["canary"] or {}
        numbers = canary_numbers(canary)
        unit = "" if numbers.metric == metric else f" {metric_label(numbers.metric)}"
        lines.append(
            f"| {record['checked_at']} | v{record['version'] or '-'} | "
            f"{'yes' if record['loads'] else 'no'} | {_cell(numbers.score, unit)} | "
            f"{_cell(numbers.recorded, unit)} | {_baseline_cell(canary, unit)} | "
            f"{len(record['drift'])} | {len(record['findings'])} |"
        )
    return lines


def _cell(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _baseline_cell(canary: dict[str, Any], unit: str = "") -> str:
    version = canary.get("baseline_version")
    if version is None:
        return "the champion" if canary else "-"
    return f"v{version}: {_cell(canary_numbers(canary).baseline, unit)}"


def drift_section(history: Sequence[dict[str, Any]]) -> list[str]:
    """One row per statistic of each batch the last runs collected (newest run first); one row
    with its line count for a batch too small to judge."""
    rows = [
        row
        for record in reversed(history)
        for result in record["drift"]
        for row in _drift_rows(result)
    ]
    if not rows:
        return [f"No batch was checked during the last {len(history)} run(s)."]
    header = [
        "| batch | checked at | statistic | value | threshold | drifted |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    return header + rows


def _drift_rows(result: dict[str, Any]) -> list[str]:
    start = f"| {result['batch_id']} | {result['checked_at']} |"
    if not DriftResult.from_json(result).judged:
        return [
            f"{start} lines | {result['lines']} | min {result['min_lines']} | "
            "not judged: too few lines |"
        ]
    return [
        f"{start} {name} | {value:.4f} | {result['thresholds'].get(name, math.nan):g} | "
        f"{'**yes**' if name in result['drifted'] else 'no'} |"
        for name, value in sorted(result["statistics"].items())
    ]


def chart_png(history: Sequence[dict[str, Any]], monitor: MonitorConfig) -> bytes:
    """Canary score per run (with the recorded value and the floor) as PNG bytes, in the
    metric of the newest measured run (runs scored by another metric are left out: the floor
    is in its points).

    The x axis counts runs (one point each, however close in time); the champion's version is
    written where it changes.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metric = current_metric(history)
    label = metric_label(metric)
    measured = [
        (number, record, canary_numbers(record["canary"]))
        for number, record in enumerate(history, 1)
        if record["canary"] and canary_numbers(record["canary"]).metric == metric
    ]
    figure = Figure(figsize=(8, 4), dpi=100)
    axes = figure.add_subplot()
    runs = [number for number, _, _ in measured]
    scores = [_nan(numbers.score) for _, _, numbers in measured]
    recorded = [_nan(numbers.recorded) for _, _, numbers in measured]
    axes.plot(runs, scores, marker="o", label=f"canary {label} of @champion")
    axes.plot(runs, recorded, linestyle="--", drawstyle="steps-post", label="its recorded one")
    axes.axhline(monitor.min_canary_score, color="red", linewidth=1, label="min_canary_score")
    shown = None
    for run, value, (_, record, _) in zip(runs, scores, measured, strict=True):
        if record["version"] != shown:
            shown = record["version"]
            axes.annotate(f"v{shown}", (run, value), textcoords="offset points", xytext=(0, 6))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(f"watch run ({_span(history)})")
    axes.set_ylabel(label)
    axes.set_title(f"Champion watch: canary {label} per run")
    axes.legend(loc="lower left")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _span(history: Sequence[dict[str, Any]]) -> str:
    first, last = history[0]["checked_at"][:10], history[-1]["checked_at"][:10]
    return first if first == last else f"{first} to {last}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename (the text writer's way, for a binary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
