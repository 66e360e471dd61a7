"""Charts of a version's evidence, from the CSV files the stages write.

Pure: the `*_rows` functions parse CSV text (ValueError naming the problem when it is not what
the stage writes), the chart functions turn rows into a matplotlib Figure (no pyplot state, so
nothing depends on a display or a global backend). `evidence_files` parses before anything is
logged; `evidence_logging` logs the charts as PNG artifacts of the run.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from pipeline.tasks import metric_label

# reports/train/history.csv columns drawn, one panel each: (title, training, validation).
CURVE_PANELS = (
    ("loss (label-smoothed cross-entropy)", "loss", "val_loss"),
    ("perplexity", "perplexity", "val_perplexity"),
)


def _records(text: str, required: Sequence[str]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in required if column not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"no column {missing[0]!r} in the header")
    return list(reader)


def _number(row: dict[str, str], column: str, line: int) -> float:
    """A cell as a float; an empty cell is NaN (matplotlib leaves a gap)."""
    try:
        return float(row.get(column) or math.nan)
    except ValueError:
        raise ValueError(f"line {line}: {column} {row[column]!r} is not a number") from None


def history_rows(text: str) -> list[dict[str, float]]:
    """reports/train/history.csv: epoch and the curves' columns, as numbers."""
    columns = ["epoch", *(name for _, *pair in CURVE_PANELS for name in pair)]
    records = _records(text, columns)
    return [
        {column: _number(row, column, line) for column in columns}
        for line, row in enumerate(records, start=2)
    ]


def by_length_rows(text: str, metric: str = "bleu") -> list[dict[str, Any]]:
    """reports/eval/<metric>_by_length*.csv: bucket label, the metric (`bleu` for translation,
    register.metric for the other tasks) and sentence count per row."""
    rows = []
    for line, row in enumerate(_records(text, ("source_length", metric, "sentences")), start=2):
        score, sentences = _number(row, metric, line), _number(row, "sentences", line)
        rows.append({"source_length": row["source_length"], metric: score, "sentences": sentences})
    return rows


def training_curves(rows: Sequence[dict[str, float]]) -> Any:
    """Loss and perplexity per epoch, training against validation."""
    from matplotlib.figure import Figure

    epochs = [int(row["epoch"]) for row in rows]
    figure = Figure(figsize=(10, 4))
    for index, (title, training, validation) in enumerate(CURVE_PANELS, start=1):
        axes = figure.add_subplot(1, len(CURVE_PANELS), index)
        axes.plot(epochs, [row[training] for row in rows], marker="o", label="train")
        axes.plot(epochs, [row[validation] for row in rows], marker="o", label="validation")
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_xticks(epochs)
        axes.legend()
    figure.tight_layout()
    return figure


def by_length_chart(rows: Sequence[dict[str, Any]], split: str, metric: str = "bleu") -> Any:
    """The metric per source-length bucket, each bar labelled with its sentence count."""
    from matplotlib.figure import Figure

    label = metric_label(metric)
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    bars = axes.bar([row["source_length"] for row in rows], [row[metric] for row in rows])
    axes.bar_label(bars, labels=[f"n={int(row['sentences'])}" for row in rows])
    axes.margins(y=0.12)  # room for the labels above the tallest bar
    axes.set_title(f"{label} by source length: {split}")
    axes.set_xlabel("source length (whitespace tokens)")
    axes.set_ylabel(label)
    figure.tight_layout()
    return figure
