"""pipeline/training/checkpoint_mirror.py: training checkpoints mirrored to a real MLflow server.

The slow tests run `mt train` as a subprocess on the tiny corpus against one `mlflow server`
per module (artifacts proxied through it, as in production): a run killed on host A is resumed
by host B, a separate folder with the same inputs and no models/checkpoints/; the mirror off
uploads nothing; the server killed mid-training costs warnings, not the training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.paths import project_paths
from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.train import EPOCHS_CHECKPOINTED
from pipeline.training.checkpoint_mirror import (
    EPOCH_MIRRORED,
    EXPERIMENT_NAME,
    FINGERPRINT_TAG,
    MIRROR_ENV,
    CheckpointMirror,
    mirror_uri,
    snapshot_files,
)
from pipeline.training.checkpoints import run_fingerprint
from pipeline.training.data import input_hashes
from tests.mlflow_server import MlflowServer, free_port
from tests.run_outputs import history_epochs
from tests.test_train import tiny_train_project
from tests.test_train_faults import (
    checkpointed_run_id,
    finish,
    keras_epochs_done,
    metric_steps,
    pause_env,
    start_training,
    wait_until,
)

UNMIRRORED = re.compile(r"WARNING .* the checkpoint of epoch (\d+) is not mirrored to MLflow")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    base = tmp_path_factory.mktemp("mirror-server")
    started = MlflowServer(
        backend_uri=f"sqlite:///{base / 'mlflow.db'}",
        artifacts_dir=base / "artifacts",
        log_file=base / "server.log",
    ).start()
    try:
        yield started
    finally:
        started.kill()


def mirror_env(server: MlflowServer) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": server.url, MIRROR_ENV: "mlflow"}


def fingerprint_of(root: Path) -> str:
    return run_fingerprint(load_config(root / "params.yaml"), input_hashes(project_paths(root)))


def mirror_runs(server: MlflowServer, root: Path) -> list[Any]:
    """The mirror's runs for the checkpoints of `root`'s params and inputs."""
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return []
    tag_filter = f"tags.`{FINGERPRINT_TAG}` = '{fingerprint_of(root)}'"
    return list(client.search_runs([experiment.experiment_id], tag_filter))


def mirrored_epoch(server: MlflowServer, root: Path) -> int:
    """The epoch `latest.json` of `root`'s mirror run names; 0 while there is none."""
    runs = mirror_runs(server, root)
    if not runs or "latest.json" not in artifact_paths(server, runs[0].info.run_id):
        return 0
    client = MlflowClient(server.url)
    with tempfile.TemporaryDirectory() as scratch:
        pointer = client.download_artifacts(runs[0].info.run_id, "latest.json", scratch)
        return int(json.loads(Path(pointer).read_text(encoding="utf-8"))["epoch"])


def artifact_paths(server: MlflowServer, run_id: str) -> list[str]:
    return sorted(item.path for item in MlflowClient(server.url).list_artifacts(run_id))


def assert_finished_and_emptied(server: MlflowServer, run_id: str) -> None:
    assert MlflowClient(server.url).get_run(run_id).info.status == "FINISHED"
    assert artifact_paths(server, run_id) == []


def copy_inputs(host_a: Path, host_b: Path) -> None:
    """Another host's checkout: the same params and training inputs, no models/checkpoints/."""
    host_b.mkdir()
    shutil.copy2(host_a / "params.yaml", host_b / "params.yaml")
    shutil.copytree(host_a / "data" / "tokens", host_b / "data" / "tokens")
    shutil.copytree(host_a / "models" / "tokenizer", host_b / "models" / "tokenizer")


# ------------------------------------------------------------------------ settings


@pytest.mark.parametrize("value", [None, "", "off", "OFF"])
def test_the_mirror_is_off_unless_asked_for(value: str | None, tmp_path: Path) -> None:
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    if value is not None:
        environ[MIRROR_ENV] = value
    assert mirror_uri(project_paths(tmp_path), environ) is None


def test_mlflow_mode_mirrors_to_the_tracking_server_and_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000", MIRROR_ENV: "mlflow"}
    monkeypatch.setattr(os, "environ", dict(environ))
    assert mirror_uri(project_paths(tmp_path)) == "http://mlflow.example:5000"
    # The mirror's short retries hold for its own calls only (tests/test_tracking.py).
    assert os.environ == environ


def test_a_local_tracking_store_is_warned_about_and_not_mirrored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert mirror_uri(project_paths(tmp_path), {MIRROR_ENV: "mlflow"}) is None
    (record,) = caplog.records
    assert f"{MIRROR_ENV}=mlflow, but the tracking URI sqlite:///" in record.getMessage()
    assert "checkpoints are not mirrored" in record.getMessage()


