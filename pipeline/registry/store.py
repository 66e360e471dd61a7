"""The MLflow calls of the registry, each turned into a RegistryError that names the store,
and the one way `mt` moves `@champion` (`Registry.move_champion`).

A move is: the smoke check of the target version (smoke.py), then, holding the champion lock
(lock.py), settle what a killed mover left (audit.py), record any move made outside mt
(reconcile), compare-and-set against the champion the caller expected, record the intent, move
the alias, finish the record. The trail and the alias agree again after every such step,
whichever side of the move a process died on.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mlflow
import requests
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS as MODEL_VERSIONS_TAG

from pipeline.paths import ProjectPaths
from pipeline.pause_points import pause_point
from pipeline.registry import audit
from pipeline.registry.audit import AUDIT_EXPERIMENT, AliasDelivery, ChampionMove, champion_stack
from pipeline.registry.errors import RegistryError
from pipeline.registry.lock import champion_lock
from pipeline.registry.smoke import smoke_check
from pipeline.tracking import (
    access_refusal,
    ensure_experiment,
    fluent_store,
    mlflow_settings,
    redact,
    redacted,
    store_client,
    tracking_uri,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
__all__ = [
    "ANY_CHAMPION",
    "AUDIT_EXPERIMENT",
    "CHALLENGER",
    "CHAMPION",
    "ChampionMove",
    "ChampionMoved",
    "ExpectedChampion",
    "Registry",
    "champion_stack",
]


class AnyChampion(enum.Enum):
    """`expected_from` of a move that applies whoever is champion (a person's promote)."""

    ANY = "any"


ANY_CHAMPION = AnyChampion.ANY
ExpectedChampion = str | None | Literal[AnyChampion.ANY]


class ChampionMoved(RegistryError):
    """`@champion` is no longer the version a decision was made against; nothing moved."""

    def __init__(self, model_name: str, expected: str | None, current: str | None) -> None:
        self.current = current
        super().__init__(
            f"@champion of {model_name} is v{current or '-'} now, not v{expected or '-'} as "
            "this decision assumed (it was moved meanwhile); nothing moved (fix: see "
            "`mt registry history`, then re-run)"
        )


# Bounded retries against an HTTP tracking server (MLflow's defaults wait minutes), for the
# registry's calls only (`registry_call`): never written into the process's environment, whose
# own values still win, so an operator can widen them.
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def registry_settings() -> dict[str, str]:
    """MLflow's settings for the registry's calls: RETRY_DEFAULTS, and under CI no progress
    bars for artifact downloads."""
    if os.environ.get("CI", "").lower() == "true":
        return {**RETRY_DEFAULTS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return dict(RETRY_DEFAULTS)


@contextlib.contextmanager
def tracking_call(
    uri: str, step: str, settings: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Turn MLflow and network failures of `step` into a RegistryError naming the store;
    with `settings`, MLflow's calls in the block run with them (pipeline.tracking
    mlflow_settings)."""
    scope = contextlib.nullcontext() if settings is None else mlflow_settings(settings)
    try:
        with scope:
            yield
    except RegistryError:
        raise
    except (MlflowException, requests.exceptions.RequestException, OSError) as error:
        message = getattr(error, "message", None) or str(error)
        refusal = access_refusal(uri, step, getattr(error, "error_code", None), message)
        if refusal is not None:  # a login or a right is missing: retrying cannot help
            raise RegistryError(refusal) from None
        first = redacted(message.splitlines()[0][:500], uri)
        raise RegistryError(
            f"{step} failed against the tracking store {redact(uri)}: {first} "
            "(fix: check that the MLflow server is up, and its database: HTTP 500s come from a "
            "database it cannot reach, and that MLFLOW_TRACKING_URI is right, then re-run: "
            "the rerun picks up where this one stopped)"
        ) from None


def registry_call(uri: str, step: str) -> contextlib.AbstractContextManager[None]:
    """`tracking_call` with the registry's MLflow settings (RETRY_DEFAULTS)."""
    return tracking_call(uri, step, registry_settings())


def current_actor(command: str) -> str:
    """Who is acting: the Airflow task when run by Airflow, else user@host and the command."""
    run_id = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if run_id:
        dag = os.environ.get("AIRFLOW_CTX_DAG_ID", "?")
        task = os.environ.get("AIRFLOW_CTX_TASK_ID", "?")
        return f"airflow {dag}/{run_id}/{task} via {command}"
    return f"{getpass.getuser()}@{socket.gethostname()} via {command}"


@dataclass
class Registry:
    """One registered model in one tracking store."""

    client: MlflowClient
    uri: str
    name: str
    paths: ProjectPaths
    # Versions that passed the smoke check in this process (a re-gate moves to one again).
    smoke_passed: set[str] = field(default_factory=set)

    @classmethod
    def connect(cls, paths: ProjectPaths, name: str) -> Registry:
        """A client of the project's store, checked to answer before anything is written."""
        uri = tracking_uri(paths)
        with registry_call(uri, "connecting"):
            client = store_client(uri)
            ensure_experiment(client, paths)
            client.search_registered_models(max_results=1)
        return cls(client, uri, name, paths)

    def ensure_model(
        self, description: str = "Multi30k LSTM translator; see docs/registry.md"
    ) -> None:
        """Create the registered model, with `description`, unless it exists."""
        with registry_call(self.uri, f"creating registered model {self.name!r}"):
            if not self.client.search_registered_models(filter_string=f"name = '{self.name}'"):
                self.client.create_registered_model(self.name, description=description)

    def version(self, version: str) -> ModelVersion:
        with registry_call(self.uri, f"reading {self.name} version {version}"):
            return self.client.get_model_version(self.name, str(version))

    def alias_version(self, alias: str) -> ModelVersion | None:
        """The version `alias` points at, or None when the alias is unset."""
        with registry_call(self.uri, f"reading alias @{alias}"):
            try:
                return self.client.get_model_version_by_alias(self.name, alias)
            except MlflowException as error:
                if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                    return None
                raise

    def version_tagged(self, key: str, value: str) -> ModelVersion | None:
        """The newest version whose tag `key` is `value` (with its aliases), or None."""
        with registry_call(self.uri, f"looking up the version with {key}={value[:12]}"):
            found = self.client.search_model_versions(
                f"name = '{self.name}' AND tags.`{key}` = '{value}'"
            )
            if not found:
                return None
            newest = max(found, key=lambda v: int(v.version))
            return self.client.get_model_version(self.name, newest.version)

    def versions(self) -> list[ModelVersion]:
        """Every version, newest first, each with its aliases."""
        with registry_call(self.uri, f"listing versions of {self.name}"):
            found = self.client.search_model_versions(f"name = '{self.name}'")
            full = [self.client.get_model_version(self.name, v.version) for v in found]
        return sorted(full, key=lambda v: int(v.version), reverse=True)

    def create_version(
        self,
        model_uri: str,
        run_id: str,
        model_id: str | None,
        tags: dict[str, str],
        description: str | None = None,
    ) -> ModelVersion:
        """One call: the version exists with all its tags and its description, or not at all.

        Inside `fluent_store`: MLflow's own SQL registry store looks the logged model up with
        an `MlflowClient()` of the process-wide tracking URI (its "TODO: Propagate tracking
        URI"); a server's store does that on the server.
        """
        step = f"creating a version of {self.name}"
        with registry_call(self.uri, step), fluent_store(self.uri):
            version = self.client.create_model_version(
                self.name,
                source=model_uri,
                run_id=run_id,
                tags=tags,
                model_id=model_id,
                description=description,
            )
        if model_id:
            with mlflow_settings(registry_settings()):
                self._link_logged_model(model_id, str(version.version))
        return version

    def _link_logged_model(self, model_id: str, version: str) -> None:
        """Name the version on its logged model (tag `mlflow.modelVersions`), as
        `mlflow.register_model` does: the UI's logged-model page reads it, and shows "Not
        registered" without it. Only a link for people: a failure is a warning, the version
        stands."""
        entry = {"name": self.name, "version": version}
        try:
            existing = self.client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG)
            linked = [*json.loads(existing or "[]"), entry]
            self.client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(linked)})
        except (MlflowException, requests.RequestException, ValueError) as error:
            log.warning(
                "version %s of %s: could not name it on its logged model %s (%s); the MLflow UI "
                "shows that model as not registered",
                version,
                self.name,
                model_id,
                error,
            )

    def set_description(self, version: str, description: str) -> None:
        with registry_call(self.uri, f"describing version {version}"):
            self.client.update_model_version(self.name, str(version), description=description)

    def set_alias(self, alias: str, version: str) -> None:
        with registry_call(self.uri, f"pointing @{alias} at version {version}"):
            self.client.set_registered_model_alias(self.name, alias, str(version))

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        with registry_call(self.uri, f"tagging version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, str(version), key, value)

    def download_model_file(self, version: str, relative: str, destination: Path) -> Path:
        """One file from a version's logged model directory, e.g. "MLmodel"."""
        with registry_call(self.uri, f"downloading {relative} of version {version}"):
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

    def champion_number(self) -> str | None:
        champion = self.alias_version(CHAMPION)
        return None if champion is None else str(champion.version)

    # --- moving @champion, and its audit trail (audit.py) ------------------------------------

    def move_champion(
        self,
        to_version: str,
        action: str,
        actor: str,
        reason: str,
        expected_from: ExpectedChampion = ANY_CHAMPION,
    ) -> ChampionMove:
        """Point @champion at `to_version`, recorded before and confirmed after the move.

        With `expected_from` (a version, or None for "no champion"), the move happens only if
        @champion is still there, checked under the champion lock; else ChampionMoved.
        """
        to_version = str(to_version)
        with registry_call(self.uri, f"moving @{CHAMPION} to version {to_version}"):
            self.client.get_model_version(self.name, to_version)
        self.smoke_check(to_version)
        step = f"moving @{CHAMPION} to version {to_version}"
        with registry_call(self.uri, step), champion_lock(self, actor) as lease:
            current = self._up_to_date_champion(actor)
            if expected_from is not ANY_CHAMPION and current != expected_from:
                raise ChampionMoved(self.name, expected_from, current)
            run_id = audit.record_intent(self, action, (current, to_version), actor, reason)
            pause_point("registry.champion_move_recorded")
            lease.confirm()
            self.client.set_registered_model_alias(self.name, CHAMPION, to_version)
            pause_point("registry.champion_alias_moved")
            move = audit.finish_move(self, run_id)
        log.info("@%s of %s: v%s -> v%s (%s)", CHAMPION, self.name, current, to_version, action)
        return move

    def smoke_check(self, version: str) -> None:
        if version not in self.smoke_passed:
            with mlflow_settings(registry_settings()):
                smoke_check(self.uri, self.name, version)
            self.smoke_passed.add(version)

    def _up_to_date_champion(self, actor: str) -> str | None:
        """Under the lock: settle killed moves, record outside moves; the champion now."""
        audit.settle_unfinished_moves(self, actor)
        audit.reconcile(self, actor)
        return self.champion_number()

    def champion_moves(self) -> list[ChampionMove]:
        """Every recorded move of @champion, oldest first, with none left unsettled and any
        move made outside mt recorded."""
        self.reconcile_champion(current_actor("mt registry"))
        return self.recorded_moves()

    def reconcile_champion(self, actor: str) -> str | None:
        """Bring the trail up to date with the alias (under the lock); the champion now."""
        step = "reconciling the champion history"
        with registry_call(self.uri, step), champion_lock(self, actor):
            return self._up_to_date_champion(actor)

    def settle_unfinished_moves(self, actor: str) -> list[ChampionMove]:
        """Finish or fail the moves a killed process left RUNNING (audit.py), under the lock."""
        step = "settling unfinished moves of @champion"
        with registry_call(self.uri, step), champion_lock(self, actor):
            return audit.settle_unfinished_moves(self, actor)

    def recorded_moves(self) -> list[ChampionMove]:
        """The trail as stored, oldest first, unsettled moves included."""
        with registry_call(self.uri, "reading the champion history"):
            return audit.recorded_moves(self)

    def record_webhook_delivery(self, delivery: AliasDelivery) -> str:
        """Record an alias move MLflow's webhook reported, unless the trail has it; what was
        done (audit.record_delivery)."""
        step = f"recording webhook delivery {delivery.delivery_id}"
        with registry_call(self.uri, step), champion_lock(self, "mt registry webhook serve"):
            return audit.record_delivery(self, delivery)
