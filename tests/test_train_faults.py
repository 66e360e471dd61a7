"""Faults injected for real into a running `mt train`: SIGKILL after the last epoch, an MLflow
server killed mid-training or for good, a full disk under models/, MLflow unreachable at start.

Each runs `mt train` as a subprocess on the tiny corpus and checks what an operator relies on:
the exit code and one-line error, no half-made output, and a rerun that finishes the job
(without training again when every epoch was already checkpointed).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import pytest
import yaml
from mlflow import MlflowClient

from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.train import EPOCHS_CHECKPOINTED
from tests.mlflow_server import MlflowServer, free_port
from tests.test_train import tiny_train_project

# Fail MLflow calls at once while the server is down, instead of MLflow's ~4 minutes of retries.
MLFLOW_FAILS_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
FINISHED_WITHOUT_TRAINING = "finishing the outputs without training"


def start_training(root: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environ = {**os.environ, "MT_PROJECT_DIR": str(root), "CI": "true"}
    environ.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "train"],
        cwd=root,
        env={**environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


def keras_epochs_done(root: Path) -> int:
    """Epochs in Keras' backup; 0 while there is none (or it is being written)."""
    metadata = root / "models/checkpoints/keras/training_metadata.json"
    try:
        return int(json.loads(metadata.read_text(encoding="utf-8"))["epoch"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def wait_until(condition: Any, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended before {what}:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, f"not {what} after 10 minutes"
        time.sleep(0.05)


def pause_env(pause_dir: Path) -> dict[str, str]:
    pause_dir.mkdir(exist_ok=True)
    return {PAUSE_AT_ENV: EPOCHS_CHECKPOINTED, PAUSE_DIR_ENV: str(pause_dir)}


def log_lines(output: str, level: str) -> list[str]:
    return [line for line in output.splitlines() if f" {level} " in line]


def history_epochs(root: Path) -> list[int]:
    lines = (root / "reports/train/history.csv").read_text(encoding="utf-8").splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def checkpointed_run_id(root: Path) -> str:
    return str(json.loads((root / "models/checkpoints/mlflow_run.json").read_text())["run_id"])


def metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    history = MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return sorted(point.step for point in history)


def recomputed_val_loss(root: Path) -> float:
    """val_loss of the saved models/seq2seq.keras on the val split, as training measures it."""
    from pipeline.config import load_config
    from pipeline.paths import project_paths
    from pipeline.train import MaskedSequenceCrossEntropy, make_dataset
    from pipeline.training.data import load_training_data

    config = load_config(root / "params.yaml")
    data = load_training_data(project_paths(root), config.train.max_tokens)
    model = keras.saving.load_model(root / "models/seq2seq.keras", safe_mode=True)
    model.compile(loss=MaskedSequenceCrossEntropy(config.train.label_smoothing))
    val = make_dataset(data.val, config.train.batch_size, config.train.bucket_boundaries)
    return float(model.evaluate(val, verbose=0))


def assert_finished_from_checkpoint(root: Path, output: str, epochs: int) -> None:
    """A rerun that wrote every output from the checkpoint, without an epoch of training."""
    assert FINISHED_WITHOUT_TRAINING in output, output
    assert "Epoch 1/" not in output and f"Epoch {epochs}/" not in output
    assert (root / "models/seq2seq.keras").is_file()
    assert not (root / "models/checkpoints").exists()


# --------------------------------------------------------------- defect 1: kill after the end


@pytest.mark.slow
def test_a_run_killed_after_its_last_epoch_is_finished_by_the_rerun(
    tmp_path: Path, tiny_corpus_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL once every epoch is checkpointed and before any output exists: the rerun writes
    the outputs from the checkpoint with the best epoch's weights, in the same MLflow run."""
    epochs = 6
    root = tiny_train_project(
        tmp_path / "project", tiny_corpus_dir, {"epochs": epochs, "patience": 2}
    )
    pause_dir = tmp_path / "pause"
    first = start_training(root, pause_env(pause_dir))
    processes.append(first)
    wait_until((pause_dir / f"{EPOCHS_CHECKPOINTED}.paused").is_file, first, "paused")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert not (root / "models/seq2seq.keras").exists()
    journal = json.loads((root / "models/checkpoints/epochs.json").read_text())
    run_id = checkpointed_run_id(root)
    # Meanwhile someone edits another stage's params: MLflow refuses to change a logged param,
    # and that must not block the rerun.
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["decode"]["beam_size"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    second = start_training(root)
    processes.append(second)
    returncode, output = finish(second)
    assert returncode == 0, output
    assert_finished_from_checkpoint(root, output, epochs)
    done = len(journal)  # every epoch, or fewer if early stopping ended training
    assert history_epochs(root) == list(range(1, done + 1))
    assert json.loads((root / "reports/train/run.json").read_text())["run_id"] == run_id
    uri = f"sqlite:///{root / 'mlruns.db'}"
    assert metric_steps(uri, run_id, "val_loss") == list(range(1, done + 1))
    logged_params = MlflowClient(uri).get_run(run_id).data.params
    assert logged_params["decode.beam_size"] == str(params["decode"]["beam_size"] - 1)

    # the saved weights are the best epoch's, whichever epoch that was on this CPU
    metrics = json.loads((root / "reports/train/metrics.json").read_text())
    val_losses = [entry["row"]["val_loss"] for entry in journal]
    assert metrics["best_epoch"] == 1 + val_losses.index(min(val_losses))
    assert metrics["val_loss"] == pytest.approx(min(val_losses))
    assert recomputed_val_loss(root) == pytest.approx(metrics["val_loss"], rel=1e-4)


# ----------------------------------------------------------- defect 2: MLflow down mid-run


def mlflow_server(tmp_path: Path) -> MlflowServer:
    return MlflowServer(
        backend_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_dir=tmp_path / "mlflow-artifacts",
        log_file=tmp_path / "mlflow-server.log",
    )


@pytest.mark.slow
def test_training_goes_on_while_mlflow_is_down_and_logs_every_epoch_once_it_is_back(
    tmp_path: Path, tiny_corpus_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    # Killed after epoch 1 or 2, two epochs without MLflow, then held while it restarts: at most
    # 4 epochs done, so at least 2 are logged live once it is back.
    epochs = 6
    root = tiny_train_project(
        tmp_path / "project", tiny_corpus_dir, {"epochs": epochs, "patience": epochs}
    )
    server = mlflow_server(tmp_path).start()
    try:
        trainer = start_training(root, {"MLFLOW_TRACKING_URI": server.url, **MLFLOW_FAILS_FAST})
        processes.append(trainer)
        wait_until(lambda: keras_epochs_done(root) >= 1, trainer, "epoch 1 was checkpointed")
        server.kill()
        killed_after = keras_epochs_done(root)
        wait_until(
            lambda: keras_epochs_done(root) >= killed_after + 2, trainer, "2 epochs without MLflow"
        )
        # Hold training while the server restarts, so that it is back before the end.
        trainer.send_signal(signal.SIGSTOP)
        try:
            server.start()
        finally:
            trainer.send_signal(signal.SIGCONT)
        returncode, output = finish(trainer)
    finally:
        server.kill()
    assert returncode == 0, output
    warnings = log_lines(output, "WARNING")
    assert len(warnings) == 1, output
    assert f"MLflow at {server.url} is unreachable" in warnings[0]
    assert "training goes on" in warnings[0]
    assert f"MLflow at {server.url} is reachable again" in output

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the server's own database, read directly
    run_id = json.loads((root / "reports/train/run.json").read_text())["run_id"]
    for key in ("loss", "val_loss", "perplexity", "val_perplexity", "learning_rate"):
        assert metric_steps(store, run_id, key) == list(range(1, epochs + 1)), key
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
    artifacts = [path.name for path in (tmp_path / "mlflow-artifacts").rglob("*.keras")]
    assert artifacts == ["seq2seq.keras"]
    assert history_epochs(root) == list(range(1, epochs + 1))


@pytest.mark.slow
def test_mlflow_down_at_the_end_fails_clearly_and_the_rerun_finishes_without_training(
    tmp_path: Path, tiny_corpus_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    epochs = 4
    root = tiny_train_project(
        tmp_path / "project", tiny_corpus_dir, {"epochs": epochs, "patience": epochs}
    )
    server = mlflow_server(tmp_path).start()
    env = {"MLFLOW_TRACKING_URI": server.url, **MLFLOW_FAILS_FAST}
    try:
        first = start_training(root, env)
        processes.append(first)
        wait_until(lambda: keras_epochs_done(root) >= 1, first, "epoch 1 was checkpointed")
        server.kill()  # and it stays down until training has ended
        returncode, output = finish(first)
        assert returncode == 2, output
        errors = log_lines(output, "ERROR")
        assert len(errors) == 1, output
        assert f"train failed: MLflow at {server.url} is unreachable" in errors[0]
        assert "the checkpoints in" in errors[0] and "finishes without training" in errors[0]
        assert "Traceback" not in output
        assert len(log_lines(output, "WARNING")) == 1, output
        assert not (root / "models/seq2seq.keras").exists()
        assert not (root / "reports/train").exists()
        run_id = checkpointed_run_id(root)

        server.start()
        second = start_training(root, env)
        processes.append(second)
        returncode, output = finish(second)
    finally:
        server.kill()
    assert returncode == 0, output
    assert_finished_from_checkpoint(root, output, epochs)
    assert json.loads((root / "reports/train/run.json").read_text())["run_id"] == run_id
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert metric_steps(store, run_id, "val_loss") == list(range(1, epochs + 1))
    assert history_epochs(root) == list(range(1, epochs + 1))


@pytest.mark.slow
def test_mlflow_unreachable_at_the_start_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_corpus_dir: Path, processes: list[subprocess.Popen[str]]
) -> None:
    root = tiny_train_project(tmp_path / "project", tiny_corpus_dir, {"epochs": 2})
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    trainer = start_training(root, {"MLFLOW_TRACKING_URI": url, **MLFLOW_FAILS_FAST})
    processes.append(trainer)
    returncode, output = finish(trainer)
    assert returncode == 2, output
    errors = log_lines(output, "ERROR")
    assert len(errors) == 1, output
    assert f"train failed: MLflow at {url} failed while opening the training run" in errors[0]
    assert "Traceback" not in output
    assert "Epoch 1/" not in output
    assert not (root / "models/seq2seq.keras").exists()
    assert not (root / "reports/train").exists()


# ------------------------------------------------------- fault: disk full saving the model


def fill_up(path: Path) -> None:
    """Write to `path` until the filesystem has no page left: a really full disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = 1 << 20
        while size >= 1:
            try:
                os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)


@pytest.fixture
def models_on_small_tmpfs(tmp_path: Path, tiny_corpus_dir: Path) -> Iterator[Path]:
    """A tokenized tiny project whose models/ is a 16 MiB tmpfs (room for the checkpoints)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs over models/ needs root (CI runs the tests as root)")
    root = tiny_train_project(tmp_path / "project", tiny_corpus_dir, {"epochs": 3, "patience": 3})
    models = root / "models"
    shutil.move(models / "tokenizer", tmp_path / "tokenizer")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(models)], check=True)
    try:
        shutil.copytree(tmp_path / "tokenizer", models / "tokenizer")
        yield root
    finally:
        subprocess.run(["umount", "--lazy", str(models)], check=True)


@pytest.mark.slow
def test_disk_full_while_saving_the_model_fails_clearly_and_the_rerun_finishes(
    tmp_path: Path, models_on_small_tmpfs: Path, processes: list[subprocess.Popen[str]]
) -> None:
    root = models_on_small_tmpfs
    pause_dir = tmp_path / "pause"
    first = start_training(root, pause_env(pause_dir))
    processes.append(first)
    wait_until((pause_dir / f"{EPOCHS_CHECKPOINTED}.paused").is_file, first, "paused")
    filler = root / "models/filler"
    fill_up(filler)  # every epoch is checkpointed; now the model has no room
    (pause_dir / f"{EPOCHS_CHECKPOINTED}.resume").touch()
    returncode, output = finish(first)

    assert returncode == 2, output
    errors = log_lines(output, "ERROR")
    assert len(errors) == 1, output
    model_file = root / "models/seq2seq.keras"
    assert (
        f"train failed: {model_file}: no space left on device while saving the model"
        in (errors[0])
    )
    assert "Traceback" not in output
    assert not model_file.exists()
    assert [path.name for path in (root / "models").rglob("*.keras")] == []  # nothing truncated
    assert not (root / "reports/train").exists()

    filler.unlink()
    second = start_training(root)
    processes.append(second)
    returncode, output = finish(second)
    assert returncode == 0, output
    assert_finished_from_checkpoint(root, output, epochs=3)
    assert history_epochs(root) == [1, 2, 3]
    keras.saving.load_model(model_file, safe_mode=True)
