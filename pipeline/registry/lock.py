"""The champion lock: one writer of `@champion` and its audit trail at a time, per model.

MLflow has no conditional alias update, but creating a registered model whose name exists
fails with RESOURCE_ALREADY_EXISTS, checked by the store's unique key in the same database
transaction: an atomic test-and-set. The lock is the registered model `<name>.champion-lock`,
created with tags naming its holder (actor, pid, host, a random token) and an expiry; it is
deleted on release. A lock whose holder is gone (expired, or a dead pid on this host) is taken
over by renaming it to `<lock>.stale.<its token>`: a rename to an existing name fails too, so
of two processes taking over the same dead holder's lock only one succeeds, and a process that
read the holder before another took over cannot rename the new holder's lock (the stale name
is taken). Those stale names are deleted once they are a day old.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

from pipeline.registry.errors import RegistryError
from pipeline.registry.handle import RegistryHandle

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".champion-lock"
# A move holds the lock for well under a second; a holder past its lease is presumed dead.
LEASE_MS = 60_000
# Waiting longer than a lease lets a waiter take over from a holder that died on another host.
WAIT_S = LEASE_MS / 1000 + 15
POLL_S = 0.2
STALE_KEEP_MS = 24 * 3600 * 1000
TAKEN = "RESOURCE_ALREADY_EXISTS"
GONE = "RESOURCE_DOES_NOT_EXIST"


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


@dataclass(frozen=True)
class Lease:
    """The lock as this process holds it."""

    registry: RegistryHandle
    name: str
    token: str

    def confirm(self) -> None:
        """Refuse to go on when the lock is no longer ours (taken over after expiry)."""
        held = _read(self.registry, self.name)
        if held is None or held.tags.get("token") != self.token:
            raise RegistryError(
                f"lost the lock {self.name} (held past its {LEASE_MS // 1000}s lease and taken "
                "over); nothing moved. Re-run the command"
            )


@contextlib.contextmanager
def champion_lock(registry: RegistryHandle, actor: str, wait_s: float = WAIT_S) -> Iterator[Lease]:
    """Hold the champion lock of `registry.name` for the block; RegistryError after wait_s."""
    name = lock_name(registry.name)
    token = uuid.uuid4().hex
    _acquire(registry, name, token, actor, wait_s)
    try:
        yield Lease(registry, name, token)
    finally:
        _release(registry, name, token)


def _acquire(registry: RegistryHandle, name: str, token: str, actor: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        if _try_create(registry, name, token, actor):
            return
        held = _read(registry, name)
        if held is None:
            continue  # released between our two calls
        if held.tags.get("token") == token:
            return  # ours: a create the server did, whose answer was lost and retried
        if _abandoned(held):
            _take_over(registry, held)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(_busy_message(held, wait_s))
        if not announced:
            log.warning(
                "waiting for the @champion lock %s, held by %s until %s",
                name,
                held.tags.get("holder", "?"),
                _iso(held.tags.get("expires_ms", "0")),
            )
            announced = True
        time.sleep(POLL_S)


def _try_create(registry: RegistryHandle, name: str, token: str, actor: str) -> bool:
    tags = {
        "holder": actor,
        "token": token,
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "expires_ms": str(int(time.time() * 1000) + LEASE_MS),
    }
    description = "held by mt while it moves @champion; see docs/registry.md"
    try:
        registry.client.create_registered_model(name, tags=tags, description=description)
    except MlflowException as error:
        # GONE too: MLflow's SQL store answers a create whose name exists by reading that
        # model for its message; when the holder deletes it in between, the create fails
        # with "not found" (seen in CI: two registrations racing). Either way: not ours yet.
        if error.error_code in {TAKEN, GONE}:
            return False
        raise
    return True


def _read(registry: RegistryHandle, name: str) -> RegisteredModel | None:
    try:
        return registry.client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == GONE:
            return None
        raise


def _abandoned(held: RegisteredModel) -> bool:
    """Past its lease, or held by a process of this host that no longer exists."""
    if int(held.tags.get("expires_ms", "0")) < time.time() * 1000:
        return True
    if held.tags.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(held.tags.get("pid", "0")), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def _take_over(registry: RegistryHandle, held: RegisteredModel) -> None:
    stale = f"{held.name}.stale.{held.tags.get('token', 'unknown')}"
    try:
        registry.client.rename_registered_model(held.name, stale)
    except MlflowException as error:
        if error.error_code in {TAKEN, GONE}:
            return  # another process took it over first, or the holder released it
        raise
    log.warning(
        "took over the @champion lock %s from %s (pid %s on %s), which is gone",
        held.name,
        held.tags.get("holder", "?"),
        held.tags.get("pid", "?"),
        held.tags.get("host", "?"),
    )
    _drop_old_stale_locks(registry, held.name)


def _drop_old_stale_locks(registry: RegistryHandle, name: str) -> None:
    prefix = f"{name}.stale."
    cutoff = time.time() * 1000 - STALE_KEEP_MS
    for model in registry.client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
        if model.name.startswith(prefix) and (model.creation_timestamp or 0) < cutoff:
            with contextlib.suppress(MlflowException):
                registry.client.delete_registered_model(model.name)


def _release(registry: RegistryHandle, name: str, token: str) -> None:
    held = _read(registry, name)
    if held is None or held.tags.get("token") != token:
        log.warning("the lock %s was taken over before this process released it", name)
        return
    try:
        registry.client.delete_registered_model(name)
    except MlflowException as error:
        # Gone is released. MLflow's client retries a DELETE whose answer was lost (a 5xx
        # under load): the server deleted the lock on the first try and answers the retry 404.
        if error.error_code != GONE:
            raise


def _busy_message(held: RegisteredModel, wait_s: float) -> str:
    return (
        f"@champion is locked by {held.tags.get('holder', '?')} (registered model "
        f"{held.name}, pid {held.tags.get('pid', '?')} on {held.tags.get('host', '?')}, until "
        f"{_iso(held.tags.get('expires_ms', '0'))}); waited {wait_s:.0f}s, nothing moved "
        "(fix: re-run once that command is done; if its process is gone, the lock is taken "
        "over after its lease)"
    )


def _iso(milliseconds: str) -> str:
    return datetime.fromtimestamp(int(milliseconds) / 1000, UTC).isoformat(timespec="seconds")