def test_an_unknown_mode_is_a_config_error_naming_the_variable_and_the_choices(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as raised:
        mirror_uri(project_paths(tmp_path), {MIRROR_ENV: "s3"})
    assert str(raised.value) == (
        "MT_CHECKPOINT_MIRROR='s3' is not a checkpoint mirror; set it to 'mlflow' (copy each "
        "epoch's checkpoint to the MLflow tracking server) or 'off' (or leave it unset)"
    )


def test_mt_train_with_an_unknown_mode_exits_2_with_one_line_before_any_work(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv(MIRROR_ENV, "s3")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert main(["train"]) == 2
    (error,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert error.getMessage().startswith("train failed: MT_CHECKPOINT_MIRROR='s3' is not a")
    assert not (project_dir / "models").exists()


def test_a_snapshot_leaves_out_what_a_resume_does_not_need(tmp_path: Path) -> None:
    names = [
        "fingerprint.txt", "epochs.json", "epoch-2.npz", ".epoch-3.npz.tmp", "mlflow_run.json",
        "keras/latest.weights.h5", "keras/latest.weights.h5.bkp",
        "keras/training_metadata.json", "keras/training_metadata.json.bkp",
        "export/seq2seq.keras",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name, encoding="utf-8")
    assert [path.as_posix() for path in snapshot_files(tmp_path)] == [
        "epoch-2.npz",
        "epochs.json",
        "fingerprint.txt",
        "keras/latest.weights.h5",
        "keras/training_metadata.json",
        "mlflow_run.json",
    ]


def test_a_restore_from_a_server_that_is_down_is_a_warning_and_keeps_the_local_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    local = tmp_path / "checkpoints"
    local.mkdir()
    (local / "fingerprint.txt").write_text("fp", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert CheckpointMirror(url, "fp").restore(local, local_epoch=0) is False
    (record,) = caplog.records
    assert record.getMessage().startswith(f"could not restore the checkpoint from MLflow at {url}")
    assert [path.name for path in local.iterdir()] == ["fingerprint.txt"]


# ------------------------------------------------------------ against the server


def fake_checkpoint(directory: Path, fingerprint: str, epoch: int) -> None:
    (directory / "keras").mkdir(parents=True, exist_ok=True)
    (directory / "fingerprint.txt").write_text(fingerprint, encoding="utf-8")
    (directory / "keras" / "training_metadata.json").write_text(json.dumps({"epoch": epoch}))
    (directory / f"epoch-{epoch}.npz").write_bytes(bytes([epoch]) * 100)


@pytest.mark.slow
def test_each_epoch_replaces_the_last_snapshot_and_the_end_empties_the_run(
    tmp_path: Path, server: MlflowServer
) -> None:
    fingerprint = f"unit-{tmp_path.name}"
    source = tmp_path / "host-a" / "checkpoints"
    mirror = CheckpointMirror(server.url, fingerprint)
    for epoch in (1, 2):
        fake_checkpoint(source, fingerprint, epoch)
        mirror.upload(source, epoch)
    run_id = mirror._run_id
    assert run_id is not None
    assert artifact_paths(server, run_id) == ["epoch-2", "latest.json"]
    pointer = MlflowClient(server.url).download_artifacts(run_id, "latest.json", str(tmp_path))
    assert json.loads(Path(pointer).read_text()) == {"epoch": 2, "path": "epoch-2"}

    target = tmp_path / "host-b" / "checkpoints"
    fake_checkpoint(target, fingerprint, 1)  # an older local state is replaced, not merged
    (target / "only-on-host-b.txt").write_text("stale", encoding="utf-8")
    assert CheckpointMirror(server.url, fingerprint).restore(target, local_epoch=1) is True
    restored = sorted(path.relative_to(target).as_posix() for path in target.rglob("*"))
    assert restored == sorted(path.relative_to(source).as_posix() for path in source.rglob("*"))
    assert (target / "epoch-2.npz").read_bytes() == bytes([2]) * 100
    assert [path.name for path in target.parent.iterdir()] == ["checkpoints"]  # no staging left
    assert CheckpointMirror(server.url, fingerprint).restore(target, local_epoch=2) is False

    mirror.finish()
    assert_finished_and_emptied(server, run_id)


@pytest.mark.slow
def test_a_retry_on_another_host_resumes_after_the_mirrored_epoch(
    tmp_path: Path,
    tiny_corpus_dir: Path,
    server: MlflowServer,
    processes: list[subprocess.Popen[str]],
) -> None:
    epochs = 3
    host_a = tiny_train_project(
        tmp_path / "host-a", tiny_corpus_dir, {"epochs": epochs, "patience": epochs}
    )
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    pause = {PAUSE_AT_ENV: EPOCH_MIRRORED, PAUSE_DIR_ENV: str(pause_dir)}
    first = start_training(host_a, {**mirror_env(server), **pause})
    processes.append(first)
    wait_until((pause_dir / f"{EPOCH_MIRRORED}.paused").is_file, first, "epoch 1 was mirrored")
    first.send_signal(signal.SIGKILL)  # the worker host dies
    first.communicate()
    training_run = checkpointed_run_id(host_a)
    (mirror,) = mirror_runs(server, host_a)
    mirror_run = mirror.info.run_id
    assert artifact_paths(server, mirror_run) == ["epoch-1", "latest.json"]

    host_b = tmp_path / "host-b"
    copy_inputs(host_a, host_b)
    second = start_training(host_b, mirror_env(server))
    processes.append(second)
    returncode, output = finish(second)
    assert returncode == 0, output
    assert (
        f"restored the checkpoint of epoch 1 from MLflow run {mirror_run} "
        "(another host's training)" in output
    )
    assert "resumed from the checkpoint of epoch 1; continuing at epoch 2" in output
    assert f"Epoch 2/{epochs}" in output and "Epoch 1/" not in output
    assert history_epochs(host_b) == list(range(1, epochs + 1))
    # one training run across both hosts, with every epoch's metrics
    assert json.loads((host_b / "reports/train/run.json").read_text())["run_id"] == training_run
    assert metric_steps(server.url, training_run, "val_loss") == list(range(1, epochs + 1))
    assert [run.info.run_id for run in mirror_runs(server, host_b)] == [mirror_run]
    assert_finished_and_emptied(server, mirror_run)
    assert sorted(path.name for path in (host_b / "models").iterdir()) == [
        "seq2seq.keras",
        "tokenizer",
    ]


@pytest.mark.slow
def test_with_the_mirror_off_nothing_is_uploaded(
    project_dir: Path,
    tiny_corpus_dir: Path,
    server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In this process, to spare the module a trainer's start-up."""
    from pipeline.config import _load_cached
    from pipeline.train import main

    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("CI", "true")
    tiny_train_project(project_dir, tiny_corpus_dir, {"epochs": 1})
    _load_cached.cache_clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert main([]) == 0
    assert history_epochs(project_dir) == [1]
    assert mirror_runs(server, project_dir) == []
    assert [r for r in caplog.records if r.name == "pipeline.training.checkpoint_mirror"] == []


@pytest.mark.slow
def test_training_finishes_while_the_server_is_down_with_a_warning_per_unmirrored_epoch(
    tmp_path: Path,
    tiny_corpus_dir: Path,
    server: MlflowServer,
    processes: list[subprocess.Popen[str]],
) -> None:
    epochs = 4
    root = tiny_train_project(
        tmp_path / "project", tiny_corpus_dir, {"epochs": epochs, "patience": epochs}
    )
    pause_dir = tmp_path / "pause"
    trainer = start_training(root, {**mirror_env(server), **pause_env(pause_dir)})
    processes.append(trainer)
    try:
        wait_until(lambda: mirrored_epoch(server, root) >= 1, trainer, "epoch 1 was mirrored")
        server.kill()
        down_after = keras_epochs_done(root)
        paused = (pause_dir / f"{EPOCHS_CHECKPOINTED}.paused").is_file
        wait_until(paused, trainer, "every epoch was checkpointed")
    finally:
        server.start()  # back for training's end (MLflow is needed there) and the next tests
    (pause_dir / f"{EPOCHS_CHECKPOINTED}.resume").touch()
    returncode, output = finish(trainer)
    assert returncode == 0, output
    assert 1 <= down_after < epochs
    unmirrored = [int(epoch) for epoch in UNMIRRORED.findall(output)]
    assert len(unmirrored) == len(set(unmirrored)), output  # one warning per failure
    # every epoch that ended while the server was down; maybe the one whose upload it cut
    assert set(range(down_after + 1, epochs + 1)) <= set(unmirrored), output
    assert set(unmirrored) <= set(range(down_after, epochs + 1)), output
    assert history_epochs(root) == list(range(1, epochs + 1))
    (mirror,) = mirror_runs(server, root)
    assert_finished_and_emptied(server, mirror.info.run_id)
