"""Where MLflow runs and models go: `MLFLOW_TRACKING_URI`, else a SQLite store in the project.

The default needs no server: `mlruns.db` for runs and the registry, `mlartifacts/` for files.
Point `MLFLOW_TRACKING_URI` at an MLflow server (PostgreSQL-backed in production) and nothing
else changes.
"""

from __future__ import annotations

import os

from pipeline.paths import ProjectPaths, project_paths

EXPERIMENT_NAME = "translation"


def tracking_uri(paths: ProjectPaths | None = None) -> str:
    """The tracking URI in force: the env var, else the project's SQLite file."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return f"sqlite:///{(paths or project_paths()).mlruns_db}"


def configure_mlflow(paths: ProjectPaths | None = None) -> str:
    """Point MLflow at our store and experiment; returns the experiment id.

    With the local default the experiment's artifacts go to `mlartifacts/` in the project,
    not to `./mlruns` under whatever directory the process happens to run in.
    """
    import mlflow

    paths = paths or project_paths()
    uri = tracking_uri(paths)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return str(experiment.experiment_id)
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = paths.mlartifacts_dir.as_uri()
    experiment_id = mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)
