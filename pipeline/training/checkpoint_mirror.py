"""A copy of models/checkpoints/ on the MLflow tracking server, so a retry on another host resumes.

Airflow retries a failed `train` task on whichever Celery worker is free, and workers share no
disk. `MT_CHECKPOINT_MIRROR=mlflow` keeps the checkpoint on the server of `MLFLOW_TRACKING_URI`
too; unset, empty or `off` (the default) this module does nothing and needs no network.

On the server: experiment `mt-train-checkpoints`, one run per checkpoint fingerprint (tag
`mt.checkpoint.fingerprint`), holding `epoch-N/` (the checkpoint after epoch N) and
`latest.json` (`{"epoch": N, "path": "epoch-N"}`). Each epoch: upload `epoch-N/` whole, THEN
point `latest.json` at it, THEN delete older snapshots, so a host killed at any step leaves a
pointer to a complete snapshot. At the start a newer snapshot replaces the local checkpoint,
with its `mlflow_run.json`: metrics go on in the same training run. Once the outputs are
written the snapshots are deleted and the run is FINISHED. See "Checkpoints across hosts" in
docs/training.md; test hook: pause point `train.epoch_mirrored` (`pipeline.pause_points`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.paths import ProjectPaths
from pipeline.pause_points import pause_point
from pipeline.tracking import mlflow_settings, tracking_uri
from pipeline.training.checkpoints import FINGERPRINT_FILE
from pipeline.training.tracking import failure_reason

log = logging.getLogger(__name__)

MIRROR_ENV = "MT_CHECKPOINT_MIRROR"
EXPERIMENT_NAME = "mt-train-checkpoints"
FINGERPRINT_TAG = "mt.checkpoint.fingerprint"
POINTER_FILE = "latest.json"
SNAPSHOT_PREFIX = "epoch-"
EPOCH_MIRRORED = "train.epoch_mirrored"  # pause point, for tests
# MLflow's own defaults retry for minutes (7 retries, exponential backoff); an epoch should not
# wait that long for a copy that the next epoch replaces. For the mirror's calls only (the
# process's environment is left alone), and the environment's own values still win.
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def mirror_uri(paths: ProjectPaths, environ: Mapping[str, str] | None = None) -> str | None:
    """The tracking server to mirror to, or None (off); a bad `MT_CHECKPOINT_MIRROR` raises."""
    environ = os.environ if environ is None else environ
    mode = environ.get(MIRROR_ENV, "").strip().lower()
    if mode in ("", "off"):
        return None
    if mode != "mlflow":
        raise ConfigError(
            f"{MIRROR_ENV}={environ[MIRROR_ENV]!r} is not a checkpoint mirror; set it to "
            "'mlflow' (copy each epoch's checkpoint to the MLflow tracking server) or 'off' "
            "(or leave it unset)"
        )
    uri = tracking_uri(paths)
    if not uri.startswith(("http://", "https://")):
        log.warning(
            "%s=mlflow, but the tracking URI %s is not an MLflow server (http/https): "
            "checkpoints are not mirrored; they stay on this host only",
            MIRROR_ENV,
            uri,
        )
        return None
    return uri


def snapshot_files(directory: Path) -> list[Path]:
    """What a resume needs from `directory`, as paths relative to it.

    Left out: staging files (`.name.tmp`, a writer's file before its rename), `export/` (the
    model on its way out) and Keras' `*.bkp` (the previous epoch, kept against a torn write: a
    snapshot is taken after the write is whole).
    """
    kept = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        transient = relative.parts[0] == "export" or path.suffix == ".bkp"
        if path.is_file() and not transient and not path.name.startswith("."):
            kept.append(relative)
    return kept


class CheckpointMirror:
    """The server's copy of one fingerprint's checkpoints; every method is a no-op when off."""

    def __init__(self, uri: str | None, fingerprint: str) -> None:
        self.uri = uri
        self.fingerprint = fingerprint
        self._run_id: str | None = None
        self._repository_cache: Any = None

    def upload(self, directory: Path, epoch: int) -> None:
        """Snapshot `directory`, checkpointed through `epoch`; a failure only costs a warning."""
        if self.uri is None:
            return
        try:
            with mlflow_settings(RETRY_DEFAULTS):
                repository = self._repository(create=True)
                snapshot = f"{SNAPSHOT_PREFIX}{epoch}"
                for relative in snapshot_files(directory):
                    folder = posixpath.join(snapshot, *relative.parent.parts)
                    repository.log_artifact(str(directory / relative), folder)
                _write_pointer(repository, epoch, snapshot)
                _delete_snapshots(repository, keep=snapshot)
        except Exception as error:  # whatever MLflow or the network raises, training goes on
            log.warning(
                "the checkpoint of epoch %d is not mirrored to MLflow at %s (%s); training goes "
                "on, and a retry on another host would resume from an earlier epoch",
                epoch,
                self.uri,
                failure_reason(error),
            )
            return
        pause_point(EPOCH_MIRRORED)

    def restore(self, directory: Path, local_epoch: int) -> bool:
        """Put the server's latest snapshot in `directory` if it is newer than `local_epoch`.

        False when there is none, or when the restore fails (a warning: training goes on from
        the local checkpoint, or from epoch 1).
        """
        if self.uri is None:
            return False
        try:
            with mlflow_settings(RETRY_DEFAULTS):
                repository = self._repository(create=False)
                pointer = _read_pointer(repository) if repository is not None else None
                if pointer is None or int(pointer["epoch"]) <= local_epoch:
                    return False
                _download_into_place(repository, str(pointer["path"]), directory, self.fingerprint)
        except Exception as error:  # a server that fails us is as good as no copy at all
            log.warning(
                "could not restore the checkpoint from MLflow at %s (%s); training goes on "
                "at epoch %d",
                self.uri,
                failure_reason(error),
                local_epoch + 1,
            )
            return False
        log.info(
            "restored the checkpoint of epoch %d from MLflow run %s (another host's training)",
            int(pointer["epoch"]),
            self._run_id,
        )
        return True

    def finish(self) -> None:
        """Training's outputs are written: delete the snapshots, mark the run FINISHED."""
        if self.uri is None:
            return
        try:
            with mlflow_settings(RETRY_DEFAULTS):
                repository = self._repository(create=False)
                if repository is None:
                    return
                repository.delete_artifacts(POINTER_FILE)  # first: never a pointer to nothing
                _delete_snapshots(repository, keep=None)
                self._client().set_terminated(self._run_id, "FINISHED")
        except Exception as error:  # the outputs are written; only server space is at stake
            log.warning(
                "could not delete the mirrored checkpoints of MLflow run %s at %s (%s); delete "
                "that run of experiment %s by hand",
                self._run_id,
                self.uri,
                failure_reason(error),
                EXPERIMENT_NAME,
            )

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def _repository(self, create: bool) -> Any:
        """The artifact repository of this fingerprint's RUNNING run (created on the first
        upload); None when there is none and `create` is off."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        if self._repository_cache is not None:
            return self._repository_cache
        client = self._client()
        self._run_id = self._run_of(client, create)
        if self._run_id is None:
            return None
        artifact_uri = client.get_run(self._run_id).info.artifact_uri
        self._repository_cache = get_artifact_repository(artifact_uri, tracking_uri=self.uri)
        return self._repository_cache

    def _run_of(self, client: Any, create: bool) -> str | None:
        """This fingerprint's RUNNING run, else a new one when `create`: a FINISHED run is an
        earlier training of the same inputs, whose snapshots are gone."""
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            query = f"tags.`{FINGERPRINT_TAG}` = '{self.fingerprint}'"
            query += " and attributes.status = 'RUNNING'"
            found = client.search_runs([experiment.experiment_id], query, max_results=1)
            if found:
                return str(found[0].info.run_id)
        if not create:
            return None
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT_NAME)
        )
        tags, name = {FINGERPRINT_TAG: self.fingerprint}, f"checkpoints-{self.fingerprint[:12]}"
        return str(client.create_run(experiment_id, tags=tags, run_name=name).info.run_id)


def _write_pointer(repository: Any, epoch: int, snapshot: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        pointer = Path(scratch) / POINTER_FILE
        pointer.write_text(json.dumps({"epoch": epoch, "path": snapshot}), encoding="utf-8")
        repository.log_artifact(str(pointer))


def _read_pointer(repository: Any) -> dict[str, Any] | None:
    if POINTER_FILE not in {item.path for item in repository.list_artifacts()}:
        return None  # the run's first upload never finished
    with tempfile.TemporaryDirectory() as scratch:
        local = repository.download_artifacts(POINTER_FILE, scratch)
        return dict(json.loads(Path(local).read_text(encoding="utf-8")))


def _delete_snapshots(repository: Any, keep: str | None) -> None:
    """Every `epoch-*/` but `keep`: older ones, and any a killed upload left half-made."""
    for item in repository.list_artifacts():
        if item.is_dir and item.path.startswith(SNAPSHOT_PREFIX) and item.path != keep:
            repository.delete_artifacts(item.path)


def _download_into_place(
    repository: Any, snapshot: str, directory: Path, fingerprint: str
) -> None:
    """Download beside `directory`, check it, then swap it in: a failure leaves no half of it.

    The staging folder has a fixed name, so a restore killed midway is cleared by the next.
    """
    staging = directory.with_name(f".{directory.name}-restore")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        downloaded = Path(repository.download_artifacts(snapshot, str(staging)))
        found = (downloaded / FINGERPRINT_FILE).read_text(encoding="utf-8")
        if found != fingerprint:
            raise ValueError(f"snapshot {snapshot} belongs to fingerprint {found[:12]}…")
        replaced = staging / "replaced"
        if directory.exists():
            os.replace(directory, replaced)
        try:
            os.replace(downloaded, directory)
        except OSError:
            if replaced.exists():
                os.replace(replaced, directory)  # the local checkpoint stays as it was
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
