"""What the champion watch reports: the rules that turn its measurements into findings.

Pure: numbers and records in, `Finding`s out. A finding is one sentence a person can act on;
any finding makes the watch alert (pipeline/orchestration/alerts.py).

The canary rules (monitor.min_canary_score, monitor.max_canary_drop, both in points of the
task's metric, register.metric), for champion C:

1. **floor**: C's canary score now is below `min_canary_score`;
2. **own record**: C's canary score now is more than `max_canary_drop` below C's recorded one
   (the same model on the same inputs answers differently now: its environment changed);
3. **the version the gate last promoted**: more than `max_canary_drop` below the recorded
   canary score of B, the newest champion in the trail that the gate vouched for (pipeline/
   monitor/champion_check.py). C's own record cannot catch a weak version made champion by
   hand, since its record is as weak as it is; B's can. When C is B, rule 3 is rule 2.

Comparisons use the 4-decimal values both numbers are rounded to, so a healthy champion (same
hypotheses as recorded) has a drop of exactly 0. Each finding names the metric by its label
("canary ROUGE-L of m v2 is ...").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import MonitorConfig
from pipeline.monitor.canary import RecordedCanary
from pipeline.monitor.drift import DriftResult
from pipeline.tasks import metric_label

FindingKind = Literal["load", "canary", "drift"]


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Finding:
        return cls(kind=raw["kind"], message=str(raw["message"]))


def load_finding(subject: str, problem: str) -> Finding:
    """The champion does not load, or does not answer, in this environment."""
    return Finding(
        "load",
        f"{subject} fails the load check (serving would fail the same way): {problem}",
    )


def canary_findings(
    subject: str,
    now: float,
    own: RecordedCanary | str,
    baseline: RecordedCanary | str | None,
    monitor: MonitorConfig,
    metric: str = "bleu",
) -> list[Finding]:
    """The canary rules above; `now` the champion's canary score in `metric`
    (register.metric), `own`/`baseline` a record in the same metric or why there is none."""
    findings = []
    label = metric_label(metric)
    if now < monitor.min_canary_score:
        findings.append(
            Finding(
                "canary",
                f"canary {label} of {subject} is {now:.2f}, below monitor.min_canary_score "
                f"{monitor.min_canary_score:.2f}",
            )
        )
    own_record = f"its own recorded canary {label}"
    findings += _drop_findings(subject, now, own, own_record, monitor, label)
    if baseline is not None:
        findings += _drop_findings(
            subject, now, baseline, "the version the gate last promoted", monitor, label
        )
    return findings


def _drop_findings(
    subject: str,
    now: float,
    record: RecordedCanary | str,
    whose: str,
    monitor: MonitorConfig,
    label: str,
) -> list[Finding]:
    if isinstance(record, str):
        return [Finding("canary", f"canary of {subject} not compared with {whose}: {record}")]
    drop = round(record.score - now, 4)
    if drop <= monitor.max_canary_drop:
        return []
    return [
        Finding(
            "canary",
            f"canary {label} of {subject} is {now:.2f}, {drop:.2f} points below "
            f"{record.score:.2f} of v{record.version}, {whose} (allowed: "
            f"monitor.max_canary_drop {monitor.max_canary_drop:.2f})",
        )
    ]


def drift_findings(results: Sequence[DriftResult]) -> list[Finding]:
    """One finding per judged batch that drifted or failed its GX suite; a batch of too few
    lines to judge (fewer than monitor.min_drift_lines) is never one."""
    return [_drift_finding(result) for result in results if result.alarming]


def _drift_finding(result: DriftResult) -> Finding:
    measured = [
        f"{name} {result.statistics[name]:.3f} (threshold {result.thresholds[name]:g})"
        for name in result.drifted
    ]
    if not result.gx_success:
        failed = ", ".join(result.gx_failed_rules) or "see its Data Docs"
        measured.append(f"its Great Expectations suite failed ({failed})")
    return Finding(
        "drift",
        f"{_subject(result)} (checked {result.checked_at}) drifted from the "
        f"training corpus: {'; '.join(measured)}; Data Docs: {result.data_docs}",
    )


def _subject(result: DriftResult) -> str:
    if not result.pooled_from:
        return f"incoming batch {result.batch_id}"
    return (
        f"pool {result.batch_id} of {result.lines} lines from the small incoming batches "
        f"{', '.join(result.pooled_from)}"
    )
