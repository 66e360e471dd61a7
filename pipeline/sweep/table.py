"""The sweep's table: one row per point, ranked by val BLEU (pure; rows come from MLflow)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.sweep.errors import SweepError

FINISHED = "finished"


@dataclass(frozen=True)
class PointRow:
    """A point as the sweep recorded it; the scores are None until it finished."""

    name: str  # its DVC experiment
    overrides: dict[str, str]
    status: str  # finished | failed | running | not run
    val_bleu: float | None = None
    train_seconds: float | None = None
    run_id: str | None = None  # its training run in MLflow
    exp_rev: str | None = None  # its DVC experiment commit


def ranked(rows: Sequence[PointRow]) -> list[PointRow]:
    """Scored points by val BLEU, best first (ties in grid order), then the others."""
    order = {row.name: index for index, row in enumerate(rows)}
    scored = [row for row in rows if row.val_bleu is not None]
    scored.sort(key=lambda row: (-(row.val_bleu or 0.0), order[row.name]))
    return scored + [row for row in rows if row.val_bleu is None]


def winner(rows: Sequence[PointRow], sweep: str) -> PointRow:
    """The finished point with the best val BLEU."""
    for row in ranked(rows):
        if row.status == FINISHED and row.val_bleu is not None and row.exp_rev:
            return row
    raise SweepError(f"sweep {sweep}: no point has finished with a val BLEU; nothing to pick")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def render(rows: Sequence[PointRow], keys: Sequence[str]) -> str:
    """A Markdown table (it pastes into docs): rank, experiment, each swept key, val BLEU,
    training time, status."""
    header = ["#", "DVC experiment", *keys, "val BLEU", "training", "status"]
    lines = [_line(header), _line(["---:", "---", *["---"] * len(keys), "---:", "---:", "---"])]
    for rank, row in enumerate(ranked(rows), start=1):
        bleu = "-" if row.val_bleu is None else f"{row.val_bleu:.2f}"
        values = [row.overrides.get(key, "-") for key in keys]
        cells = [str(rank), row.name, *values, bleu, duration(row.train_seconds), row.status]
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
