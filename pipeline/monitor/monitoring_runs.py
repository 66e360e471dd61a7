"""One MLflow run in the experiment `monitoring` per monitoring event (a drift check, a watch).

The tracking store is the project's (pipeline/tracking.py: `MLFLOW_TRACKING_URI`, else the
SQLite file in the project). Runs are written through an `MlflowClient`, not the fluent API, so
a monitoring run never becomes or ends the caller's active run. A store that cannot be reached
or refuses the write becomes one PipelineError line naming the store.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.paths import ProjectPaths
from pipeline.tracking import local_artifacts_dir, tracking_uri

MONITORING_EXPERIMENT = "monitoring"
# Tag every monitoring run carries: which kind of check wrote it (drift, watch).
KIND_TAG = "monitor.kind"


def monitoring_client(paths: ProjectPaths) -> tuple[Any, str]:
    """(MlflowClient on the project's store, the id of the `monitoring` experiment)."""
    from mlflow import MlflowClient

    uri = tracking_uri(paths)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    if experiment is not None:
        return client, str(experiment.experiment_id)
    # With the local default the artifacts belong in the project, as in pipeline/tracking.py.
    location = local_artifacts_dir(uri, paths).as_uri() if uri.startswith("sqlite:") else None
    return client, str(client.create_experiment(MONITORING_EXPERIMENT, location))


def log_monitoring_run(
    paths: ProjectPaths,
    kind: str,
    run_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, Path] | None = None,
) -> str:
    """Log one finished run in `monitoring`; returns its run id.

    `artifacts` maps an artifact folder to a local file or directory to upload there.
    """
    from mlflow.exceptions import MlflowException

    try:
        return _log_run(paths, kind, run_name, metrics, tags or {}, params or {}, artifacts or {})
    except MlflowException as error:
        raise PipelineError(
            f"MLflow at {tracking_uri(paths)}: could not log the {kind} run {run_name!r} in "
            f"experiment `{MONITORING_EXPERIMENT}`: {error.message.splitlines()[0]}"
        ) from None


def _log_run(
    paths: ProjectPaths,
    kind: str,
    run_name: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: Mapping[str, Any],
    artifacts: Mapping[str, Path],
) -> str:
    client, experiment_id = monitoring_client(paths)
    run = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: kind, **tags})
    run_id = str(run.info.run_id)
    try:
        _fill_run(client, run_id, metrics, params, artifacts)
    except BaseException:
        client.set_terminated(run_id, "FAILED")  # not left RUNNING in the UI
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _fill_run(
    client: Any,
    run_id: str,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    artifacts: Mapping[str, Path],
) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
    )
    for folder, local in artifacts.items():
        if local.is_dir():
            client.log_artifacts(run_id, str(local), folder)
        else:
            client.log_artifact(run_id, str(local), folder)
