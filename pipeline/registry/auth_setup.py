"""`mt mlflow-users`: the accounts of an MLflow server run with `--app-name basic-auth`.

Run as the server's admin (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, the
standard variables MLflow's client sends). It makes, through MLflow's auth REST API:

- the experiments `translation` and `registry-audit` and each registered model, owned by the
  admin: whoever creates a resource gets MANAGE on it, so the pipeline must not be the creator;
- the pipeline account (`MT_PIPELINE_PASSWORD`): EDIT on `translation` (runs, logged models,
  metrics) and on each registered model (versions, their tags, aliases);
- the promoter account (`MT_PROMOTER_PASSWORD`): MANAGE on each registered model (move and
  delete aliases, grant others), READ on `translation`;
- both: EDIT on `registry-audit`, where every `mt` move of `@champion` is recorded first. With
  `--separate-promotion` the pipeline gets READ there, so the server refuses any `mt` move of
  `@champion` made with the pipeline's login before the alias moves;
- both: the role `mt-champion-lock`, EDIT on each model's champion lock `<model>.champion-lock`
  (pipeline/registry/lock.py), so either may take over a lock the other's dead process left
  (a rename). A grant to a user on that name would not last: MLflow deletes a registered
  model's user grants with it (each release) and moves them with a rename (each takeover);
  a role's grants stay.

MLflow 3.17 checks setting an alias with the same right as creating a version (EDIT on the
registered model) and does not tell `@champion` from `@challenger`: the account that registers
can also move `@champion` through MLflow's own API or UI. See "Who may promote" in
docs/registry.md. Rerunning changes only what differs (a password is always set again).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

from pipeline.config import load_config
from pipeline.paths import project_paths
from pipeline.registry.errors import RegistryError
from pipeline.registry.lock import lock_name
from pipeline.registry.store import AUDIT_EXPERIMENT, Registry, registry_call
from pipeline.tracking import EXPERIMENT_NAME, redact, tracking_uri

log = logging.getLogger(__name__)

PIPELINE_PASSWORD_ENV = "MT_PIPELINE_PASSWORD"  # noqa: S105 (an environment variable's name)
PROMOTER_PASSWORD_ENV = "MT_PROMOTER_PASSWORD"  # noqa: S105 (an environment variable's name)
EXPERIMENT = "experiment"
REGISTERED_MODEL = "registered_model"
LOCK_ROLE = "mt-champion-lock"


@dataclass(frozen=True)
class Grant:
    """One permission of one account on one experiment (by id) or registered model."""

    resource_type: str
    resource_id: str
    permission: str
    label: str  # what a person reads: "registered model multi30k-en-de-lstm"


@dataclass(frozen=True)
class Account:
    username: str
    password_env: str
    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class LockRole:
    """The role whose members may take over each other's champion locks (see above)."""

    name: str
    grants: tuple[Grant, ...]
    members: tuple[str, ...]


def lock_role_plan(members: list[str], models: list[str]) -> LockRole:
    grants = tuple(
        Grant(REGISTERED_MODEL, lock_name(name), "EDIT", f"registered model {lock_name(name)}")
        for name in models
    )
    return LockRole(LOCK_ROLE, grants, tuple(members))


def account_plan(
    pipeline_user: str,
    promoter_user: str,
    models: list[str],
    experiment_ids: dict[str, str],
    separate_promotion: bool,
) -> list[Account]:
    """The two accounts and the exact grants each gets (pure: ids and names in, plan out)."""

    def experiment(name: str, permission: str) -> Grant:
        return Grant(EXPERIMENT, experiment_ids[name], permission, f"experiment {name}")

    def model(name: str, permission: str) -> Grant:
        return Grant(REGISTERED_MODEL, name, permission, f"registered model {name}")

    audit_for_pipeline = "READ" if separate_promotion else "EDIT"
    pipeline = (
        experiment(EXPERIMENT_NAME, "EDIT"),
        experiment(AUDIT_EXPERIMENT, audit_for_pipeline),
        *(model(name, "EDIT") for name in models),
    )
    promoter = (
        experiment(EXPERIMENT_NAME, "READ"),
        experiment(AUDIT_EXPERIMENT, "EDIT"),
        *(model(name, "MANAGE") for name in models),
    )
    return [
        Account(pipeline_user, PIPELINE_PASSWORD_ENV, pipeline),
        Account(promoter_user, PROMOTER_PASSWORD_ENV, promoter),
    ]


def ensure_resources(registry: Registry, models: list[str]) -> dict[str, str]:
    """Create what the grants name, as the admin; the experiment ids by name."""
    client = registry.client
    ids = {}
    for name in (EXPERIMENT_NAME, AUDIT_EXPERIMENT):
        with registry_call(registry.uri, f"creating the experiment {name!r}"):
            found = client.get_experiment_by_name(name)
            ids[name] = found.experiment_id if found else client.create_experiment(name)
    for name in models:
        dataclasses.replace(registry, name=name).ensure_model()
    return ids


def ensure_user(auth: AuthServiceClient, uri: str, account: Account) -> str:
    """Create the account, or set its password again; what was done."""
    password = os.environ.get(account.password_env, "")
    with registry_call(uri, f"creating the user {account.username!r}"):
        try:
            auth.get_user(account.username)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            auth.create_user(account.username, password)
            return "created"
        auth.update_user_password(account.username, password)
    return "password set"


