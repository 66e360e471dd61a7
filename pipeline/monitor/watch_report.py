"""What a person reads after a watch run: reports/monitoring/watch/report.md and canary_bleu.png.

The chart has one point per watch run: the champion's canary BLEU then, its recorded canary
BLEU (what it scored at registration) and the floor monitor.min_canary_score; a change of
champion is where the recorded line steps. The report shows the last run's findings, every
run in a table (newest first) and the drift statistics of the batches each of the last runs
collected. Pure apart from `write_report`; the figure is built without pyplot's global state.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_text
from pipeline.config import MonitorConfig
from pipeline.monitor.drift import DriftResult

REPORT_FILE = "report.md"
CHART_FILE = "canary_bleu.png"
# Runs shown in the report's tables (the chart and history.jsonl keep all of them).
TABLE_RUNS = 30
DRIFT_RUNS = 5


def write_report(
    directory: Path, history: Sequence[dict[str, Any]], monitor: MonitorConfig
) -> None:
    """The chart, then the Markdown that shows it; each replaced in one rename."""
    _write_bytes(directory / CHART_FILE, chart_png(history, monitor))
    atomic_write_text(directory / REPORT_FILE, report_markdown(history, monitor))


def report_markdown(history: Sequence[dict[str, Any]], monitor: MonitorConfig) -> str:
    last = history[-1]
    lines = [
        "# Champion watch",
        "",
        f"Last run {last['checked_at']}: **{last['model_name']} v{last['version'] or '-'}**, "
        + (f"{len(last['findings'])} finding(s)." if last["findings"] else "no findings."),
        "",
        *_findings_section(last),
        "## Canary BLEU over time",
        "",
        f"![canary BLEU per watch run]({CHART_FILE})",
        "",
        f"Thresholds: floor monitor.min_canary_score = {monitor.min_canary_score:g}; a drop of "
        f"more than monitor.max_canary_drop = {monitor.max_canary_drop:g} BLEU below the "
        "champion's recorded canary BLEU, or below that of the version the gate last promoted.",
        "",
        *runs_table(history[-TABLE_RUNS:]),
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


def runs_table(history: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| checked at (UTC) | champion | loads | canary BLEU | recorded | gate's last "
        "promoted | drift batches | findings |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for record in reversed(history):
        canary = record["canary"] or {}
        lines.append(
            f"| {record['checked_at']} | v{record['version'] or '-'} | "
            f"{'yes' if record['loads'] else 'no'} | {_cell(canary.get('bleu'))} | "
            f"{_cell(canary.get('recorded_bleu'))} | {_baseline_cell(canary)} | "
            f"{len(record['drift'])} | {len(record['findings'])} |"
        )
    return lines


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _baseline_cell(canary: dict[str, Any]) -> str:
    version = canary.get("baseline_version")
    if version is None:
        return "the champion" if canary else "-"
    return f"v{version}: {_cell(canary.get('baseline_bleu'))}"


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
    """Canary BLEU per run (with the recorded value and the floor) as PNG bytes.

    The x axis counts runs (one point each, however close in time); the champion's version is
    written where it changes.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    measured = [(number, record) for number, record in enumerate(history, 1) if record["canary"]]
    figure = Figure(figsize=(8, 4), dpi=100)
    axes = figure.add_subplot()
    runs = [number for number, _ in measured]
    bleu = [record["canary"]["bleu"] for _, record in measured]
    recorded = [_nan(record["canary"]["recorded_bleu"]) for _, record in measured]
    axes.plot(runs, bleu, marker="o", label="canary BLEU of @champion")
    axes.plot(runs, recorded, linestyle="--", drawstyle="steps-post", label="its recorded one")
    axes.axhline(monitor.min_canary_score, color="red", linewidth=1, label="min_canary_score")
    shown = None
    for run, value, (_, record) in zip(runs, bleu, measured, strict=True):
        if record["version"] != shown:
            shown = record["version"]
            axes.annotate(f"v{shown}", (run, value), textcoords="offset points", xytext=(0, 6))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(f"watch run ({_span(history)})")
    axes.set_ylabel("BLEU")
    axes.set_title("Champion watch: canary BLEU per run")
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
