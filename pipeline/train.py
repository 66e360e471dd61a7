"""`mt train`: train the Seq2Seq LSTM on data/tokens and write models/seq2seq.keras.

The stage, top to bottom: open (or continue) the MLflow run, fit with resumable checkpoints,
then write every output from the best epoch's weights. The parts live in `pipeline.training`.

Outputs (see dvc.yaml): models/seq2seq.keras (float32, renamed into place), and in
reports/train/: history.csv (one row per epoch), metrics.json (best epoch), run.json (the
MLflow run). models/checkpoints/ holds the resume state while a run is in flight: a run that
fails anywhere (killed mid-epoch or while saving, MLflow down, disk full) is finished by the
next `mt train` from where it stopped (on another host too, with `MT_CHECKPOINT_MIRROR`: see
`pipeline.training.checkpoint_mirror`); the directory is deleted after a successful run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.config import Config, config_as_dict, load_config
from pipeline.model.losses import (
    MaskedSequenceCrossEntropy,
    MaskedTokenNLL,
    WarmupInverseSqrt,
    compile_for_training,
    token_cross_entropy,
)
from pipeline.model.seq2seq import build_seq2seq
from pipeline.paths import ProjectPaths, project_paths
from pipeline.pause_points import pause_point
from pipeline.training.averaging import choose_final_weights
from pipeline.training.checkpoint_mirror import CheckpointMirror, mirror_uri
from pipeline.training.checkpoints import (
    EpochJournal,
    JournalEntry,
    ResumableEarlyStopping,
    ResumePoint,
    TrainingCheckpoint,
    run_fingerprint,
)
from pipeline.training.data import (
    TrainingData,
    batch_count,
    input_hashes,
    load_training_data,
    make_dataset,
    teacher_forcing_pairs,
)
from pipeline.training.devices import (
    DevicePlan,
    dtype_policy,
    gpu_count,
    hardware_tags,
    plan_devices,
)
from pipeline.training.history import HISTORY_COLUMNS, history_csv, history_row, summarise
from pipeline.training.outputs import (
    export_float32,
    full_disk_reported,
    publish_outputs,
    stage_model,
)
from pipeline.training.tracking import (
    EpochMetricsLogger,
    MlflowUnavailable,
    TrainingRun,
    end_run,
    flatten_params,
    log_final,
    log_run_context,
    log_split_datasets,
    mark_failed,
    open_training_run,
)

# Names other modules, benchmarks and tests import from `pipeline.train`.
__all__ = [
    "HISTORY_COLUMNS",
    "MaskedSequenceCrossEntropy",
    "MaskedTokenNLL",
    "WarmupInverseSqrt",
    "batch_count",
    "compile_for_training",
    "dtype_policy",
    "history_csv",
    "history_row",
    "main",
    "make_dataset",
    "plan_devices",
    "run_training",
    "teacher_forcing_pairs",
    "token_cross_entropy",
]

log = logging.getLogger(__name__)

# Test hook (pipeline.pause_points): every epoch is checkpointed, no output is written yet.
EPOCHS_CHECKPOINTED = "train.epochs_checkpointed"


def build_and_compile(config: Config, data: TrainingData, plan: DevicePlan) -> keras.Model:
    with plan.scope():
        model = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
        compile_for_training(model, config.train, plan.jit_compile)
    log.info(
        "model: %d parameters, precision %s, XLA %s, %d GPU(s)",
        model.count_params(),
        plan.precision,
        model.jit_compile,
        plan.gpus,
    )
    return model


def progress_verbosity() -> int:
    """Keras's bar (1) on a terminal; one line per epoch (2) in a log file or CI, where the
    bar's carriage-return frames would fill the log with one frame per step."""
    interactive = sys.stdout.isatty() and os.environ.get("CI", "").lower() != "true"
    return 1 if interactive else 2