def ensure_grant(auth: AuthServiceClient, uri: str, username: str, grant: Grant) -> str:
    """Make `grant` the user's effective permission; "unchanged" or "granted"."""
    step = f"granting {username!r} {grant.permission} on {grant.label}"
    with registry_call(uri, step):
        if _effective(auth, username, grant) == grant.permission:
            return "unchanged"
        try:  # a grant of another level on the user's own role is replaced
            auth.revoke_user_permission(username, grant.resource_type, grant.resource_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        auth.grant_user_permission(
            username, grant.resource_type, grant.resource_id, grant.permission
        )
        now = _effective(auth, username, grant)
    if now != grant.permission:
        raise RegistryError(
            f"user {username!r} still has {now} on {grant.label} after the grant of "
            f"{grant.permission}: another role gives it that; fix: remove the role from the "
            "user in MLflow's admin UI (or the roles API), then rerun `mt mlflow-users`"
        )
    return "granted"


def _effective(auth: AuthServiceClient, username: str, grant: Grant) -> str:
    found = auth.get_user_permission(username, grant.resource_type, grant.resource_id)
    return found.permission


def check_inputs(uri: str, password_envs: dict[str, str]) -> None:
    """Refuse before any call: no server to hold accounts, or a password missing.

    `password_envs` maps each env var to the user whose password it holds.
    """
    if not uri.startswith(("http://", "https://")):
        raise RegistryError(
            f"MLFLOW_TRACKING_URI is {redact(uri)}: accounts live on an MLflow server started "
            "with `mlflow server --app-name basic-auth`; fix: set MLFLOW_TRACKING_URI to its URL"
        )
    for env, username in password_envs.items():
        password = os.environ.get(env, "")
        if len(password) < 12:  # MLflow's own rule (mlflow.utils.validation)
            state = "is not set" if not password else "is shorter than 12 characters"
            raise RegistryError(
                f"{env} {state}: it is the password of the MLflow user {username!r}; fix: set "
                "it (docker/make-env.sh writes one into docker/.env); nothing was changed"
            )


def apply_plan(auth: AuthServiceClient, uri: str, plan: list[Account]) -> None:
    for account in plan:
        print(f"user {account.username}: {ensure_user(auth, uri, account)}")
        for grant in account.grants:
            outcome = ensure_grant(auth, uri, account.username, grant)
            print(f"  {grant.permission:<6} on {grant.label}: {outcome}")


def apply_lock_role(auth: AuthServiceClient, uri: str, role: LockRole) -> None:
    with registry_call(uri, f"creating the role {role.name!r}"):
        role_id, outcome = _ensure_role(auth, role.name)
    print(f"role {role.name}: {outcome}")
    for grant in role.grants:
        with registry_call(
            uri, f"granting the role {role.name!r} {grant.permission} on {grant.label}"
        ):
            outcome = _ensure_role_grant(auth, role_id, grant)
        print(f"  {grant.permission:<6} on {grant.label}: {outcome}")
    for username in role.members:
        with registry_call(uri, f"giving {username!r} the role {role.name!r}"):
            joined = any(found.id == role_id for found in auth.list_user_roles(username))
            if not joined:
                auth.assign_role(username, role_id)
        print(f"  member {username}: {'unchanged' if joined else 'added'}")


def _ensure_role(auth: AuthServiceClient, name: str) -> tuple[int, str]:
    """The role's id, and "created" or "unchanged"."""
    for role in auth.list_roles(DEFAULT_WORKSPACE_NAME):
        if role.name == name:
            return int(role.id), "unchanged"
    description = "mt's accounts: may take over each other's champion locks (mt mlflow-users)"
    return int(auth.create_role(DEFAULT_WORKSPACE_NAME, name, description).id), "created"


def _ensure_role_grant(auth: AuthServiceClient, role_id: int, grant: Grant) -> str:
    for held in auth.list_role_permissions(role_id):
        if (held.resource_type, held.resource_pattern) == (grant.resource_type, grant.resource_id):
            if held.permission == grant.permission:
                return "unchanged"
            auth.update_role_permission(held.id, grant.permission)
            return "granted"
    auth.add_role_permission(role_id, grant.resource_type, grant.resource_id, grant.permission)
    return "granted"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mt mlflow-users", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help="registered model to grant on (repeatable); default: register.model_name",
    )
    parser.add_argument("--pipeline-user", default="mt-pipeline")
    parser.add_argument("--promoter-user", default="mt-promoter")
    parser.add_argument(
        "--separate-promotion",
        action="store_true",
        help="the pipeline's login may not record a move of @champion (use register.policy: "
        "manual; a promoter runs `mt registry promote`)",
    )
    return parser


def main(argv: list[str]) -> int:
    """`mt mlflow-users`: create or update the pipeline and promoter accounts and their rights."""
    args = _parser().parse_args(argv)
    models = args.models or [load_config().register.model_name]
    users = {PIPELINE_PASSWORD_ENV: args.pipeline_user, PROMOTER_PASSWORD_ENV: args.promoter_user}
    check_inputs(tracking_uri(), users)
    registry = Registry.connect(project_paths(), models[0])
    ids = ensure_resources(registry, models)
    plan = account_plan(
        args.pipeline_user, args.promoter_user, models, ids, args.separate_promotion
    )
    auth = AuthServiceClient(registry.uri)
    apply_plan(auth, registry.uri, plan)
    lock_role = lock_role_plan([args.pipeline_user, args.promoter_user], models)
    apply_lock_role(auth, registry.uri, lock_role)
    return 0
