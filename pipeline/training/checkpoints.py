"""The train stage's resume state in models/checkpoints/: whatever kills a run, a rerun finishes.

Layout (the directory is deleted once every output is written):

- `fingerprint.txt`: the params, inputs and layout this state belongs to; another's is discarded
- `keras/`: `keras.callbacks.BackupAndRestore` (weights, optimizer and epoch; latest and previous)
- `epochs.json`: the journal, one entry per finished epoch: its history row, early stopping's
  state after it (best epoch and val_loss, patience counter, stopped or not) and when it ended
- `epoch-N.npz`: the weights after epoch N, for the epochs the model may still be made of: the
  best epoch so far and the `train.average_last - 1` epochs before it (checkpoint averaging), and
  the latest epochs a later best one would average with
- `mlflow_run.json`: the MLflow run and how many epochs it has (`pipeline.training.tracking`)

At the end of an epoch the best weights and the journal entry are written before Keras backs the
epoch up, so the journal is at most one epoch ahead of Keras' state; a resume cuts it back to
Keras' epoch. Once the journal says training is over (the last epoch ran or early stopping
fired), a rerun does not fit at all: it finishes the outputs from the journal and best weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.config import Config, config_as_dict
from pipeline.training.history import current_learning_rate, history_row

log = logging.getLogger(__name__)

# Part of the fingerprint: state written by code with another layout is discarded, not misread.
CHECKPOINT_LAYOUT = 3
FINGERPRINT_FILE = "fingerprint.txt"
JOURNAL_FILE = "epochs.json"
KERAS_BACKUP_DIR = "keras"
KERAS_METADATA_FILE = "training_metadata.json"  # BackupAndRestore: {"epoch": epochs done, ...}
RUN_FILE = "mlflow_run.json"


def run_fingerprint(config: Config, hashes: dict[str, str]) -> str:
    """Identifies what a checkpoint was trained on; a resume needs the same inputs."""
    payload = {
        "layout": CHECKPOINT_LAYOUT,
        "seed": config.seed,
        "model": config_as_dict(config)["model"],
        "train": config_as_dict(config)["train"],
        # Training cuts sources to the decoder's limit (training/data.py).
        "max_source_length": config.decode.max_source_length,
        "inputs": hashes,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EarlyStoppingState:
    """Early stopping after an epoch: the best epoch so far (1-based) and its val_loss, epochs
    since then (the patience counter), and whether it stopped training there."""

    best_epoch: int
    best_val_loss: float
    wait: int
    stopped: bool


@dataclass(frozen=True)
class JournalEntry:
    """One finished epoch: its history row (+ tokens_per_second), early stopping's state, and
    when it ended (the timestamp its metrics carry in MLflow, so a re-send is a duplicate)."""

    row: dict[str, float]
    early_stopping: EarlyStoppingState
    ended_at_ms: int

    @property
    def epoch(self) -> int:
        return int(self.row["epoch"])

    def ends_training(self, epochs: int) -> bool:
        return self.epoch >= epochs or self.early_stopping.stopped

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> JournalEntry:
        return cls(
            row=payload["row"],
            early_stopping=EarlyStoppingState(**payload["early_stopping"]),
            ended_at_ms=payload["ended_at_ms"],
        )


@dataclass(frozen=True)
class ResumePoint:
    """Where a run starts: the epochs already done, and whether training itself is over."""

    entries: tuple[JournalEntry, ...]
    finished: bool

    @property
    def epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else 0

    @property
    def early_stopping(self) -> EarlyStoppingState | None:
        return self.entries[-1].early_stopping if self.entries else None


class TrainingCheckpoint:
    """models/checkpoints/: read and write the resume state described in the module doc."""

    def __init__(self, directory: Path, average_last: int = 1) -> None:
        self.directory = directory
        self.average_last = average_last
        self._fingerprint = ""

    @property
    def backup_dir(self) -> Path:
        return self.directory / KERAS_BACKUP_DIR

    @property
    def run_file(self) -> Path:
        return self.directory / RUN_FILE

    def prepare(self, fingerprint: str) -> None:
        """Keep an interrupted run's state only when it belongs to this exact run."""
        marker = self.directory / FINGERPRINT_FILE
        if self.directory.exists() and _read_text(marker) != fingerprint:
            log.warning("%s holds a checkpoint of other params or data; starting afresh", marker)
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, fingerprint)
        self._fingerprint = fingerprint

    def resume_point(self, epochs: int) -> ResumePoint:
        """Finished (journal complete, best weights on disk), or the epoch Keras will resume."""
        entries = self.read_journal()
        if entries and entries[-1].ends_training(epochs) and self._has_best_weights(entries[-1]):
            return ResumePoint(tuple(entries), finished=True)
        restored = self.keras_epoch()
        kept = [entry for entry in entries if entry.epoch <= (restored or 0)]
        if restored is None or (restored and not self._covers(kept, restored)):
            log.warning("%s does not match its Keras backup; training afresh", self.directory)
            self.discard()
            return ResumePoint((), finished=False)
        return ResumePoint(tuple(kept), finished=False)

    def _covers(self, entries: Sequence[JournalEntry], epochs: int) -> bool:
        numbers = [entry.epoch for entry in entries]
        return numbers == list(range(1, epochs + 1)) and self._has_best_weights(entries[-1])

    def keras_epoch(self) -> int | None:
        """Epochs in Keras' backup (0: none yet); None when its metadata is torn."""
        metadata = self.backup_dir / KERAS_METADATA_FILE
        if not metadata.is_file():
            return 0
        try:
            return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
        except (ValueError, KeyError, TypeError):
            return None

    def discard(self) -> None:
        """Drop every epoch (and the MLflow run link); keep the fingerprint."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.prepare(self._fingerprint)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def read_journal(self) -> list[JournalEntry]:
        path = self.directory / JOURNAL_FILE
        if not path.is_file():
            return []
        return [JournalEntry.from_json(item) for item in json.loads(path.read_text("utf-8"))]

    def write_journal(self, entries: Sequence[JournalEntry]) -> None:
        atomic_write_json(self.directory / JOURNAL_FILE, [entry.to_json() for entry in entries])

    def _weights_path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch}.npz"

    def averaged_epochs(self, best_epoch: int) -> list[int]:
        """The epochs whose weights make the final model: the best and the ones just before it."""
        return list(range(max(1, best_epoch - self.average_last + 1), best_epoch + 1))

    def _has_best_weights(self, entry: JournalEntry) -> bool:
        epochs = self.averaged_epochs(entry.early_stopping.best_epoch)
        return all(self._weights_path(epoch).is_file() for epoch in epochs)

    def save_epoch_weights(self, epoch: int, weights: Sequence[np.ndarray]) -> None:
        """Write the weights of `epoch` whole or not at all (temp file, then rename)."""
        path = self._weights_path(epoch)
        staging = path.with_name(f".{path.name}.tmp")
        try:
            with staging.open("wb") as handle:
                np.savez(handle, *weights)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)

    def epoch_weights(self, epoch: int) -> list[np.ndarray]:
        with np.load(self._weights_path(epoch)) as archive:
            return [archive[f"arr_{index}"] for index in range(len(archive.files))]

    def averaged_weights(self, best_epoch: int) -> list[np.ndarray]:
        """The element-wise mean of the weights of `averaged_epochs(best_epoch)`.

        Averaging the last few epochs' parameters (as OpenNMT's `average_models` does) smooths
        the noise of the final updates; one epoch returns that epoch's weights unchanged.
        """
        epochs = self.averaged_epochs(best_epoch)
        total = [weight.astype(np.float64) for weight in self.epoch_weights(epochs[0])]
        for epoch in epochs[1:]:
            for summed, weight in zip(total, self.epoch_weights(epoch), strict=True):
                summed += weight
        originals = self.epoch_weights(best_epoch)
        return [
            (summed / len(epochs)).astype(original.dtype)
            for summed, original in zip(total, originals, strict=True)
        ]

    def keep_weights_of(self, entries: Sequence[JournalEntry]) -> None:
        """Delete epoch weights that neither `entries` (the resumable epochs) nor a later best
        epoch's average can need."""
        needed: set[int] = set()
        for entry in entries:
            needed.update(self.averaged_epochs(entry.early_stopping.best_epoch))
        if entries:
            needed.update(self.averaged_epochs(entries[-1].epoch + 1)[:-1])
        for path in self.directory.glob("epoch-*.npz"):
            if int(path.stem.removeprefix("epoch-")) not in needed:
                path.unlink()


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


