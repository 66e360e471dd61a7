"""Checkpoint averaging: export the mean of the last epochs' weights when it scores better on val.

The weights of the best epoch and the `train.average_last - 1` epochs before it are averaged
(pipeline/training/checkpoints.py keeps them). Both candidates are scored on the val split by
per-token NLL, and the better one is exported, so averaging can never make the exported model
worse on val than the best epoch alone; metrics.json records both scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.training.checkpoints import TrainingCheckpoint

log = logging.getLogger(__name__)

Weights = list[np.ndarray]


def choose_final_weights(
    checkpoint: TrainingCheckpoint,
    best_epoch: int,
    validation_nll: Callable[[Sequence[np.ndarray]], float],
) -> tuple[Weights, dict[str, Any]]:
    """(weights to export, what was compared) for a run whose best epoch is `best_epoch`."""
    best = checkpoint.epoch_weights(best_epoch)
    epochs = checkpoint.averaged_epochs(best_epoch)
    if len(epochs) == 1:
        return best, {"averaged_epochs": 1, "exported_weights": "best_epoch"}
    averaged = checkpoint.averaged_weights(best_epoch)
    scores = {"best_epoch": validation_nll(best), "averaged": validation_nll(averaged)}
    chosen = "averaged" if scores["averaged"] <= scores["best_epoch"] else "best_epoch"
    log.info(
        "val NLL of epoch %d: %.4f; of the mean of epochs %d-%d: %.4f; exporting the %s",
        best_epoch,
        scores["best_epoch"],
        epochs[0],
        epochs[-1],
        scores["averaged"],
        "mean" if chosen == "averaged" else f"epoch {best_epoch} alone",
    )
    report = {
        "averaged_epochs": len(epochs),
        "val_nll_best_epoch": scores["best_epoch"],
        "val_nll_averaged": scores["averaged"],
        "exported_weights": chosen,
    }
    return (averaged if chosen == "averaged" else best), report
