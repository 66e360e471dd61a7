"""Where MLflow runs and models go: `MLFLOW_TRACKING_URI`, else a SQLite store in the project.

The default needs no server: `mlruns.db` for runs and the registry, `mlartifacts/` for files.
Point `MLFLOW_TRACKING_URI` at an MLflow server (PostgreSQL-backed in production) and nothing
else changes. A server run with `--app-name basic-auth` wants a login: MLflow's client sends
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` with every request, and
`access_refusal` turns its 401/403 answers into one line that says who was refused and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pipeline.paths import ProjectPaths, project_paths

EXPERIMENT_NAME = "translation"
# A sweep point is a `dvc exp run`: DVC names the experiment in DVC_EXP_NAME (any `dvc exp run`
# does), and the sweep (pipeline/sweep) names its MLflow parent run in MT_SWEEP_PARENT_RUN_ID.
DVC_EXP_NAME_ENV = "DVC_EXP_NAME"
SWEEP_PARENT_ENV = "MT_SWEEP_PARENT_RUN_ID"
DVC_EXP_NAME_TAG = "mt.dvc_exp_name"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow nests a run under the run this tag names
WHO_MAY_PROMOTE = "'Who may promote' in docs/registry.md"
# MLflow's client puts a refused request's body into its message: "... Response body: 'text'".
RESPONSE_BODY = re.compile(r"Response body: '([^']*)'")


def tracking_uri(paths: ProjectPaths | None = None) -> str:
    """The tracking URI in force: the env var, else the project's SQLite file."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return f"sqlite:///{(paths or project_paths()).mlruns_db}"


def experiment_run_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Tags that tie a training run to the DVC experiment, and the sweep, it runs in."""
    tags = {}
    if environ.get(DVC_EXP_NAME_ENV):
        tags[DVC_EXP_NAME_TAG] = environ[DVC_EXP_NAME_ENV]
    if environ.get(SWEEP_PARENT_ENV):
        tags[PARENT_RUN_TAG] = environ[SWEEP_PARENT_ENV]
    return tags


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


def access_refusal(uri: str, doing: str, error_code: str | None, message: str) -> str | None:
    """One line for a server that refused the caller (HTTP 401 or 403), else None.

    `error_code` and `message` are an MlflowException's; the user is the one MLflow's client
    sent (the standard `MLFLOW_TRACKING_USERNAME`; none means an anonymous request).
    """
    from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME

    user = MLFLOW_TRACKING_USERNAME.get()
    if error_code == "PERMISSION_DENIED":
        found = RESPONSE_BODY.search(message)
        said = f": {found.group(1)[:120]!r}" if found else ""
        return (
            f"the tracking server {uri} refused user {user!r} (HTTP 403 PERMISSION_DENIED{said}) "
            f"while {doing}; fix: run it as an account that holds this right, or have an MLflow "
            f"admin grant it (`mt mlflow-users`; see {WHO_MAY_PROMOTE})"
        )
    if error_code != "UNAUTHENTICATED":
        return None
    if not user:
        return (
            f"the tracking server {uri} wants a login (HTTP 401 UNAUTHENTICATED) while {doing}; "
            "fix: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on it"
        )
    return (
        f"the tracking server {uri} rejected the login of user {user!r} (HTTP 401 "
        f"UNAUTHENTICATED: wrong password, or no such user) while {doing}; fix: set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server"
    )