def fit(
    model: keras.Model,
    data: TrainingData,
    config: Config,
    checkpoint: TrainingCheckpoint,
    resume: ResumePoint,
    on_epoch_saved: Callable[[JournalEntry], None],
) -> list[JournalEntry]:
    """model.fit from the resume point; returns the journal of every epoch, resumed ones first.

    Callback order matters: early stopping decides, the journal records that decision (and the
    best weights), BackupAndRestore saves the epoch, and only then is the epoch handed on.
    """
    entries = list(resume.entries)
    early_stopping = ResumableEarlyStopping(config.train.patience, resume.early_stopping)
    journal = EpochJournal(checkpoint, entries, early_stopping, data.train.target_tokens)
    # delete_checkpoint=False: we remove the directory once every output is written, so a
    # crash after the last epoch still resumes. Keras writes weights in place; a kill during
    # that write leaves a torn file, so it keeps the previous epoch's copy too.
    backup = keras.callbacks.BackupAndRestore(
        str(checkpoint.backup_dir), delete_checkpoint=False, double_checkpoint=True
    )
    saved = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: on_epoch_saved(entries[-1]))
    batch, bounds = config.train.batch_size, config.train.bucket_boundaries
    model.fit(
        make_dataset(data.train, batch, bounds, shuffle_seed=config.seed),
        validation_data=make_dataset(data.val, batch, bounds),
        epochs=config.train.epochs,
        callbacks=[early_stopping, journal, backup, saved],
        shuffle=False,  # make_dataset shuffles, with the seed
        verbose=progress_verbosity(),
    )
    return entries


@dataclass(frozen=True)
class TrainingJob:
    """What every step of one `mt train` works with."""

    config: Config
    paths: ProjectPaths
    data: TrainingData
    plan: DevicePlan
    checkpoint: TrainingCheckpoint
    mirror: CheckpointMirror  # the checkpoint's copy for a retry on another host


def train_epochs(
    job: TrainingJob, resume: ResumePoint, epoch_logger: EpochMetricsLogger
) -> list[JournalEntry]:
    """Run the epochs still to do (none when an earlier run got through them all)."""
    for entry in resume.entries:  # those an interrupted run could not send to MLflow
        epoch_logger.submit(entry)
    if resume.finished:
        log.info(
            "an earlier run trained through epoch %d (best: epoch %d) and checkpointed it; "
            "finishing the outputs without training",
            resume.epoch,
            resume.entries[-1].early_stopping.best_epoch,
        )
        return list(resume.entries)
    if resume.epoch:
        log.info(
            "resumed from the checkpoint of epoch %d; continuing at epoch %d",
            resume.epoch,
            resume.epoch + 1,
        )
    keras.utils.set_random_seed(job.config.seed)

    def epoch_saved(entry: JournalEntry) -> None:  # Keras has backed the epoch up: see fit
        epoch_logger.submit(entry)
        job.mirror.upload(job.checkpoint.directory, entry.epoch)

    with dtype_policy(job.plan.precision):
        model = build_and_compile(job.config, job.data, job.plan)
        return fit(model, job.data, job.config, job.checkpoint, resume, epoch_saved)


def finish_outputs(
    job: TrainingJob,
    entries: list[JournalEntry],
    run: TrainingRun,
    epoch_logger: EpochMetricsLogger,
) -> dict[str, Any]:
    """Best weights -> staged model -> MLflow -> outputs in place; returns metrics.json."""
    paths, checkpoints = job.paths, job.checkpoint.directory
    rows = [entry.row for entry in entries]
    best_epoch = entries[-1].early_stopping.best_epoch
    history = history_csv(rows)
    staged = checkpoints / "export" / paths.model_file.name
    weights, averaging = choose_final_weights(job.checkpoint, best_epoch, validation_scorer(job))
    metrics = {**summarise(rows, best_epoch, job.plan.precision), **averaging}
    with full_disk_reported(paths.model_file, "saving the model", checkpoints):
        stage_model(export_float32(weights, job.config, job.data), staged)
    epoch_logger.close()
    summary = {key: value for key, value in metrics.items() if isinstance(value, int | float)}
    log_final(run, summary, entries[-1].ended_at_ms, staged, history)
    record = {"run_id": run.run_id, "experiment_id": run.experiment_id}
    with full_disk_reported(paths.train_reports_dir, "writing the reports", checkpoints):
        publish_outputs(staged, paths, history, metrics, record)
    end_run(run)
    log.info(
        "best epoch %d of %d: val_loss %.4f, val_perplexity %.2f; model in %s",
        metrics["best_epoch"],
        metrics["epochs"],
        metrics["val_loss"],
        metrics["val_perplexity"],
        paths.model_file,
    )
    return metrics


