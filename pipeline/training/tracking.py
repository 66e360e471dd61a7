"""The MLflow run of a training job, with per-epoch metrics that survive an MLflow outage.

The run is opened when the stage starts (an interrupted job's run is continued), which needs
MLflow. Inside a `dvc exp run` it is named and tagged after the DVC experiment, and inside a
sweep it is a child of the sweep's run (`pipeline.tracking.experiment_run_tags`). From then on
an outage costs no training: each checkpointed epoch's metrics join a queue that a background
thread sends. What cannot be sent stays queued, in order, and goes with the next attempt: the
next epoch, every `RETRY_INTERVAL_S`, or the end of training. The start of an outage is logged
once, as a warning, and its end once, as info. Each epoch's metrics carry the
time the epoch ended, so metrics sent twice (a lost reply, a rerun) are stored once.

At the end the stage needs MLflow again (the rest of the queue, the summary, the model): if it
is still unreachable the stage fails with `MlflowUnavailable` and keeps its checkpoints, and a
rerun finishes without training (see `pipeline.training.checkpoints`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.paths import ProjectPaths
from pipeline.tracking import (
    DVC_EXP_NAME_TAG,
    ensure_experiment,
    experiment_run_tags,
    redact,
    redacted,
    store_client,
    tracking_uri,
)
from pipeline.training.checkpoints import JournalEntry

log = logging.getLogger(__name__)

RETRY_INTERVAL_S = 30.0
# The splits logged as the run's datasets, with their MLflow input context.
SPLIT_CONTEXTS = {"train": "training", "val": "validation"}
# MLflow stores a dataset digest in 36 characters (mlflow.utils.validation).
MAX_DIGEST_CHARS = 36


class MlflowUnavailable(PipelineError):
    """MLflow could not be reached (or refused a write) at a point the stage cannot go on."""


def failure_reason(error: BaseException) -> str:
    """The root cause of an MLflow or HTTP error on one short line ("[Errno 111] Connection
    refused"): MLflow's own message repeats the URL and the whole chain of wrappers."""
    root = error
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    text = " ".join(str(root).split()) or type(root).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def mlflow_needed(uri: str, doing: str, advice: str) -> Iterator[None]:
    """Turn an MLflow failure inside the block into one `MlflowUnavailable` line."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        reason = redacted(failure_reason(error), uri)
        raise MlflowUnavailable(
            f"MLflow at {redact(uri)} failed while {doing} ({reason}); {advice}"
        ) from error


@dataclass(frozen=True)
class TrainingRun:
    client: Any  # mlflow.MlflowClient, imported lazily
    run_id: str
    experiment_id: str
    uri: str


def open_training_run(paths: ProjectPaths, run_file: Path) -> tuple[TrainingRun, int]:
    """Continue the interrupted job's run named in `run_file`, else start a run.

    Returns the run and how many epochs' metrics it already holds.
    """
    from mlflow.tracking.context.registry import resolve_tags

    uri = tracking_uri(paths)
    advice = "start it (or fix MLFLOW_TRACKING_URI) and rerun `mt train`"
    with mlflow_needed(uri, "opening the training run", advice):
        client = store_client(uri)
        experiment_id = ensure_experiment(client, paths)
        previous = _read_json(run_file)
        run_id, logged = previous.get("run_id"), int(previous.get("logged_epochs", 0))
        if run_id and _run_is_active(client, run_id):
            client.update_run(run_id, status="RUNNING")
            log.info("continuing MLflow run %s of the interrupted job", run_id)
        else:
            # In a sweep: a child of the sweep's run, named after its DVC experiment.
            tags = {**resolve_tags(), **experiment_run_tags()}
            run_name = tags.get(DVC_EXP_NAME_TAG, "train")
            run = client.create_run(experiment_id, tags=tags, run_name=run_name)
            run_id, logged = run.info.run_id, 0
    atomic_write_json(run_file, {"run_id": run_id, "logged_epochs": logged})
    return TrainingRun(client, run_id, experiment_id, uri), logged


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}


def _run_is_active(client: Any, run_id: str) -> bool:
    """False when the run is gone or deleted (a new one is started); other errors propagate."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        run = None
    if run is None or run.info.lifecycle_stage != "active":
        log.warning("MLflow run %s of the interrupted job is gone; starting a new run", run_id)
        return False
    return True


def log_run_context(run: TrainingRun, params: dict[str, Any], tags: dict[str, str]) -> None:
    """Params and tags of the run; a continued run keeps the params it already has.

    MLflow refuses to change a param. Training's own params cannot differ on a continued run
    (the checkpoint fingerprint covers them), but another stage's section of params.yaml may
    have been edited since: the run keeps the values it started with, and the log says which.
    """
    from mlflow.entities import Param, RunTag

    with mlflow_needed(run.uri, "logging the run's params", "rerun `mt train` once it is back"):
        logged = run.client.get_run(run.run_id).data.params
        changed = sorted(
            key for key, value in params.items() if logged.get(key, str(value)) != str(value)
        )
        if changed:
            log.info("MLflow run %s keeps the values it started with for %s", run.run_id, changed)
        run.client.log_batch(
            run.run_id,
            params=[Param(key, str(value)) for key, value in params.items() if key not in logged],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )


def log_split_datasets(run: TrainingRun, paths: ProjectPaths, hashes: Mapping[str, str]) -> None:
    """The train and val token files as the run's datasets (contexts `training` and
    `validation`), so its page shows what the model learned from and was validated on.

    Each is a MetaDataset: the file's path under the project and its sha256 (from `hashes`, as
    the run's `sha256.<file>` tags; cut to MLflow's 36-character digest) with no rows loaded.
    A continued run logs the same datasets again, which MLflow stores once.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for split, context in SPLIT_CONTEXTS.items():
        location = str((paths.tokens_dir / f"{split}.npz").relative_to(paths.root))
        dataset = _file_dataset(split, location, hashes[location][:MAX_DIGEST_CHARS])
        # The entity as MLflow's own flavours build it for MlflowClient.log_inputs.
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags))
    with mlflow_needed(run.uri, "logging the run's datasets", "rerun `mt train` once it is back"):
        _log_inputs_beside_others(run, inputs)


# MLflow's SQL store creates a dataset when no row of its (experiment, name, digest) exists, in
# two steps: two runs logging the same split at once (sweep points, `--jobs 2`) can both find
# none, and the second insert fails on the key (seen in CI on PostgreSQL). The row exists then,
# and logging again only links it to the run.
DATASET_LOG_ATTEMPTS = 4


def _log_inputs_beside_others(run: TrainingRun, inputs: list[Any]) -> None:
    from mlflow.exceptions import MlflowException

    for attempt in range(1, DATASET_LOG_ATTEMPTS + 1):
        try:
            run.client.log_inputs(run.run_id, datasets=inputs)
            return
        except MlflowException as error:
            if attempt == DATASET_LOG_ATTEMPTS or not created_by_another_run(str(error)):
                raise
            log.info("dataset created by another run meanwhile; logging it again")
            time.sleep(0.2 * attempt)


def created_by_another_run(message: str) -> bool:
    """Whether a failed log_inputs lost the race to create a dataset row (PostgreSQL, SQLite)."""
    postgres = "duplicate key" in message and "dataset_pk" in message
    sqlite = "UNIQUE constraint failed: datasets." in message
    return postgres or sqlite


def _file_dataset(name: str, location: str, digest: str) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # A plain path matches both local-file dataset sources MLflow registers ("" and
        # "file" schemes, the same class); it warns and takes the first, which is right.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        source = resolve_dataset_source(location)
    # `profile` is abstract in name only (mlflow's Dataset is no ABC); MetaDataset has none.
    return MetaDataset(source, name=name, digest=digest)  # type: ignore[abstract]


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_units": 32}} -> {"model.hidden_units": 32}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def epoch_metrics(entry: JournalEntry) -> list[Any]:
    """An epoch's row as MLflow metrics at step = epoch, stamped with the epoch's end."""
    from mlflow.entities import Metric

    return [
        Metric(key, float(value), entry.ended_at_ms, entry.epoch)
        for key, value in entry.row.items()
        if key != "epoch"
    ]


class EpochMetricsLogger:
    """Sends each epoch's metrics from a background thread; keeps them while MLflow is down.

    `submit` never blocks on MLflow and never raises. `close` waits for a last attempt and
    raises `MlflowUnavailable` if epochs are still unsent; `stop` waits without raising.
    `run_file` records how many epochs the run holds, so a rerun sends only the rest.
    """

    def __init__(
        self,
        run: TrainingRun,
        run_file: Path,
        logged_epochs: int,
        retry_interval_s: float = RETRY_INTERVAL_S,
    ) -> None:
        self._run = run
        self._run_file = run_file
        self._logged_epochs = logged_epochs
        self._retry_interval_s = retry_interval_s
        self._pending: list[JournalEntry] = []
        self._wake = threading.Condition()
        self._new_entries = False
        self._closing = False
        self._outage: str | None = None  # why the last attempt failed, while it keeps failing
        self._thread = threading.Thread(target=self._send_loop, name="mlflow-epochs", daemon=True)
        self._thread.start()

    def submit(self, entry: JournalEntry) -> None:
        with self._wake:
            if entry.epoch <= self._logged_epochs:  # a continued run already has it
                return
            self._pending.append(entry)
            self._new_entries = True
            self._wake.notify()

    def close(self) -> None:
        """Send what is left; `MlflowUnavailable` (checkpoints kept) if MLflow is still down."""
        self.stop()
        if self._pending:
            first, last = self._pending[0].epoch, self._pending[-1].epoch
            raise MlflowUnavailable(
                f"MLflow at {self._run.uri} is unreachable ({self._outage}): the metrics of "
                f"epochs {first}-{last} are not logged; the checkpoints in "
                f"{self._run_file.parent} are kept, so once MLflow is back `mt train` "
                "finishes without training again"
            )

    def stop(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _send_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._new_entries or self._closing, timeout=self._retry_interval_s
                )
                self._new_entries = False
                closing, batch = self._closing, list(self._pending)
            if batch:
                self._send(batch)
            if closing:
                return

    def _send(self, batch: list[JournalEntry]) -> None:
        try:
            metrics = [metric for entry in batch for metric in epoch_metrics(entry)]
            self._run.client.log_batch(self._run.run_id, metrics=metrics)
        except Exception as error:  # whatever MLflow raises, training must not stop for it
            self._note_outage(error, batch[0].epoch)
            return
        with self._wake:
            del self._pending[: len(batch)]
            self._logged_epochs = batch[-1].epoch
        self._record_progress()
        if self._outage is not None:
            log.info(
                "MLflow at %s is reachable again; logged the metrics of epochs %d-%d",
                self._run.uri,
                batch[0].epoch,
                batch[-1].epoch,
            )
            self._outage = None

    def _note_outage(self, error: Exception, first_epoch: int) -> None:
        if self._outage is None:
            log.warning(
                "MLflow at %s is unreachable (%s); training goes on, and the metrics of epoch "
                "%d onwards are kept and logged once it is back",
                self._run.uri,
                failure_reason(error),
                first_epoch,
            )
        self._outage = failure_reason(error)

    def _record_progress(self) -> None:
        try:
            atomic_write_json(
                self._run_file, {"run_id": self._run.run_id, "logged_epochs": self._logged_epochs}
            )
        except OSError as error:
            # Only costs a re-send after a crash, and re-sent metrics are stored once.
            log.debug("could not record MLflow progress in %s: %s", self._run_file, error)


def log_final(
    run: TrainingRun, summary: dict[str, float], timestamp_ms: int, model_file: Path, history: str
) -> None:
    """best_* metrics, the model and history.csv as artifacts."""
    from mlflow.entities import Metric

    advice = "the checkpoints are kept: rerun `mt train` once it is back"
    with mlflow_needed(run.uri, "uploading the model and summary", advice):
        metrics = [Metric(f"best_{key}", value, timestamp_ms, 0) for key, value in summary.items()]
        run.client.log_batch(run.run_id, metrics=metrics)
        run.client.log_artifact(run.run_id, str(model_file), artifact_path="model")
        run.client.log_text(run.run_id, history, "reports/history.csv")


def end_run(run: TrainingRun) -> None:
    advice = "the outputs are written; rerun `mt train` to mark the run FINISHED"
    with mlflow_needed(run.uri, "ending the run", advice):
        run.client.set_terminated(run.run_id, "FINISHED")


def mark_failed(run: TrainingRun) -> None:
    """Best effort, while the stage is failing for another reason; a rerun reopens the run."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        run.client.set_terminated(run.run_id, "FAILED")
    except (MlflowException, requests.RequestException) as error:
        log.debug("could not mark MLflow run %s FAILED: %s", run.run_id, failure_reason(error))