# ---------------------------------------------------------------------------- callbacks


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on val_loss that continues from a saved state instead of starting over.

    Best weights are not kept in memory (`restore_best_weights` is off): `EpochJournal` writes
    them to disk, where they survive the process.
    """

    def __init__(self, patience: int, resume_from: EarlyStoppingState | None = None) -> None:
        super().__init__(monitor="val_loss", patience=patience)
        self.resume_from = resume_from

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.resume_from is not None:
            self.best = self.resume_from.best_val_loss
            self.best_epoch = self.resume_from.best_epoch - 1  # Keras counts from 0
            self.wait = self.resume_from.wait

    def state_after(self, epoch_index: int) -> EarlyStoppingState:
        """The state once `on_epoch_end(epoch_index)` has run."""
        return EarlyStoppingState(
            best_epoch=self.best_epoch + 1,
            best_val_loss=float(self.best if self.best is not None else np.nan),
            wait=self.wait,
            stopped=epoch_index > 0 and self.stopped_epoch == epoch_index,
        )


class EpochJournal(keras.callbacks.Callback):
    """At each epoch end: history row, early stopping's state and the weights, on disk.

    Goes after `early_stopping` and before BackupAndRestore in the callback list (see the
    module doc). `entries` is extended in place; it starts with the resumed epochs.
    """

    def __init__(
        self,
        checkpoint: TrainingCheckpoint,
        entries: list[JournalEntry],
        early_stopping: ResumableEarlyStopping,
        target_tokens: int,
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.entries = entries
        self.early_stopping = early_stopping
        self.target_tokens = target_tokens
        self._epoch_start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:  # validation starts: the training part of the epoch ends
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = (self._train_end or time.perf_counter()) - self._epoch_start
        row = history_row(epoch + 1, logs or {}, current_learning_rate(self.model))
        row["tokens_per_second"] = self.target_tokens / max(seconds, 1e-9)
        state = self.early_stopping.state_after(epoch)
        self.checkpoint.save_epoch_weights(epoch + 1, self.model.get_weights())
        self.entries.append(JournalEntry(row, state, int(time.time() * 1000)))
        self.checkpoint.write_journal(self.entries)
        # Keras can resume from this epoch or, if its backup is cut short, the one before.
        self.checkpoint.keep_weights_of(self.entries[-2:])
