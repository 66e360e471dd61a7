"""Where MLflow runs and models go: `MLFLOW_TRACKING_URI`, else a SQLite store in the project.

The default needs no server: `mlruns.db` for runs and the registry, `mlartifacts/` for files.
Point `MLFLOW_TRACKING_URI` at an MLflow server (PostgreSQL-backed in production) and nothing
else changes. A server run with `--app-name basic-auth` wants a login: MLflow's client sends
`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` with every request, and
`access_refusal` turns its 401/403 answers into one line that says who was refused and the fix.

Nothing here changes MLflow's process-wide state for good: every call names its store (an
`MlflowClient` of `store_client`, `load_pyfunc`, `model_metadata`). Two things MLflow reads
only from process-wide state are set for the length of a block and put back after it:
`fluent_store` (the URIs of `mlflow.start_run`, `mlflow.log_*`, `mlflow.pyfunc.log_model`) and
`mlflow_settings` (the HTTP retry settings, which MLflow reads from the environment at each
request and takes from no client or call).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.file_lock import exclusive_flock
from pipeline.paths import ProjectPaths, project_paths

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel

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
# mlflow.set_tracking_uri / set_registry_uri also write these, for child processes to inherit.
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# Database stores probed before MLflow opens them (both drivers take a connect_timeout).
PROBED_DATABASES = ("postgresql", "mysql")
DATABASE_CONNECT_TIMEOUT_S = 10

# Held while a block has MLflow's process-wide state changed (fluent_store, mlflow_settings):
# two blocks never interleave their changes and restores. Re-entrant: blocks nest.
_PROCESS_WIDE = threading.RLock()
# The variables that enclosing mlflow_settings blocks set, and their values.
_SCOPED_SETTINGS: dict[str, str] = {}


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


def store_client(uri: str) -> MlflowClient:
    """A client of the store at `uri`, for its runs and its registry alike."""
    from mlflow import MlflowClient

    if uri.split(":", 1)[0].split("+", 1)[0] in PROBED_DATABASES:
        check_database_answers(uri)
    lock_file = sqlite_first_use_lock_file(uri)
    if lock_file is None:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    with exclusive_flock(lock_file):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # a new store's tables are made here
    return client


def sqlite_first_use_lock_file(uri: str) -> Path | None:
    """For a SQLite store, the lock under which one process at a time may make its tables.

    MLflow makes a SQLite store's tables on first use by running its schema migrations. Two
    processes doing that at once (two DAG runs whose `train` starts together on a project's
    first runs) both migrate, and the store is broken for good: `table _alembic_tmp_metrics
    already exists`, or alembic's "expected to match one row". So `store_client` makes them
    under a flock of this file, beside the store's artifacts (git-ignored with them); later
    clients find the tables made and hold the lock for one query.
    """
    database = uri.removeprefix("sqlite:///")
    if database == uri or database.startswith(":memory:"):
        return None
    return local_artifacts_dir(uri) / f".{Path(database).name}.lock"


def check_database_answers(uri: str) -> None:
    """One connection to a database store, with a timeout, before MLflow builds its store.

    MLflow's SQL store tries a database that does not answer ten times over ~100 s and then
    raises SQLAlchemy's error, which no caller expects; this is an MlflowException at once,
    which every caller turns into one line naming the store.
    """
    import sqlalchemy
    from mlflow.exceptions import MlflowException
    from sqlalchemy.pool import NullPool

    connect_args = {"connect_timeout": DATABASE_CONNECT_TIMEOUT_S}
    engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise MlflowException(f"its database does not answer: {redacted(reason, uri)}") from None
    finally:
        engine.dispose()


def local_artifacts_dir(uri: str, paths: ProjectPaths | None = None) -> Path:
    """Where a SQLite store's artifacts go: `mlartifacts/` beside its database file, so a run
    that works in a workspace (pipeline/workspaces.py) logs into the project's store and its
    artifacts, never into a folder that goes with the workspace."""
    database = uri.removeprefix("sqlite:///")
    if database and database != uri and not database.startswith(":memory:"):
        return Path(database).resolve().parent / (paths or project_paths()).mlartifacts_dir.name
    return (paths or project_paths()).mlartifacts_dir


def ensure_experiment(client: MlflowClient, paths: ProjectPaths | None = None) -> str:
    """The id of our experiment in `client`'s store, which is created on first use.

    With the local default the experiment's artifacts go to `mlartifacts/` in the project,
    not to `./mlruns` under whatever directory the process happens to run in.
    """
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return str(experiment.experiment_id)
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:"):
        artifact_location = local_artifacts_dir(client.tracking_uri, paths).as_uri()
    return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location))


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """MLflow's fluent API (`mlflow.start_run`, `mlflow.log_*`, `mlflow.pyfunc.log_model`)
    pointed at `uri` inside the block; the URIs, and the environment variables MLflow writes
    with them, are as they were after it.

    Only for what takes no URI from its caller: `mlflow.pyfunc.log_model`, and MLflow's SQL
    registry store creating a version (store.Registry.create_version). MLflow keeps these URIs
    in module globals, so other threads' fluent calls see `uri` during the block too.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    with _PROCESS_WIDE:
        # The globals themselves: mlflow.get_tracking_uri() would give the resolved default.
        saved_uris = (tracking_state._tracking_uri, registry_state._registry_uri)
        saved_environ = {name: os.environ.get(name) for name in URI_VARIABLES}
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            # None is "not set" (MLflow's own _use_tracking_uri passes it back the same way).
            mlflow.set_tracking_uri(saved_uris[0])  # type: ignore[arg-type]
            mlflow.set_registry_uri(saved_uris[1])  # type: ignore[arg-type]
            _restore_environ(saved_environ)


