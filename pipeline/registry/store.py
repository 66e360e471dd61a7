"""The MLflow calls of the registry, each turned into a RegistryError that names the store.

Every move of `@champion` is recorded as one run in the "registry-audit" experiment (who, from,
to, why, when). The run is opened (an intent) before the alias moves and finished after, so a
process killed in between leaves a RUNNING run. The next command that moves or replays the
champion settles it against the alias first (`settle_unfinished_moves`): FINISHED when
`@champion` points where that move was going, FAILED when it does not. The trail and the
alias then agree again, whichever side of the move the process died on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import requests
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.paths import ProjectPaths
from pipeline.pause_points import pause_point
from pipeline.registry.errors import RegistryError
from pipeline.tracking import configure_mlflow, tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_EXPERIMENT = "registry-audit"

# Bounded retries against an HTTP tracking server (MLflow's defaults wait minutes); the
# environment still wins, so an operator can widen them.
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@contextlib.contextmanager
def tracking_call(uri: str, step: str) -> Iterator[None]:
    """Turn MLflow and network failures of `step` into a RegistryError naming the store."""
    try:
        yield
    except RegistryError:
        raise
    except (MlflowException, requests.exceptions.RequestException, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        raise RegistryError(
            f"{step} failed against the tracking store {uri}: {message.splitlines()[0][:500]} "
            "(fix: check that the MLflow server is up, and its database: HTTP 500s come from a "
            "database it cannot reach, and that MLFLOW_TRACKING_URI is right, then re-run: "
            "the rerun picks up where this one stopped)"
        ) from None


def current_actor(command: str) -> str:
    """Who is acting: the Airflow task when run by Airflow, else user@host and the command."""
    run_id = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if run_id:
        dag = os.environ.get("AIRFLOW_CTX_DAG_ID", "?")
        task = os.environ.get("AIRFLOW_CTX_TASK_ID", "?")
        return f"airflow {dag}/{run_id}/{task} via {command}"
    return f"{getpass.getuser()}@{socket.gethostname()} via {command}"


@dataclass(frozen=True)
class ChampionMove:
    """One recorded move of `@champion`; `status` FINISHED means the alias did move."""

    action: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    when: str
    status: str
    run_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Registry:
    """One registered model in one tracking store."""

    client: MlflowClient
    uri: str
    name: str
    paths: ProjectPaths

    @classmethod
    def connect(cls, paths: ProjectPaths, name: str) -> Registry:
        """Configure MLflow and check the store answers before anything is written."""
        for key, value in RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if os.environ.get("CI", "").lower() == "true":
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri = tracking_uri(paths)
        with tracking_call(uri, "connecting"):
            configure_mlflow(paths)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)
        return cls(client, uri, name, paths)

    def ensure_model(self) -> None:
        with tracking_call(self.uri, f"creating registered model {self.name!r}"):
            if not self.client.search_registered_models(filter_string=f"name = '{self.name}'"):
                self.client.create_registered_model(
                    self.name, description="Multi30k LSTM translator; see docs/registry.md"
                )

    def version(self, version: str) -> ModelVersion:
        with tracking_call(self.uri, f"reading {self.name} version {version}"):
            return self.client.get_model_version(self.name, str(version))

    def alias_version(self, alias: str) -> ModelVersion | None:
        """The version `alias` points at, or None when the alias is unset."""
        with tracking_call(self.uri, f"reading alias @{alias}"):
            try:
                return self.client.get_model_version_by_alias(self.name, alias)
            except MlflowException as error:
                if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    return None
                raise

    def version_tagged(self, key: str, value: str) -> ModelVersion | None:
        """The newest version whose tag `key` is `value` (with its aliases), or None."""
        with tracking_call(self.uri, f"looking up the version with {key}={value[:12]}"):
            found = self.client.search_model_versions(
                f"name = '{self.name}' AND tags.`{key}` = '{value}'"
            )
            if not found:
                return None
            newest = max(found, key=lambda v: int(v.version))
            return self.client.get_model_version(self.name, newest.version)

    def versions(self) -> list[ModelVersion]:
        """Every version, newest first, each with its aliases."""
        with tracking_call(self.uri, f"listing versions of {self.name}"):
            found = self.client.search_model_versions(f"name = '{self.name}'")
            full = [self.client.get_model_version(self.name, v.version) for v in found]
        return sorted(full, key=lambda v: int(v.version), reverse=True)

    def create_version(
        self, model_uri: str, run_id: str, model_id: str | None, tags: dict[str, str]
    ) -> ModelVersion:
        """One call: the version exists with all its tags, or not at all."""
        with tracking_call(self.uri, f"creating a version of {self.name}"):
            return self.client.create_model_version(
                self.name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
            )

    def set_alias(self, alias: str, version: str) -> None:
        with tracking_call(self.uri, f"pointing @{alias} at version {version}"):
            self.client.set_registered_model_alias(self.name, alias, str(version))

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        with tracking_call(self.uri, f"tagging version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)

    def download_model_file(self, version: str, relative: str, destination: Path) -> Path:
        """One file from a version's logged model directory, e.g. "MLmodel"."""
        with tracking_call(self.uri, f"downloading {relative} of version {version}"):
            root = self.client.get_model_version_download_uri(self.name, str(version))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{root.rstrip('/')}/{relative}",
                dst_path=str(destination),
                tracking_uri=self.uri,
            )
        return Path(local)

    def pyfunc_artifact_text(self, version: str, artifact: str, file_name: str) -> str:
        """A text file inside one of a version's pyfunc artifacts (a logged directory)."""
        with tempfile.TemporaryDirectory() as scratch:
            mlmodel = self.download_model_file(version, "MLmodel", Path(scratch))
            flavor = yaml.safe_load(mlmodel.read_text("utf-8"))["flavors"]["python_function"]
            entry = (flavor.get("artifacts") or {}).get(artifact)
            if entry is None:
                raise RegistryError(
                    f"{self.name} version {version} has no pyfunc artifact {artifact!r}"
                )
            relative = f"{entry['path']}/{file_name}"
            return self.download_model_file(version, relative, Path(scratch)).read_text("utf-8")

    # --- the audit trail of @champion ---------------------------------------------------

    def _audit_experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(AUDIT_EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.uri.startswith("sqlite:"):
            location = (self.paths.mlartifacts_dir / AUDIT_EXPERIMENT).as_uri()
        return str(self.client.create_experiment(AUDIT_EXPERIMENT, artifact_location=location))

    def move_champion(self, to_version: str, action: str, actor: str, reason: str) -> ChampionMove:
        """Point @champion at `to_version`, recorded before and confirmed after the move."""
        to_version = str(to_version)
        self.settle_unfinished_moves(actor)
        with tracking_call(self.uri, f"moving @{CHAMPION} to version {to_version}"):
            self.client.get_model_version(self.name, to_version)
            current = self.alias_version(CHAMPION)
            from_version = None if current is None else str(current.version)
            run = self.client.create_run(
                self._audit_experiment_id(),
                run_name=f"{self.name} {action}: v{from_version} -> v{to_version}",
                tags={
                    "mt.model_name": self.name,
                    "mt.action": action,
                    "mt.from_version": from_version or "none",
                    "mt.to_version": to_version,
                    "mt.actor": actor,
                    "mt.reason": reason or "(none given)",
                },
            )
            pause_point("registry.champion_move_recorded")
            self.client.set_registered_model_alias(self.name, CHAMPION, to_version)
            pause_point("registry.champion_alias_moved")
            self.client.set_terminated(run.info.run_id, "FINISHED")
        log.info(
            "@%s of %s: v%s -> v%s (%s)", CHAMPION, self.name, from_version, to_version, action
        )
        return self._move_from_run(self.client.get_run(run.info.run_id))

    def champion_moves(self) -> list[ChampionMove]:
        """Every recorded move of @champion for this model, oldest first, none left unsettled."""
        self.settle_unfinished_moves(current_actor("mt registry"))
        return self.recorded_moves()

    def settle_unfinished_moves(self, actor: str) -> list[ChampionMove]:
        """Finish or fail the moves a killed process left RUNNING; the moves it settled.

        Only the newest recorded move can have moved the alias (this runs before every new
        move): it is FINISHED if `@champion` points at its target, else FAILED. Any older
        RUNNING move predates a settled one and is FAILED.
        """
        moves = self.recorded_moves()
        unsettled = [move for move in moves if move.status == "RUNNING"]
        if not unsettled:
            return []
        current = self.alias_version(CHAMPION)
        champion = None if current is None else str(current.version)
        settled = []
        with tracking_call(self.uri, "settling unfinished moves of @champion"):
            for move in unsettled:
                moved = move is moves[-1] and move.to_version == champion
                status = "FINISHED" if moved else "FAILED"
                note = f"settled by {actor}: @{CHAMPION} was at v{champion or '-'}"
                self.client.set_tag(move.run_id, "mt.settled", note)
                self.client.set_terminated(move.run_id, status)
                settled.append(dataclasses.replace(move, status=status))
        for move in settled:
            log.warning(
                "an interrupted move of @%s (%s v%s -> v%s) was settled as %s (@%s is at v%s)",
                CHAMPION,
                move.action,
                move.from_version or "-",
                move.to_version,
                move.status,
                CHAMPION,
                champion or "-",
            )
        return settled

    def recorded_moves(self) -> list[ChampionMove]:
        """The trail as stored, oldest first, unsettled moves included."""
        with tracking_call(self.uri, "reading the champion history"):
            experiment = self.client.get_experiment_by_name(AUDIT_EXPERIMENT)
            if experiment is None:
                return []
            runs = self.client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`mt.model_name` = '{self.name}'",
                order_by=["attributes.start_time ASC"],
                max_results=50000,
            )
        return [self._move_from_run(run) for run in runs]

    @staticmethod
    def _move_from_run(run: Any) -> ChampionMove:
        tags = run.data.tags
        from_version = tags.get("mt.from_version", "none")
        return ChampionMove(
            action=tags.get("mt.action", "?"),
            from_version=None if from_version == "none" else from_version,
            to_version=tags.get("mt.to_version", "?"),
            actor=tags.get("mt.actor", "?"),
            reason=tags.get("mt.reason", ""),
            when=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            status=run.info.status,
            run_id=run.info.run_id,
        )


def champion_stack(moves: list[ChampionMove]) -> list[str]:
    """The champions in force over time, replaying completed moves: a rollback pops one."""
    stack: list[str] = []
    for move in moves:
        if move.status != "FINISHED":
            continue
        if move.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    return stack