def validation_scorer(job: TrainingJob) -> Callable[[Sequence[np.ndarray]], float]:
    """weights -> per-token NLL of the val split (float32, inference mode).

    One model and one val pipeline for every candidate, built at the first call: only runs
    that average epochs pay for them, and the evaluation is traced once.
    """
    built: dict[str, Any] = {}

    def score(weights: Sequence[np.ndarray]) -> float:
        if not built:
            built["model"] = export_float32(weights, job.config, job.data)
            built["model"].compile(loss=MaskedSequenceCrossEntropy(), metrics=[MaskedTokenNLL()])
            train = job.config.train
            built["val"] = make_dataset(job.data.val, train.batch_size, train.bucket_boundaries)
        built["model"].set_weights(list(weights))
        return float(built["model"].evaluate(built["val"], verbose=0, return_dict=True)["nll"])

    return score


def start_run(job: TrainingJob, hashes: dict[str, str]) -> tuple[TrainingRun, EpochMetricsLogger]:
    """The MLflow run with its params, tags and datasets, and the logger for its epoch metrics."""
    run, logged_epochs = open_training_run(job.paths, job.checkpoint.run_file)
    tags = {**hardware_tags(), "precision": job.plan.precision, "stage": "train"}
    tags.update({f"sha256.{name}": digest for name, digest in hashes.items()})
    log_run_context(run, flatten_params(config_as_dict(job.config)), tags)
    log_split_datasets(run, job.paths, hashes)
    return run, EpochMetricsLogger(run, job.checkpoint.run_file, logged_epochs)


def run_training(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Train (or finish an interrupted run), write every output, then drop the checkpoints."""
    mirror_to = mirror_uri(paths)  # a bad MT_CHECKPOINT_MIRROR fails before any work
    data = load_training_data(paths, config.train.max_tokens, config.decode.max_source_length)
    hashes = input_hashes(paths)
    plan = plan_devices(config.train.precision, gpu_count())
    fingerprint = run_fingerprint(config, hashes)
    checkpoint = TrainingCheckpoint(paths.checkpoints_dir, config.train.average_last)
    mirror = CheckpointMirror(mirror_to, fingerprint)
    job = TrainingJob(config, paths, data, plan, checkpoint, mirror)
    checkpoints = job.checkpoint.directory
    with full_disk_reported(checkpoints, "writing checkpoints", checkpoints):
        job.checkpoint.prepare(fingerprint)
        # Before the MLflow run is opened: a checkpoint found unusable is discarded with its run.
        resume = job.checkpoint.resume_point(config.train.epochs)
        if not resume.finished and mirror.restore(checkpoints, resume.epoch):
            resume = job.checkpoint.resume_point(config.train.epochs)  # another host's epochs
        log.info(
            "training on %d pairs (%d target tokens), validating on %d",
            len(data.train),
            data.train.target_tokens,
            len(data.val),
        )
        run, epoch_logger = start_run(job, hashes)
        metrics = train_and_finish(job, resume, run, epoch_logger)
    job.checkpoint.remove()
    mirror.finish()
    return metrics


def train_and_finish(
    job: TrainingJob, resume: ResumePoint, run: TrainingRun, epoch_logger: EpochMetricsLogger
) -> dict[str, Any]:
    """The epochs still to do, then the outputs; the run is marked FAILED if either fails."""
    try:
        entries = train_epochs(job, resume, epoch_logger)
        pause_point(EPOCHS_CHECKPOINTED)
        return finish_outputs(job, entries, run, epoch_logger)
    except MlflowUnavailable:
        raise  # MLflow is what failed: no point asking it to mark the run FAILED
    except BaseException:
        mark_failed(run)
        raise
    finally:
        epoch_logger.stop()


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(prog="mt train", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    run_training(load_config(), project_paths())
    return 0
