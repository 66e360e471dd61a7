"""The sweep's table: one row per point, ranked by its val score in the task's metric
(`val.<register.metric>`: val BLEU for translation; pure; rows come from MLflow)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.sweep.errors import SweepError
from pipeline.tasks import metric_label

FINISHED = "finished"


@dataclass(frozen=True)
class PointRow:
    """A point as the sweep recorded it; the scores are None until it finished."""

    name: str  # its DVC experiment
    overrides: dict[str, str]
    status: str  # finished | failed | running | not run
    val_score: float | None = None  # `val.<register.metric>`, the sweep's metric
    train_seconds: float | None = None
    run_id: str | None = None  # its training run in MLflow
    exp_rev: str | None = None  # its DVC experiment commit

    @property
    def val_bleu(self) -> float | None:
        """The val score by its name before sweeps ranked by other metrics (a translation
        sweep's is BLEU; dags/sweep_translation.py reads it)."""
        return self.val_score


def ranked(rows: Sequence[PointRow]) -> list[PointRow]:
    """Scored points by val score, best first (ties in grid order), then the others."""
    order = {row.name: index for index, row in enumerate(rows)}
    scored = [row for row in rows if row.val_score is not None]
    scored.sort(key=lambda row: (-(row.val_score or 0.0), order[row.name]))
    return scored + [row for row in rows if row.val_score is None]


def winner(rows: Sequence[PointRow], sweep: str, metric: str = "bleu") -> PointRow:
    """The finished point with the best val score (`metric`, register.metric)."""
    for row in ranked(rows):
        if row.status == FINISHED and row.val_score is not None and row.exp_rev:
            return row
    raise SweepError(
        f"sweep {sweep}: no point has finished with a val {metric_label(metric)}; nothing to pick"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def render(rows: Sequence[PointRow], keys: Sequence[str], metric: str = "bleu") -> str:
    """A Markdown table (it pastes into docs): rank, experiment, each swept key, the val score
    (`val BLEU`, `val ROUGE-L`), training time, status."""
    header = ["#", "DVC experiment", *keys, f"val {metric_label(metric)}", "training", "status"]
    lines = [_line(header), _line(["---:", "---", *["---"] * len(keys), "---:", "---:", "---"])]
    for rank, row in enumerate(ranked(rows), start=1):
        score = "-" if row.val_score is None else f"{row.val_score:.2f}"
        values = [row.overrides.get(key, "-") for key in keys]
        cells = [str(rank), row.name, *values, score, duration(row.train_seconds), row.status]
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
