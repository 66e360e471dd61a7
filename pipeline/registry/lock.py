"""The champion lock: one writer of `@champion` and its audit trail at a time, per model.

MLflow has no conditional alias update, but creating a registered model whose name exists
fails with RESOURCE_ALREADY_EXISTS, checked by the store's unique key in the same database
transaction: an atomic test-and-set. The lock is the registered model `<name>.champion-lock`,
created with tags naming its holder (actor, process, a random token) and its lease; it is
deleted on release.

No two hosts' clocks are ever compared. A waiter judges a holder gone when it has seen the
holder's lock unchanged (same token, same renewal) for a whole lease on its own monotonic
clock, or at once when the holder is a process of the waiter's own pid namespace that has
exited (pipeline/process_identity.py). The holder renews its lease in `Lease.confirm`, right
before it moves the alias, and refuses to move when too much of the lease is gone to renew it
safely. A gone holder's lock is taken over by renaming it to `<lock>.stale.<its token>`: a
rename to an existing name fails too, so of two processes taking over the same dead holder's
lock only one succeeds, and a process that read the holder before another took over cannot
rename the new holder's lock (the stale name is taken). Stale names are deleted once they are a
day old. On a basic-auth server the rename needs EDIT on the lock, which `mt mlflow-users`
grants both of mt's accounts through a role (the creator's own MANAGE moves with the rename).

A lock whose tags mt did not write (missing or garbled, a lease longer than mt's, an expiry no
lease gives) is refused at once, naming the lock model and how an admin clears it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities.model_registry import RegisteredModel
from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME
from mlflow.exceptions import MlflowException

from pipeline.process_identity import ProcessIdentity, is_gone, this_process
from pipeline.registry.errors import RegistryError
from pipeline.registry.handle import RegistryHandle

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".champion-lock"
# A move holds the lock for well under a second. mt declares this lease, and no lock may
# declare a longer one (a test declares a shorter one to be taken over sooner).
LEASE_S = 60
# Waiting a little longer than a lease lets a waiter take over from a holder that died in
# another container or on another host.
WAIT_S = LEASE_S + 15
POLL_S = 0.2
STALE_KEEP_MS = 24 * 3600 * 1000
# How far the holder's clock (its `expires_ms` tag) may run ahead of the server's before the
# lock is judged not mt's. Used for nothing else: an expiry is never compared to a clock.
CLOCK_SLACK_MS = 3600 * 1000
TAKEN = "RESOURCE_ALREADY_EXISTS"
GONE = "RESOURCE_DOES_NOT_EXIST"
DENIED = "PERMISSION_DENIED"
TOKEN = re.compile(r"[0-9a-f]{32}")
NAMESPACE = re.compile(r"[0-9a-f]{12}|unknown")


def lock_name(model_name: str) -> str:
    return f"{model_name}{LOCK_SUFFIX}"


@dataclass
class Lease:
    """The lock as this process holds it, and when (this process's monotonic clock) its lease
    last started: no waiter can take it over before a lease has passed since then."""

    registry: RegistryHandle
    name: str
    token: str
    lease_s: int
    renewed_at: float
    expires_ms: int

    def confirm(self) -> None:
        """Refuse to go on when so much of the lease is gone that a waiter may be taking the
        lock over now, or when it is no longer ours (taken over); renew the lease when a
        quarter of it is gone. The caller's next step then has at least half a lease."""
        held_s = time.monotonic() - self.renewed_at
        if held_s >= self.lease_s * 3 / 4:
            raise RegistryError(
                f"held the lock {self.name} {held_s:.1f}s into its {self.lease_s}s lease, too "
                "late to move safely (a waiter may be taking it over); nothing moved. Re-run "
                "the command"
            )
        held = _read(self.registry, self.name)
        if held is None or held.tags.get("token") != self.token:
            raise RegistryError(
                f"lost the lock {self.name} (held past its {self.lease_s}s lease and taken "
                "over); nothing moved. Re-run the command"
            )
        if held_s >= self.lease_s / 4:
            self._renew()

    def _renew(self) -> None:
        """A new `expires_ms`: waiters see the lock change, and their lease count restarts."""
        started = time.monotonic()
        self.expires_ms = max(_expiry_ms(self.lease_s), self.expires_ms + 1)
        client = self.registry.client
        client.set_registered_model_tag(self.name, "expires_ms", str(self.expires_ms))
        self.renewed_at = started


@contextlib.contextmanager
def champion_lock(
    registry: RegistryHandle, actor: str, wait_s: float = WAIT_S, lease_s: int = LEASE_S
) -> Iterator[Lease]:
    """Hold the champion lock of `registry.name` for the block; RegistryError after wait_s."""
    name = lock_name(registry.name)
    token = uuid.uuid4().hex
    expires_ms = _expiry_ms(lease_s)
    renewed_at = _acquire(registry, name, _tags(actor, token, lease_s, expires_ms), wait_s)
    try:
        yield Lease(registry, name, token, lease_s, renewed_at, expires_ms)
    finally:
        _release(registry, name, token)


def _tags(actor: str, token: str, lease_s: int, expires_ms: int) -> dict[str, str]:
    me = this_process()
    return {
        "holder": actor,
        "token": token,
        "pid": str(me.pid),
        "host": me.host,
        "started": str(me.started),
        "namespace": me.namespace,
        "lease_s": str(lease_s),
        # For people, and for the waiters of older mt, which compared it with their own clock.
        "expires_ms": str(expires_ms),
    }


@dataclass
class _Watch:
    """How long this waiter has seen one lock unchanged, by its own monotonic clock."""

    state: tuple[str, str] | None = None
    since: float = 0.0

    def unchanged_s(self, held: RegisteredModel) -> float:
        state = (held.tags.get("token", ""), held.tags.get("expires_ms", ""))
        now = time.monotonic()
        if state != self.state:
            self.state, self.since = state, now
        return now - self.since


def _acquire(registry: RegistryHandle, name: str, tags: dict[str, str], wait_s: float) -> float:
    """Create the lock, waiting for (or taking over from) its holder; when the lease began."""
    deadline = time.monotonic() + wait_s
    watch, last_seen = _Watch(), None
    while True:
        asked_at = time.monotonic()
        if _try_create(registry, name, tags):
            return asked_at
        held = _read(registry, name)
        if held is not None:
            if held.tags.get("token") == tags["token"]:
                return asked_at  # ours: a create the server did, whose answer was lost
            _refuse_unless_mt_wrote(registry, held)
            if _holder_gone(held, watch):
                _take_over(registry, held)
            elif last_seen is None:
                log.warning("waiting for the @champion lock %s: %s", name, _describe(held))
            last_seen = held
        if time.monotonic() > deadline:
            raise RegistryError(_busy_message(name, last_seen, wait_s))
        time.sleep(POLL_S)


def _try_create(registry: RegistryHandle, name: str, tags: dict[str, str]) -> bool:
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


def _holder_gone(held: RegisteredModel, watch: _Watch) -> bool:
    """Unchanged for a whole lease, or held by an exited process of this pid namespace."""
    if watch.unchanged_s(held) >= _lease_s(held):
        return True
    holder = _holder_process(held)
    return holder is not None and is_gone(holder)


def _lease_s(held: RegisteredModel) -> int:
    return int(held.tags.get("lease_s", LEASE_S))  # older mt declared none: its lease was 60 s


def _holder_process(held: RegisteredModel) -> ProcessIdentity | None:
    """The holding process; None for a lock of older mt, which recorded only its pid
    and hostname: another container of the same hostname, so never judged by its pid."""
    tags = held.tags
    if "namespace" not in tags or "started" not in tags:
        return None
    return ProcessIdentity(tags["host"], tags["namespace"], int(tags["pid"]), int(tags["started"]))


def _refuse_unless_mt_wrote(registry: RegistryHandle, held: RegisteredModel) -> None:
    problem = _not_mt_because(held)
    if problem is not None:
        raise RegistryError(
            f"the @champion lock of {registry.name}, registered model {held.name}, was not "
            f"written by mt ({problem}): nothing moved; fix: once no mt command runs, an MLflow "
            f"admin deletes registered model {held.name} (MLflow UI, or "
            f"MlflowClient().delete_registered_model({held.name!r}))"
        )


def _not_mt_because(held: RegisteredModel) -> str | None:
    """What in the lock's tags mt would not have written; None for a lock mt wrote."""
    tags = held.tags
    for key in ("holder", "token", "pid", "host", "expires_ms"):
        if not tags.get(key):
            return f"it has no tag {key!r}"
    if not TOKEN.fullmatch(tags["token"]):
        return f"its token {tags['token'][:40]!r} is not one mt makes"
    for key in ("pid", "started", "lease_s", "expires_ms"):
        if key in tags and not tags[key].isdigit():
            return f"its tag {key} is {tags[key][:40]!r}, not a whole number"
    if "namespace" in tags and not NAMESPACE.fullmatch(tags["namespace"]):
        return f"its tag namespace is {tags['namespace'][:40]!r}"
    if not 1 <= _lease_s(held) <= LEASE_S:
        return f"it declares a {_lease_s(held)}s lease, beyond 1 to {LEASE_S}s"
    latest_ms = (held.creation_timestamp or 0) + _lease_s(held) * 2000 + CLOCK_SLACK_MS
    if int(tags["expires_ms"]) > latest_ms:
        expiry, created = _iso(int(tags["expires_ms"])), _iso(held.creation_timestamp or 0)
        return f"it expires {expiry}, further than any lease from its creation at {created}"
    return None


def _take_over(registry: RegistryHandle, held: RegisteredModel) -> None:
    stale = f"{held.name}.stale.{held.tags['token']}"
    try:
        registry.client.rename_registered_model(held.name, stale)
    except MlflowException as error:
        if error.error_code in {TAKEN, GONE}:
            return  # another process took it over first, or the holder released it
        if error.error_code == DENIED:
            raise RegistryError(_not_allowed_message(held)) from error
        raise
    log.warning("took over the @champion lock %s from %s", held.name, _describe(held))
    _drop_old_stale_locks(registry, held.name)


def _drop_old_stale_locks(registry: RegistryHandle, name: str) -> None:
    prefix = f"{name}.stale."
    cutoff = time.time() * 1000 - STALE_KEEP_MS
    for model in registry.client.search_registered_models(filter_string=f"name LIKE '{prefix}%'"):
        if model.name.startswith(prefix) and (model.creation_timestamp or 0) < cutoff:
            with contextlib.suppress(MlflowException):  # another account's: it deletes it
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


def _expiry_ms(lease_s: int) -> int:
    return int(time.time() * 1000 + lease_s * 1000)


def _describe(held: RegisteredModel) -> str:
    tags = held.tags
    return (
        f"held by {tags.get('holder', '?')} (pid {tags.get('pid', '?')} on "
        f"{tags.get('host', '?')}, since {_iso(held.creation_timestamp or 0)} by the server's "
        "clock)"
    )


def _busy_message(name: str, held: RegisteredModel | None, wait_s: float) -> str:
    holder = held.tags.get("holder", "?") if held is not None else "one holder after another"
    where = (
        f"registered model {name}, pid {held.tags.get('pid', '?')} on "
        f"{held.tags.get('host', '?')}, since {_iso(held.creation_timestamp or 0)}"
        if held is not None
        else f"registered model {name}"
    )
    return (
        f"@champion is locked by {holder} ({where}); waited {wait_s:.0f}s, nothing moved "
        "(fix: re-run once that command is done; if its process is gone, the lock is taken "
        f"over once it has stood unchanged for its lease, at most {LEASE_S}s)"
    )


def _not_allowed_message(held: RegisteredModel) -> str:
    return (
        f"the @champion lock {held.name} is {_describe(held)}, which is gone, but the tracking "
        f"server refused user {MLFLOW_TRACKING_USERNAME.get()!r} taking it over (HTTP 403 "
        "PERMISSION_DENIED on renaming it); nothing moved; fix: an MLflow admin runs "
        "`mt mlflow-users` (its role mt-champion-lock gives mt's accounts EDIT on "
        f"{held.name}), or deletes registered model {held.name} once no mt command runs"
    )


def _iso(milliseconds: int) -> str:
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")
