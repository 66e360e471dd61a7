"""`mt train`: train the Seq2Seq LSTM on data/tokens and write models/seq2seq.keras.

Pure core first (pair filtering, tf.data pipeline, loss, metric, learning-rate schedule,
precision choice), then the Keras callbacks, then the I/O edge (`run_training`, `main`).

Outputs (see dvc.yaml): models/seq2seq.keras (float32, renamed into place), and in
reports/train/: history.csv (one row per epoch), metrics.json (best epoch), run.json (the
MLflow run). models/checkpoints/ holds the BackupAndRestore state while a run is in flight, so
a killed `mt train` resumes from its last finished epoch; it is deleted after a successful run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.atomic import atomic_write_json, atomic_write_text
from pipeline.config import Config, TrainConfig, config_as_dict, load_config
from pipeline.errors import DataError
from pipeline.model.seq2seq import PACKAGE, build_seq2seq
from pipeline.paths import ProjectPaths, project_paths
from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "val_loss",
    "perplexity",
    "val_perplexity",
    "learning_rate",
)
RECORDED_EPOCHS_FILE = "epochs.json"  # in the checkpoints dir: history rows of a killed run
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the checkpoints dir: the run a resumed job continues


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class TeacherForcingPairs:
    """Training rows: source ids, decoder input (BOS + target), decoder labels (target + EOS)."""

    sources: list[np.ndarray]
    target_in: list[np.ndarray]
    target_out: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def target_tokens(self) -> int:
        """Label tokens per epoch (the unit of tokens/s)."""
        return sum(len(row) for row in self.target_out)


def teacher_forcing_pairs(
    sources: Sequence[np.ndarray], targets: Sequence[np.ndarray], max_tokens: int
) -> TeacherForcingPairs:
    """Keep pairs whose source and target have 1..max_tokens pieces; add BOS / EOS.

    An empty source gives the encoder nothing to attend to, and an over-long pair costs
    padding for a whole batch, so both are dropped (and counted in the log).
    """
    kept = [
        index
        for index, (source, target) in enumerate(zip(sources, targets, strict=True))
        if 0 < len(source) <= max_tokens and len(target) <= max_tokens
    ]
    if len(kept) < len(sources):
        log.info(
            "dropped %d of %d pairs (empty source or > %d pieces)",
            len(sources) - len(kept),
            len(sources),
            max_tokens,
        )
    bos, eos = np.array([BOS_ID], np.int32), np.array([EOS_ID], np.int32)
    return TeacherForcingPairs(
        sources=[np.asarray(sources[i], np.int32) for i in kept],
        target_in=[np.concatenate([bos, np.asarray(targets[i], np.int32)]) for i in kept],
        target_out=[np.concatenate([np.asarray(targets[i], np.int32), eos]) for i in kept],
    )


def _row_lookup(rows: list[np.ndarray]) -> Callable[[Any], Any]:
    """index -> that row as a dense int32 tensor, from one flat array plus offsets."""
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum([len(row) for row in rows])
    flat = tf.constant(np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32))
    starts = tf.constant(offsets)
    return lambda index: flat[starts[index] : starts[index + 1]]


def make_dataset(
    pairs: TeacherForcingPairs,
    batch_size: int,
    bucket_boundaries: Sequence[int],
    shuffle_seed: int | None = None,
) -> tf.data.Dataset:
    """Padded batches of similar length: ({"source", "target_in"}, target_out).

    Bucketing by the longer side keeps padding (wasted LSTM steps) low; shuffling happens
    before bucketing, with `shuffle_seed`, so epochs differ but runs repeat. No seed: the order
    is fixed (validation).
    """
    columns = {
        "source": _row_lookup(pairs.sources),
        "target_in": _row_lookup(pairs.target_in),
        "target_out": _row_lookup(pairs.target_out),
    }
    dataset = tf.data.Dataset.range(len(pairs))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(pairs), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda index: {name: lookup(index) for name, lookup in columns.items()},
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda row: tf.maximum(
            tf.shape(row["source"])[0], tf.shape(row["target_in"])[0]
        ),
        bucket_boundaries=[bound + 1 for bound in bucket_boundaries],
        bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        padding_values=PAD_ID,
    )
    dataset = dataset.map(
        lambda row: ({"source": row["source"], "target_in": row["target_in"]}, row["target_out"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    batches = batch_count(pairs, batch_size, bucket_boundaries)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def batch_count(
    pairs: TeacherForcingPairs, batch_size: int, bucket_boundaries: Sequence[int]
) -> int:
    """Batches per epoch: whatever the shuffle, each bucket yields ceil(rows / batch_size).

    Known up front, so Keras shows a progress total from the first epoch on.
    """
    lengths = [
        max(len(source), len(target))
        for source, target in zip(pairs.sources, pairs.target_in, strict=True)
    ]
    buckets = np.searchsorted(np.asarray(bucket_boundaries), lengths, side="left")
    rows_per_bucket = np.bincount(buckets, minlength=len(bucket_boundaries) + 1)
    return int(sum(math.ceil(rows / batch_size) for rows in rows_per_bucket))


# ------------------------------------------------------------- loss, metric, schedule


def token_cross_entropy(labels: Any, logits: Any, label_smoothing: float = 0.0) -> Any:
    """Per-token cross-entropy [B, T] from float logits [B, T, V], smoothed toward uniform.

    Uses the fused sparse softmax kernel and never materialises log-probabilities [B, T, V]:
    over an 8k vocabulary that tensor is most of a CPU training step's memory traffic.
    Smoothing adds eps * (logsumexp - mean logit), the cross-entropy against a uniform target.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if not label_smoothing:
        return nll
    log_normaliser = nll + tf.gather(logits, labels, axis=-1, batch_dims=2)
    uniform = log_normaliser - tf.reduce_mean(logits, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


def padding_weights(labels: Any) -> Any:
    return tf.cast(tf.not_equal(tf.cast(labels, tf.int32), PAD_ID), tf.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedSequenceCrossEntropy(keras.losses.Loss):
    """Mean label-smoothed cross-entropy over the real (non-PAD) label tokens of a batch."""

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "masked_sequence_cross_entropy", **kw: Any
    ) -> None:
        super().__init__(name=name, **kw)
        self.label_smoothing = label_smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        weights = padding_weights(y_true)
        losses = token_cross_entropy(y_true, y_pred, self.label_smoothing)
        return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedTokenNLL(keras.metrics.Metric):
    """Negative log-likelihood per real label token over the epoch; exp() is perplexity.

    Separate from the loss because label smoothing inflates the loss above the true NLL.
    """

    def __init__(self, name: str = "nll", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        weights = padding_weights(y_true)
        self.total.assign_add(tf.reduce_sum(token_cross_entropy(y_true, y_pred) * weights))
        self.count.assign_add(tf.reduce_sum(weights))

    def result(self) -> Any:
        return self.total / tf.maximum(self.count, 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_learning_rate`, then decay with 1/sqrt(step)."""

    def __init__(self, peak_learning_rate: float, warmup_steps: int) -> None:
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step: Any) -> Any:
        step = tf.cast(step, tf.float32) + 1.0
        warmup = tf.cast(max(self.warmup_steps, 1), tf.float32)
        return self.peak_learning_rate * tf.minimum(step / warmup, tf.sqrt(warmup / step))

    def get_config(self) -> dict[str, Any]:
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}


def compile_for_training(model: keras.Model, config: TrainConfig, jit_compile: bool) -> None:
    """Adam on the warm-up schedule, clipped gradients, masked smoothed loss, NLL metric."""
    optimizer = keras.optimizers.Adam(
        learning_rate=WarmupInverseSqrt(config.learning_rate, config.warmup_steps),
        clipnorm=config.clip_norm,
    )
    model.compile(
        optimizer=optimizer,
        loss=MaskedSequenceCrossEntropy(config.label_smoothing),
        metrics=[MaskedTokenNLL()],
        jit_compile=jit_compile,
    )


# ----------------------------------------------------------------- devices, precision


@dataclass(frozen=True)
class DevicePlan:
    """How this run uses the machine: dtype policy, XLA and the distribution strategy."""

    precision: str  # "float32" | "mixed_float16"
    jit_compile: bool
    gpus: int

    def strategy(self) -> tf.distribute.Strategy:
        if self.gpus > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()


def plan_devices(precision: str, gpus: int) -> DevicePlan:
    """`auto`: mixed precision + XLA on a GPU, float32 on CPU; explicit settings are obeyed.

    Keras turns XLA back off for cuDNN LSTMs (cuDNN kernels are not XLA-compilable), so on a
    GPU the LSTMs run cuDNN and XLA applies only where Keras allows it.
    """
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    return DevicePlan(precision=precision, jit_compile=gpus > 0, gpus=gpus)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the block, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def hardware_tags() -> dict[str, str]:
    gpus = tf.config.list_physical_devices("GPU")
    names = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus
    ]
    return {
        "hardware.cpu": _cpu_name(),
        "hardware.cpu_count": str(os.cpu_count() or 0),
        "hardware.gpus": ", ".join(names) or "none",
    }


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------- callbacks


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


class EpochRecorder(keras.callbacks.Callback):
    """One history row per epoch: Keras logs -> loss, perplexity, learning rate, tokens/s.

    Rows are also kept in `store` (in the checkpoints dir), written before BackupAndRestore
    saves the epoch, so a resumed run still reports the epochs of the run that was killed.
    """

    def __init__(
        self,
        store: Path,
        target_tokens: int,
        on_row: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.target_tokens = target_tokens
        self.on_row = on_row
        self.rows: list[dict[str, float]] = []
        self.resumed_after_epoch = 0
        self._started = False
        self._epoch_start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._started:
            self._started = True
            self.resumed_after_epoch = epoch
            self.rows = [row for row in _read_json(self.store, []) if row["epoch"] <= epoch]
            if epoch > 0:
                log.info(
                    "resumed from the checkpoint of epoch %d; continuing at epoch %d",
                    epoch,
                    epoch + 1,
                )
        self._epoch_start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:  # validation starts: the training part of the epoch ends
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = (self._train_end or time.perf_counter()) - self._epoch_start
        row = history_row(epoch + 1, logs or {}, _current_learning_rate(self.model))
        row["tokens_per_second"] = self.target_tokens / max(seconds, 1e-9)
        self.rows.append(row)
        atomic_write_json(self.store, self.rows)
        if self.on_row is not None:
            self.on_row(row)


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


def _current_learning_rate(model: keras.Model) -> float:
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


# ------------------------------------------------------------------------------ I/O edge


@dataclass(frozen=True)
class TrainingData:
    train: TeacherForcingPairs
    val: TeacherForcingPairs
    src_vocab_size: int
    tgt_vocab_size: int


def load_training_data(paths: ProjectPaths, max_tokens: int) -> TrainingData:
    """data/tokens/{train,val}.npz and the vocabulary sizes of models/tokenizer/."""
    from pipeline.tokenize import load_encoded_split, load_tokenizers

    tokenizers = load_tokenizers(paths.tokenizer_dir)
    splits = {
        name: load_encoded_split(paths.tokens_dir / f"{name}.npz") for name in ("train", "val")
    }
    pairs = {
        name: teacher_forcing_pairs(split.sources, split.targets, max_tokens)
        for name, split in splits.items()
    }
    for name, kept in pairs.items():
        if not len(kept):
            raise DataError(
                f"{paths.tokens_dir / (name + '.npz')}: no pair has 1..{max_tokens} pieces per "
                "side (rule train.max_tokens); raise train.max_tokens or check `mt tokenize`"
            )
    return TrainingData(
        pairs["train"], pairs["val"], tokenizers.src_vocab_size, tokenizers.tgt_vocab_size
    )


def input_hashes(paths: ProjectPaths) -> dict[str, str]:
    """sha256 of every file training reads, keyed by its path under the project root."""
    files = sorted(paths.tokens_dir.glob("*.npz")) + sorted(paths.tokenizer_dir.glob("*"))
    return {
        str(path.relative_to(paths.root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in files
        if path.is_file()
    }


def run_fingerprint(config: Config, hashes: dict[str, str]) -> str:
    """Identifies what a checkpoint was trained on; a resume needs the same inputs."""
    payload = {
        "seed": config.seed,
        "model": config_as_dict(config)["model"],
        "train": config_as_dict(config)["train"],
        "inputs": hashes,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare_checkpoints(directory: Path, fingerprint: str) -> None:
    """Keep a killed run's checkpoints only when they belong to this exact run."""
    marker = directory / "fingerprint.txt"
    if directory.exists() and _read_text(marker) != fingerprint:
        log.warning("%s holds a checkpoint of other params or data; starting afresh", directory)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, fingerprint)


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def build_and_compile(config: Config, data: TrainingData, plan: DevicePlan) -> keras.Model:
    with plan.strategy().scope():
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


def fit(
    model: keras.Model,
    data: TrainingData,
    config: Config,
    paths: ProjectPaths,
    on_row: Callable[[dict[str, float]], None] | None = None,
) -> tuple[EpochRecorder, keras.callbacks.EarlyStopping]:
    """model.fit with early stopping, resumable backups and the history recorder."""
    recorder = EpochRecorder(
        paths.checkpoints_dir / RECORDED_EPOCHS_FILE, data.train.target_tokens, on_row
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.train.patience, restore_best_weights=True
    )
    # The backup dir is removed by us once every output is written, not by Keras at the end
    # of fit(), so a crash while saving still resumes. Keras writes the weights in place: a
    # kill during that write leaves a truncated file, so keep the previous epoch's copy too
    # (Keras falls back to it when the latest will not load).
    backup = keras.callbacks.BackupAndRestore(
        str(paths.checkpoints_dir / "keras"), delete_checkpoint=False, double_checkpoint=True
    )
    batch, bounds = config.train.batch_size, config.train.bucket_boundaries
    model.fit(
        make_dataset(data.train, batch, bounds, shuffle_seed=config.seed),
        validation_data=make_dataset(data.val, batch, bounds),
        epochs=config.train.epochs,
        callbacks=[recorder, backup, early_stopping],
        shuffle=False,  # make_dataset shuffles, with the seed
        verbose=2 if os.environ.get("CI", "").lower() == "true" else 1,
    )
    return recorder, early_stopping


def export_float32(model: keras.Model, config: Config, data: TrainingData) -> keras.Model:
    """A float32 copy without optimizer state: loads and serves on any device."""
    with dtype_policy("float32"):
        exported = build_seq2seq(config.model, data.src_vocab_size, data.tgt_vocab_size)
    exported.set_weights(model.get_weights())
    return exported


def save_model_atomically(model: keras.Model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def summarise(
    rows: Sequence[dict[str, float]], best_epoch: int, plan: DevicePlan
) -> dict[str, Any]:
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
        "precision": plan.precision,
    }


@contextlib.contextmanager
def mlflow_run(paths: ProjectPaths) -> Iterator[Any]:
    """The run of this training job; a resumed job continues the killed job's run."""
    import mlflow

    from pipeline.tracking import configure_mlflow

    configure_mlflow(paths)
    run_file = paths.checkpoints_dir / MLFLOW_RUN_FILE
    previous = _read_json(run_file, {}).get("run_id")
    if previous and _run_exists(previous):
        log.info("continuing MLflow run %s of the interrupted job", previous)
    else:
        previous = None
    with mlflow.start_run(run_id=previous, run_name=None if previous else "train") as run:
        atomic_write_json(run_file, {"run_id": run.info.run_id})
        yield run


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.get_run(run_id)
    except MlflowException:
        return False
    return True


def log_run_context(config: Config, hashes: dict[str, str], plan: DevicePlan) -> None:
    """Params (the flattened config), hardware and input-hash tags of the active run."""
    import mlflow

    mlflow.log_params(_flatten(config_as_dict(config)))
    mlflow.set_tags({**hardware_tags(), "precision": plan.precision, "stage": "train"})
    mlflow.set_tags({f"sha256.{name}": digest for name, digest in hashes.items()})


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def log_epoch(row: dict[str, float]) -> None:
    import mlflow

    metrics = {key: value for key, value in row.items() if key != "epoch"}
    mlflow.log_metrics(metrics, step=int(row["epoch"]))


def run_training(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Train, write every output, then drop the checkpoints; returns metrics.json's payload."""
    data = load_training_data(paths, config.train.max_tokens)
    hashes = input_hashes(paths)
    prepare_checkpoints(paths.checkpoints_dir, run_fingerprint(config, hashes))
    keras.utils.set_random_seed(config.seed)
    plan = plan_devices(config.train.precision, len(tf.config.list_physical_devices("GPU")))
    log.info(
        "training on %d pairs (%d target tokens), validating on %d",
        len(data.train),
        data.train.target_tokens,
        len(data.val),
    )
    with dtype_policy(plan.precision), mlflow_run(paths) as run:
        log_run_context(config, hashes, plan)
        model = build_and_compile(config, data, plan)
        recorder, early_stopping = fit(model, data, config, paths, on_row=log_epoch)
        metrics = summarise(recorder.rows, early_stopping.best_epoch + 1, plan)
        write_outputs(export_float32(model, config, data), recorder.rows, metrics, run, paths)
    shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
    return metrics


def write_outputs(
    model: keras.Model,
    rows: Sequence[dict[str, float]],
    metrics: dict[str, Any],
    run: Any,
    paths: ProjectPaths,
) -> None:
    import mlflow

    reports = paths.train_reports_dir
    save_model_atomically(model, paths.model_file)
    atomic_write_text(reports / "history.csv", history_csv(rows))
    atomic_write_json(reports / "metrics.json", metrics)
    atomic_write_json(
        reports / "run.json",
        {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id},
    )
    mlflow.log_metrics(
        {f"best_{key}": value for key, value in metrics.items() if isinstance(value, int | float)}
    )
    mlflow.log_artifact(str(paths.model_file), artifact_path="model")
    mlflow.log_artifact(str(reports / "history.csv"), artifact_path="reports")
    log.info(
        "best epoch %d of %d: val_loss %.4f, val_perplexity %.2f; model in %s",
        metrics["best_epoch"],
        metrics["epochs"],
        metrics["val_loss"],
        metrics["val_perplexity"],
        paths.model_file,
    )


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(prog="mt train", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    run_training(load_config(), project_paths())
    return 0
