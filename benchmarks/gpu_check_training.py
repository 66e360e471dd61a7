"""Training for benchmarks/gpu_check.py: the pipeline's model, loss and batches, fitted for a
fixed time (or a step cap), with each epoch timed.

`mt train` adds what a time-boxed check does not need (resumable checkpoints, MLflow); the model,
`compile_for_training`, `make_dataset` and the float32 export are the pipeline's own.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import keras
from gpu_check_device import Accelerator

from pipeline.config import Config
from pipeline.training.data import TrainingData
from pipeline.training.devices import DevicePlan


@dataclass
class EpochRecord:
    epoch: int
    seconds: float  # training and validation
    train_seconds: float
    steps: int
    complete: bool
    target_tokens: int  # label tokens trained on (estimated from the steps for a cut epoch)
    loss: float
    val_loss: float


class TrainingClock(keras.callbacks.Callback):
    """Stops training at a deadline or a step cap, and times each epoch's two halves.

    Validation starts after the epoch's last step; reading the optimizer's step counter there
    waits for the asynchronously dispatched steps to finish, so `train_seconds` is their time.
    """

    def __init__(
        self, seconds: float, max_steps: int | None, steps_per_epoch: int, epoch_tokens: int
    ) -> None:
        super().__init__()
        self.seconds, self.max_steps = seconds, max_steps
        self.steps_per_epoch, self.epoch_tokens = steps_per_epoch, epoch_tokens
        self.records: list[EpochRecord] = []
        self.stop_reason: str | None = None
        self.steps = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.deadline = time.monotonic() + self.seconds

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started, self.epoch_steps, self.train_seconds = time.monotonic(), 0, 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.steps += 1
        self.epoch_steps += 1
        if time.monotonic() >= self.deadline:
            self._stop("time budget")
        elif self.max_steps is not None and self.steps >= self.max_steps:
            self._stop("max steps")

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.model.stop_training = True

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        keras.ops.convert_to_numpy(self.model.optimizer.iterations)  # waits for the steps
        self.train_seconds = time.monotonic() - self.epoch_started

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}  # Keras always passes loss and val_loss here
        share = min(self.epoch_steps / self.steps_per_epoch, 1.0)
        self.records.append(
            EpochRecord(
                epoch=epoch + 1,
                seconds=round(time.monotonic() - self.epoch_started, 3),
                train_seconds=round(self.train_seconds, 3),
                steps=self.epoch_steps,
                complete=self.epoch_steps >= self.steps_per_epoch,
                target_tokens=round(self.epoch_tokens * share),
                loss=round(float(logs["loss"]), 4),
                val_loss=round(float(logs["val_loss"]), 4),
            )
        )


@dataclass(frozen=True)
class TrainedModel:
    model: Any  # float32, best epoch's weights
    clock: TrainingClock
    best_epoch: int
    stop_reason: str
    precision: str


def train(
    config: Config, data: TrainingData, device: Accelerator, minutes: float, max_steps: int | None
) -> TrainedModel:
    """Fit the preset until the time budget, the step cap, early stopping or train.epochs."""
    from pipeline.training.data import batch_count
    from pipeline.training.devices import dtype_policy, plan_devices
    from pipeline.training.outputs import export_float32

    plan = plan_devices(config.train.precision, device.gpus)
    batch, bounds = config.train.batch_size, config.train.bucket_boundaries
    clock = TrainingClock(
        minutes * 60, max_steps, batch_count(data.train, batch, bounds), data.train.target_tokens
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.train.patience, restore_best_weights=True
    )
    keras.utils.set_random_seed(config.seed)
    with dtype_policy(plan.precision):
        model = compiled_model(config, data, plan)
        fit(model, config, data, [clock, early_stopping])
    stopped_early = early_stopping.stopped_epoch > 0
    return TrainedModel(
        model=export_float32(model.get_weights(), config, data),
        clock=clock,
        best_epoch=early_stopping.best_epoch + 1,
        stop_reason="early stopping" if stopped_early else clock.stop_reason or "train.epochs",
        precision=plan.precision,
    )


def compiled_model(config: Config, data: TrainingData, plan: DevicePlan) -> keras.Model:
    """`mt train`'s model and compile (loss, NLL metric, schedule, clipping) for `plan`."""
    from pipeline.model.losses import compile_for_training
    from pipeline.model.seq2seq import build_seq2seq

    with plan.scope():
        model = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
        compile_for_training(model, config.train, plan.jit_compile)
    return model


def fit(
    model: keras.Model,
    config: Config,
    data: TrainingData,
    callbacks: list[keras.callbacks.Callback],
) -> None:
    """Up to train.epochs over the pipeline's bucketed batches; one log line per epoch."""
    from pipeline.training.data import make_dataset

    batch, bounds = config.train.batch_size, config.train.bucket_boundaries
    model.fit(
        make_dataset(data.train, batch, bounds, shuffle_seed=config.seed),
        validation_data=make_dataset(data.val, batch, bounds),
        epochs=config.train.epochs,
        callbacks=callbacks,
        shuffle=False,  # make_dataset shuffles, with the seed
        verbose=2,
    )


def training_summary(
    trained: TrainedModel, minutes: float, max_steps: int | None
) -> dict[str, Any]:
    """Throughput and epoch times; the first epoch (it compiles) is left out when others ran."""
    records = trained.clock.records
    steady = records[1:] or records
    complete = [record.seconds for record in records[1:] if record.complete]
    tokens = sum(record.target_tokens for record in steady)
    seconds = sum(record.train_seconds for record in steady)
    return {
        "minutes_budget": minutes,
        "max_steps": max_steps,
        "stopped_by": trained.stop_reason,
        "precision": trained.precision,
        "steps": trained.clock.steps,
        "epochs_done": sum(record.complete for record in records),
        "best_epoch": trained.best_epoch,
        "first_epoch_seconds": records[0].seconds if records else None,
        "seconds_per_epoch": round(statistics.median(complete), 3) if complete else None,
        "target_tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        "epochs": [vars(record) for record in records],
    }
