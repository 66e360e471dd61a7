"""One row per epoch (reports/train/history.csv) and the best epoch's summary (metrics.json)."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from typing import Any

import keras

HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "val_loss",
    "perplexity",
    "val_perplexity",
    "learning_rate",
)


def history_row(epoch: int, logs: dict[str, Any], learning_rate: float) -> dict[str, float]:
    """The history.csv columns from Keras logs (`nll` is the unsmoothed per-token NLL)."""
    return {
        "epoch": epoch,
        "loss": float(logs["loss"]),
        "val_loss": float(logs.get("val_loss", math.nan)),
        "perplexity": math.exp(min(float(logs["nll"]), 50.0)),
        "val_perplexity": math.exp(min(float(logs.get("val_nll", math.nan)), 50.0)),
        "learning_rate": learning_rate,
    }


def current_learning_rate(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def history_csv(rows: Sequence[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        values = {key: f"{row[key]:.6g}" for key in HISTORY_COLUMNS}
        writer.writerow({**values, "epoch": int(row["epoch"])})
    return buffer.getvalue()


def summarise(rows: Sequence[dict[str, float]], best_epoch: int, precision: str) -> dict[str, Any]:
    """metrics.json: the epoch whose weights were saved, plus run totals."""
    best = next(row for row in rows if row["epoch"] == best_epoch)
    return {
        "best_epoch": best_epoch,
        "epochs": len(rows),
        "loss": best["loss"],
        "val_loss": best["val_loss"],
        "perplexity": best["perplexity"],
        "val_perplexity": best["val_perplexity"],
        "tokens_per_second": statistics.median(row["tokens_per_second"] for row in rows),
        "precision": precision,
    }
