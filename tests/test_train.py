"""pipeline/train.py and pipeline/training/: data, loss, schedule, devices, resume state, stage.

Faults injected into the running stage (kills, MLflow outages, a full disk) are in
tests/test_train_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.tokenize import BOS_ID, EOS_ID, PAD_ID
from pipeline.train import (
    HISTORY_COLUMNS,
    MaskedSequenceCrossEntropy,
    MaskedTokenNLL,
    WarmupInverseSqrt,
    batch_count,
    history_csv,
    history_row,
    make_dataset,
    plan_devices,
    teacher_forcing_pairs,
    token_cross_entropy,
)
from pipeline.training.checkpoints import (
    EarlyStoppingState,
    EpochJournal,
    JournalEntry,
    ResumableEarlyStopping,
    TrainingCheckpoint,
)
from pipeline.training.devices import read_cpu_flags
from tests.conftest import TINY_OVERRIDES, deep_merge, write_params

REPO = Path(__file__).resolve().parents[1]


def ids(*values: int) -> np.ndarray:
    return np.array(values, np.int32)


# ------------------------------------------------------------------------ data


def test_teacher_forcing_adds_bos_and_eos_and_drops_bad_pairs() -> None:
    sources = [ids(5, 6), ids(), ids(7), ids(8, 9, 10, 11)]
    targets = [ids(12), ids(13), ids(), ids(14)]
    pairs = teacher_forcing_pairs(sources, targets, max_tokens=3)
    # pair 1 has an empty source, pair 3 a 4-piece source: both dropped
    assert [row.tolist() for row in pairs.sources] == [[5, 6], [7]]
    assert [row.tolist() for row in pairs.target_in] == [[BOS_ID, 12], [BOS_ID]]
    assert [row.tolist() for row in pairs.target_out] == [[12, EOS_ID], [EOS_ID]]
    assert pairs.target_tokens == 3
    assert len(pairs) == 2


def sample_pairs(count: int) -> Any:
    rng = np.random.default_rng(1)
    sources = [rng.integers(4, 50, rng.integers(1, 12)).astype(np.int32) for _ in range(count)]
    targets = [rng.integers(4, 50, rng.integers(1, 12)).astype(np.int32) for _ in range(count)]
    return teacher_forcing_pairs(sources, targets, max_tokens=20)


def batches(dataset: tf.data.Dataset) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    return [
        ({name: tensor.numpy() for name, tensor in inputs.items()}, labels.numpy())
        for inputs, labels in dataset
    ]


def test_dataset_yields_every_pair_once_padded_in_length_buckets() -> None:
    pairs = sample_pairs(40)
    seen = []
    produced = batches(make_dataset(pairs, 4, [4, 8], shuffle_seed=3))
    assert len(produced) == batch_count(pairs, 4, [4, 8])
    for inputs, labels in produced:
        lengths = np.maximum(
            (inputs["source"] != PAD_ID).sum(1), (inputs["target_in"] != PAD_ID).sum(1)
        )
        bucket = np.digitize(lengths, [5, 9])  # a row of length n sits in bucket "n <= bound"
        assert len(set(bucket.tolist())) == 1
        assert len(labels) <= 4
        assert np.all(inputs["target_in"][:, 0] == BOS_ID)
        np.testing.assert_array_equal(inputs["target_in"] != PAD_ID, labels != PAD_ID)
        for source in inputs["source"]:
            seen.append(tuple(source[source != PAD_ID].tolist()))
    assert sorted(seen) == sorted(tuple(row.tolist()) for row in pairs.sources)


def test_dataset_order_follows_the_seed() -> None:
    pairs = sample_pairs(40)

    def order(seed: int | None) -> list[list[int]]:
        dataset = make_dataset(pairs, 4, [4, 8], shuffle_seed=seed)
        return [inputs["source"][:, 0].tolist() for inputs, _ in batches(dataset)]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert order(None) == order(None)


# ------------------------------------------------------------ loss and metric


LOGITS = np.array([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]]], np.float32)
LABELS = np.array([[2, PAD_ID]], np.int32)


def reference_cross_entropy(logits: np.ndarray, label: int, smoothing: float) -> float:
    log_probs = logits - math.log(np.exp(logits).sum())
    return float(-(1 - smoothing) * log_probs[label] - smoothing * log_probs.mean())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_cross_entropy_matches_the_definition(smoothing: float) -> None:
    values = token_cross_entropy(LABELS, LOGITS, smoothing).numpy()
    assert values[0, 0] == pytest.approx(reference_cross_entropy(LOGITS[0, 0], 2, smoothing))
    assert values[0, 1] == pytest.approx(reference_cross_entropy(LOGITS[0, 1], 0, smoothing))


def test_loss_and_nll_metric_ignore_padding() -> None:
    expected = reference_cross_entropy(LOGITS[0, 0], 2, 0.1)
    assert float(MaskedSequenceCrossEntropy(0.1)(LABELS, LOGITS)) == pytest.approx(expected)
    metric = MaskedTokenNLL()
    metric.update_state(LABELS, LOGITS)
    metric.update_state(np.array([[1, 3]], np.int32), LOGITS)
    nll = [
        reference_cross_entropy(LOGITS[0, 0], 2, 0),
        reference_cross_entropy(LOGITS[0, 0], 1, 0),
        reference_cross_entropy(LOGITS[0, 1], 3, 0),
    ]
    assert float(metric.result()) == pytest.approx(sum(nll) / 3)


def test_learning_rate_warms_up_linearly_then_decays_with_inverse_sqrt() -> None:
    schedule = WarmupInverseSqrt(peak_learning_rate=0.002, warmup_steps=100)
    # the optimizer's iteration counter starts at 0, so step k is the (k + 1)-th update
    assert float(schedule(0)) == pytest.approx(0.002 * 1 / 100)
    assert float(schedule(49)) == pytest.approx(0.001)
    assert float(schedule(99)) == pytest.approx(0.002)
    assert float(schedule(399)) == pytest.approx(0.001)
    restored = WarmupInverseSqrt.from_config(schedule.get_config())
    assert float(restored(399)) == pytest.approx(0.001)


SAPPHIRE_RAPIDS = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
SKYLAKE = {"avx2", "avx512f"}


@pytest.mark.parametrize(
    ("precision", "gpus", "flags", "expected"),
    [
        ("auto", 0, SKYLAKE, ("float32", False)),
        ("auto", 0, SAPPHIRE_RAPIDS, ("mixed_bfloat16", False)),
        ("auto", 0, {"avx512_bf16"}, ("mixed_bfloat16", False)),
        ("auto", 1, SAPPHIRE_RAPIDS, ("mixed_float16", True)),
        ("float32", 1, SKYLAKE, ("float32", True)),
        ("float32", 0, SAPPHIRE_RAPIDS, ("float32", False)),
        ("mixed_float16", 0, SKYLAKE, ("mixed_float16", False)),
    ],
)
def test_device_plan(
    precision: str,
    gpus: int,
    flags: set[str],
    expected: tuple[str, bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)  # oneDNN on, its default
    plan = plan_devices(precision, gpus, backend="tensorflow", cpu_flags=flags)
    assert (plan.precision, plan.jit_compile) == expected


def test_auto_precision_keeps_float32_where_bfloat16_would_be_emulated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert plan_devices("auto", 0, "jax", SAPPHIRE_RAPIDS).precision == "float32"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert plan_devices("auto", 0, "tensorflow", SAPPHIRE_RAPIDS).precision == "float32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16\n", encoding="utf-8")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert read_cpu_flags(tmp_path / "missing") == set()


def test_history_rows_and_csv() -> None:
    logs = {"loss": 2.5, "nll": math.log(8.0), "val_loss": 3.0, "val_nll": math.log(10.0)}
    row = history_row(3, logs, 0.00125)
    assert row == pytest.approx(
        {
            "epoch": 3,
            "loss": 2.5,
            "val_loss": 3.0,
            "perplexity": 8.0,
            "val_perplexity": 10.0,
            "learning_rate": 0.00125,
        }
    )
    text = history_csv([{**row, "tokens_per_second": 99.0}])
    assert text == (",".join(HISTORY_COLUMNS) + "\n" + "3,2.5,3,8,10,0.00125\n")


# ------------------------------------------------------- resume state (checkpoints)


def toy_model() -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def run_epochs(
    checkpoint: TrainingCheckpoint,
    entries: list[JournalEntry],
    val_losses: list[float],
    first_epoch: int = 0,
    resume_from: EarlyStoppingState | None = None,
    backed_up_through: int | None = None,
    patience: int = 2,
) -> None:
    """The stage's epoch-end callbacks (early stopping, journal, Keras backup) on a toy model.

    Epoch i (0-based) reports `val_losses[i - first_epoch]` and has every weight equal to i, so
    saved weights name their epoch. Keras backs epochs up through `backed_up_through` (1-based):
    a kill between the journal and the backup leaves the journal one epoch ahead.
    """
    model = toy_model()
    early_stopping = ResumableEarlyStopping(patience, resume_from)
    journal = EpochJournal(checkpoint, entries, early_stopping, target_tokens=100)
    backup = keras.callbacks.BackupAndRestore(
        str(checkpoint.backup_dir), delete_checkpoint=False, double_checkpoint=True
    )
    for callback in (early_stopping, journal, backup):
        callback.set_model(model)
    early_stopping.on_train_begin()
    for epoch, val_loss in enumerate(val_losses, start=first_epoch):
        model.set_weights([np.full(w.shape, float(epoch), w.dtype) for w in model.get_weights()])
        logs = {"loss": 1.0, "nll": 0.5, "val_loss": val_loss, "val_nll": 0.5}
        journal.on_epoch_begin(epoch)
        early_stopping.on_epoch_end(epoch, logs)
        journal.on_epoch_end(epoch, logs)
        if backed_up_through is None or epoch < backed_up_through:
            backup.on_epoch_end(epoch, logs)
        if model.stop_training:
            return


def prepared_checkpoint(directory: Path, average_last: int = 1) -> TrainingCheckpoint:
    checkpoint = TrainingCheckpoint(directory, average_last)
    checkpoint.prepare("fingerprint")
    return checkpoint


def test_early_stopping_state_survives_a_resume(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints")
    run_epochs(checkpoint, [], [3.0, 2.0, 2.5])  # then the process dies

    resume = prepared_checkpoint(tmp_path / "checkpoints").resume_point(epochs=10)
    assert not resume.finished
    assert resume.epoch == 3
    assert resume.early_stopping == EarlyStoppingState(
        best_epoch=2, best_val_loss=2.0, wait=1, stopped=False
    )
    entries = list(resume.entries)
    run_epochs(checkpoint, entries, [2.6, 1.0], first_epoch=3, resume_from=resume.early_stopping)

    # epoch 4 is the second epoch without improvement since epoch 2: patience 2 stops there
    assert [entry.epoch for entry in entries] == [1, 2, 3, 4]
    assert entries[-1].early_stopping == EarlyStoppingState(
        best_epoch=2, best_val_loss=2.0, wait=2, stopped=True
    )
    finished = checkpoint.resume_point(epochs=10)
    assert finished.finished and finished.epoch == 4
    assert all((weights == 1.0).all() for weights in checkpoint.averaged_weights(2))  # epoch 2's
    assert [path.name for path in checkpoint.directory.glob("epoch-*")] == ["epoch-2.npz"]


def test_the_final_weights_average_the_best_epoch_and_the_ones_before_it(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints", average_last=3)
    run_epochs(checkpoint, [], [3.0, 2.0, 1.5, 1.4, 1.3])  # then the process dies
    # kept: what a resume from epoch 4 or 5 averages, and what a later best epoch 6 would
    assert sorted(path.name for path in checkpoint.directory.glob("epoch-*")) == [
        "epoch-2.npz",
        "epoch-3.npz",
        "epoch-4.npz",
        "epoch-5.npz",
    ]
    resume = prepared_checkpoint(tmp_path / "checkpoints", average_last=3).resume_point(10)
    entries = list(resume.entries)
    run_epochs(
        checkpoint, entries, [1.0, 1.2, 1.3], first_epoch=5, resume_from=resume.early_stopping
    )

    assert entries[-1].early_stopping == EarlyStoppingState(6, 1.0, 2, True)
    assert checkpoint.averaged_epochs(6) == [4, 5, 6]
    # epochs 4, 5 and 6 hold weights 3.0, 4.0 and 5.0
    assert all((weights == 4.0).all() for weights in checkpoint.averaged_weights(6))
    assert checkpoint.resume_point(epochs=10).finished


def test_averaging_never_reaches_before_the_first_epoch(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints", average_last=5)
    run_epochs(checkpoint, [], [2.0, 1.0])

    assert checkpoint.averaged_epochs(2) == [1, 2]
    assert all((weights == 0.5).all() for weights in checkpoint.averaged_weights(2))


def test_resume_cuts_the_journal_back_to_the_epoch_keras_restores(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints")
    # killed after epoch 3's journal entry (a new best) but before Keras backed epoch 3 up
    run_epochs(checkpoint, [], [3.0, 2.0, 1.0], backed_up_through=2)
    assert [entry.epoch for entry in checkpoint.read_journal()] == [1, 2, 3]

    resume = checkpoint.resume_point(epochs=10)
    assert not resume.finished
    assert [entry.epoch for entry in resume.entries] == [1, 2]
    assert resume.early_stopping == EarlyStoppingState(2, 2.0, 0, False)
    assert all((weights == 1.0).all() for weights in checkpoint.averaged_weights(2))


def test_a_journal_through_the_last_epoch_is_finished_without_keras(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints")
    run_epochs(checkpoint, [], [3.0, 2.0, 2.5], backed_up_through=2)

    resume = checkpoint.resume_point(epochs=3)
    assert resume.finished
    assert [entry.epoch for entry in resume.entries] == [1, 2, 3]
    assert resume.entries[-1].early_stopping.best_epoch == 2


def test_a_checkpoint_of_other_params_is_discarded(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints")
    run_epochs(checkpoint, [], [3.0, 2.0])
    other = TrainingCheckpoint(tmp_path / "checkpoints")
    other.prepare("other fingerprint")
    assert other.resume_point(epochs=10).entries == ()
    assert not other.backup_dir.exists()


def test_a_torn_keras_backup_record_restarts_training(tmp_path: Path) -> None:
    checkpoint = prepared_checkpoint(tmp_path / "checkpoints")
    run_epochs(checkpoint, [], [3.0, 2.0])
    (checkpoint.backup_dir / "training_metadata.json").write_text('{"epo', encoding="utf-8")
    resume = checkpoint.resume_point(epochs=10)
    assert resume.entries == () and not resume.finished
    assert checkpoint.read_journal() == []
    assert not checkpoint.backup_dir.exists()


# ------------------------------------------------------------ the `mt train` stage


def tiny_train_project(root: Path, corpus: Path, train_overrides: dict[str, Any]) -> Path:
    """A project with data/clean copied from `corpus`, tokenized with the tiny params."""
    from pipeline.config import load_config
    from pipeline.paths import project_paths
    from pipeline.tokenize import run_tokenize

    root.mkdir(exist_ok=True)
    write_params(root, deep_merge(TINY_OVERRIDES, {"train": train_overrides}))
    shutil.copytree(corpus, root / "data" / "clean")
    run_tokenize(load_config(root / "params.yaml"), project_paths(root))
    return root


def assert_the_better_of_average_and_best_epoch_was_exported(
    root: Path, metrics: dict[str, Any], model: keras.Model
) -> None:
    """With best epoch 2 both epochs are averaged; the exported weights score the lower NLL."""
    from pipeline.config import load_config
    from pipeline.paths import project_paths
    from pipeline.training.data import load_training_data

    if metrics["best_epoch"] == 1:  # nothing before epoch 1 to average with
        assert (metrics["averaged_epochs"], metrics["exported_weights"]) == (1, "best_epoch")
        return
    assert metrics["averaged_epochs"] == 2
    scores = {"averaged": metrics["val_nll_averaged"], "best_epoch": metrics["val_nll_best_epoch"]}
    assert metrics["exported_weights"] == min(scores, key=lambda name: scores[name])
    config = load_config(root / "params.yaml")
    data = load_training_data(project_paths(root), config.train.max_tokens)
    model.compile(loss=MaskedSequenceCrossEntropy(), metrics=[MaskedTokenNLL()])
    val = make_dataset(data.val, config.train.batch_size, config.train.bucket_boundaries)
    exported_nll = model.evaluate(val, verbose=0, return_dict=True)["nll"]
    assert exported_nll == pytest.approx(min(scores.values()), rel=1e-4)


@pytest.fixture
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CI", "true")


@pytest.mark.slow
@pytest.mark.usefixtures("isolated_mlflow")
def test_mt_train_writes_outputs_and_records_an_mlflow_run(
    project_dir: Path, tiny_corpus_dir: Path
) -> None:
    import mlflow

    from pipeline.config import _load_cached
    from pipeline.train import main

    tiny_train_project(project_dir, tiny_corpus_dir, {"epochs": 2, "average_last": 2})
    _load_cached.cache_clear()
    assert main([]) == 0

    history = (project_dir / "reports/train/history.csv").read_text().splitlines()
    assert history[0] == ",".join(HISTORY_COLUMNS)
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]
    metrics = json.loads((project_dir / "reports/train/metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["best_epoch"] in (1, 2)
    assert metrics["val_perplexity"] == pytest.approx(
        float(history[metrics["best_epoch"]].split(",")[4]), rel=1e-5
    )
    assert not (project_dir / "models/checkpoints").exists()
    model = keras.saving.load_model(project_dir / "models/seq2seq.keras", safe_mode=True)
    assert model.get_layer("decoder").compute_dtype == "float32"
    assert_the_better_of_average_and_best_epoch_was_exported(project_dir, metrics, model)

    run_info = json.loads((project_dir / "reports/train/run.json").read_text())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{project_dir / 'mlruns.db'}")
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == run_info["experiment_id"]
    assert run.data.params["model.hidden_units"] == "32"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["hardware.gpus"] == "none"
    assert "sha256.data/tokens/train.npz" in run.data.tags
    # The splits it learned from and was validated on, as the run's datasets.
    digests = {
        split: hashlib.sha256((project_dir / f"data/tokens/{split}.npz").read_bytes()).hexdigest()
        for split in ("train", "val")
    }
    assert sorted(
        (
            item.dataset.name,
            item.dataset.digest,
            item.dataset.source_type,
            json.loads(item.dataset.source),
            {tag.key: tag.value for tag in item.tags},
        )
        for item in run.inputs.dataset_inputs
    ) == [
        (
            "train",
            digests["train"][:36],
            "local",
            {"uri": "data/tokens/train.npz"},
            {"mlflow.data.context": "training"},
        ),
        (
            "val",
            digests["val"][:36],
            "local",
            {"uri": "data/tokens/val.npz"},
            {"mlflow.data.context": "validation"},
        ),
    ]
    val_loss = client.get_metric_history(run.info.run_id, "val_loss")
    assert [point.step for point in val_loss] == [1, 2]
    assert {"loss", "perplexity", "val_perplexity", "learning_rate"} <= set(run.data.metrics)
    artifacts = [item.path for item in client.list_artifacts(run.info.run_id, "model")]
    assert artifacts == ["model/seq2seq.keras"]


def start_training(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MT_PROJECT_DIR": str(root), "CI": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "train"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_first_checkpoint(root: Path, process: subprocess.Popen[str]) -> None:
    metadata = root / "models/checkpoints/keras/training_metadata.json"
    deadline = time.monotonic() + 600
    while not metadata.is_file():
        assert process.poll() is None, "training ended before it wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(
    tmp_path: Path, tiny_corpus_dir: Path
) -> None:
    epochs = 12
    root = tiny_train_project(
        tmp_path / "project", tiny_corpus_dir, {"epochs": epochs, "patience": epochs}
    )
    first = start_training(root)
    wait_for_first_checkpoint(root, first)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    first_run = json.loads((root / "models/checkpoints/mlflow_run.json").read_text())["run_id"]
    assert not (root / "models/seq2seq.keras").exists()
    done_epochs = json.loads(
        (root / "models/checkpoints/keras/training_metadata.json").read_text()
    )["epoch"]
    assert 1 <= done_epochs < epochs

    second = start_training(root)
    output, _ = second.communicate(timeout=900)
    assert second.returncode == 0, output
    assert f"resumed from the checkpoint of epoch {done_epochs}" in output
    assert f"Epoch {done_epochs + 1}/{epochs}" in output
    assert "Epoch 1/" not in output  # the second process ran only the remaining epochs
    history = (root / "reports/train/history.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in history] == list(range(1, epochs + 1))
    assert (root / "models/seq2seq.keras").is_file()
    assert not (root / "models/checkpoints").exists()
    # one MLflow run spans both processes
    assert json.loads((root / "reports/train/run.json").read_text())["run_id"] == first_run