@contextlib.contextmanager
def mlflow_settings(defaults: Mapping[str, str]) -> Iterator[None]:
    """MLflow's environment settings `defaults` (e.g. MLFLOW_HTTP_REQUEST_MAX_RETRIES) for the
    MLflow calls inside the block; the environment is as it was after it.

    MLflow reads its HTTP retry settings from the environment at each request
    (mlflow.utils.rest_utils.http_request) and takes them from no client or call, so this is
    the narrowest scope there is. A value the user set in the environment wins; one an
    enclosing block set does not. os.environ is the process's: another thread's MLflow request
    during the block sees these values too, and a child process started in it inherits them.
    """
    with _PROCESS_WIDE:
        enclosing = dict(_SCOPED_SETTINGS)
        saved = {name: os.environ.get(name) for name in defaults}
        for name, value in defaults.items():
            if name in enclosing or name not in os.environ:
                os.environ[name] = value
                _SCOPED_SETTINGS[name] = value
        try:
            yield
        finally:
            _restore_environ(saved)
            _SCOPED_SETTINGS.clear()
            _SCOPED_SETTINGS.update(enclosing)


def _restore_environ(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def artifact_location(client: MlflowClient, uri: str) -> str:
    """`uri` with a `models:/` prefix (name/version, name@alias, logged model id) replaced by
    where that model's files are, looked up through `client`'s registry: MLflow's own lookup
    asks the process-wide registry URI. Any other URI is returned as it is."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version
    from mlflow.utils.uri import append_to_uri_path

    if not ModelsArtifactRepository.is_models_uri(uri):
        return uri
    model, inside = ModelsArtifactRepository.split_models_uri(uri)
    found = get_model_name_and_version(client, model)
    if len(found) == 1:
        root = client.get_logged_model(found[0]).artifact_location
    else:
        root = client.get_model_version_download_uri(*found)
    return artifact_location(client, append_to_uri_path(root, inside) if inside else root)


def download_model_files(store_uri: str, uri: str, destination: str | None = None) -> str:
    """The local path of the model files (or one file) at `uri`, a `models:/`, `runs:/` or
    artifact URI of the store at `store_uri`, or a local path."""
    import mlflow

    return mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_location(store_client(store_uri), uri),
        dst_path=destination,
        tracking_uri=store_uri,
        registry_uri=store_uri,
    )


def model_metadata(store_uri: str, uri: str) -> Model:
    """The MLmodel of the model at `uri` (signature, flavors), read without loading it."""
    from mlflow.models import Model
    from mlflow.utils.uri import append_to_uri_path

    return Model.load(download_model_files(store_uri, append_to_uri_path(uri, "MLmodel")))


def load_pyfunc(store_uri: str, uri: str) -> PyFuncModel:
    """The pyfunc at `uri` as `mlflow.pyfunc.load_model(uri)` loads it, from the store at
    `store_uri`."""
    import mlflow

    return mlflow.pyfunc.load_model(download_model_files(store_uri, uri))


def redact(uri: str) -> str:
    """`uri` with the password of its user part shown as `***`: messages name the store they
    failed against, and they reach task logs and alert mails."""
    password = _password(uri)
    return uri.replace(f":{password}@", ":***@", 1) if password else uri


def redacted(text: str, uri: str) -> str:
    """`text` (an error another library wrote) with `uri`'s password replaced wherever it is."""
    password = _password(uri)
    return text.replace(password, "***") if password else text


def _password(uri: str) -> str | None:
    try:
        return urllib.parse.urlsplit(uri).password
    except ValueError:  # not a URL at all: nothing to hide in it
        return None


def access_refusal(uri: str, doing: str, error_code: str | None, message: str) -> str | None:
    """One line for a server that refused the caller (HTTP 401 or 403), else None.

    `error_code` and `message` are an MlflowException's; the user is the one MLflow's client
    sent (the standard `MLFLOW_TRACKING_USERNAME`; none means an anonymous request).
    """
    from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME

    message, uri = redacted(message, uri), redact(uri)

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
