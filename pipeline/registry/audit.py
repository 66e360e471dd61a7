"""The audit trail of `@champion`: one run per move in the "registry-audit" experiment.

A move made by `mt` is opened (an intent, RUNNING) before the alias moves and FINISHED after,
so a process killed in between leaves a RUNNING run; `settle_unfinished_moves` later marks it
FINISHED when `@champion` points where it was going and FAILED otherwise. A move made outside
`mt` (the MLflow UI, `MlflowClient.set_registered_model_alias`, the REST API) is recorded as
a FINISHED run with action `outside`: by the webhook receiver as soon as MLflow delivers the
alias event (`record_delivery`), or by `reconcile` the next time `mt` reads or moves the
champion. The functions here do not lock: callers hold the champion lock (lock.py) around
every write, so two writers never interleave.

Every time in the trail is the tracking server's (server_clock.py): mt's moves are dated by it,
outside moves by MLflow's delivery or the registered model's last update. So a delivery is
matched with the move it reports by comparing one clock with itself, whatever the clock of the
host that ran mt.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.registry.handle import RegistryHandle
from pipeline.registry.server_clock import server_now_ms
from pipeline.tracking import local_artifacts_dir

log = logging.getLogger(__name__)

AUDIT_EXPERIMENT = "registry-audit"
OUTSIDE = "outside"
# Tag value for "no version": no champion before the first move, or an alias deleted outside.
NO_VERSION = "none"
RECONCILE_ACTOR = "outside mt (found by reconcile)"
DELIVERY_TAG = "mt.webhook.delivery_id"
# A delivery for version V is the echo of a move the trail already holds when a RUNNING or
# FINISHED move to V started at most this long before MLflow sent it (mt records its intent
# before it moves the alias; MLflow retries a failed delivery for well under a minute).
ECHO_WINDOW_MS = 10 * 60 * 1000
# How much later than its delivery's time a move may seem to start: mt dates a move by the
# server's clock read through its whole-second Date header (server_clock.py), a second or so off.
CLOCK_READING_MS = 5 * 1000


@dataclass(frozen=True)
class ChampionMove:
    """One recorded move of `@champion`; `status` FINISHED means the alias did move.

    `to_version` is None for an alias deleted outside mt (no champion from then on).
    """

    action: str
    from_version: str | None
    to_version: str | None
    actor: str
    reason: str
    when: str
    status: str
    run_id: str = ""
    start_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AliasDelivery:
    """A verified MLflow webhook delivery of a `@champion` alias event (webhooks.py)."""

    delivery_id: str
    when_ms: int
    model_name: str
    version: str | None  # None: the alias was deleted


def champion_stack(moves: list[ChampionMove]) -> list[str | None]:
    """The champions in force over time, replaying completed moves: a rollback pops one.

    None stands for "no champion" after an alias deleted outside mt.
    """
    stack: list[str | None] = []
    for move in moves:
        if move.status != "FINISHED":
            continue
        if move.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != move.to_version:
            stack.append(move.to_version)
    return stack


def last_finished(moves: list[ChampionMove]) -> ChampionMove | None:
    finished = [move for move in moves if move.status == "FINISHED"]
    return finished[-1] if finished else None


def audit_experiment_id(registry: RegistryHandle) -> str:
    client = registry.client
    found = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if registry.uri.startswith("sqlite:"):
        location = (local_artifacts_dir(registry.uri, registry.paths) / AUDIT_EXPERIMENT).as_uri()
    return str(client.create_experiment(AUDIT_EXPERIMENT, artifact_location=location))


def recorded_moves(registry: RegistryHandle, extra_filter: str = "") -> list[ChampionMove]:
    """The trail as stored, oldest first, unsettled moves included."""
    experiment = registry.client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    runs = registry.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mt.model_name` = '{registry.name}'{extra_filter}",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    return [move_from_run(run) for run in runs]


def move_from_run(run: Any) -> ChampionMove:
    tags = run.data.tags
    return ChampionMove(
        action=tags.get("mt.action", "?"),
        from_version=_version_or_none(tags.get("mt.from_version", NO_VERSION)),
        to_version=_version_or_none(tags.get("mt.to_version", "?")),
        actor=tags.get("mt.actor", "?"),
        reason=tags.get("mt.reason", ""),
        when=_iso(run.info.start_time),
        status=run.info.status,
        run_id=run.info.run_id,
        start_ms=int(run.info.start_time),
    )


def _version_or_none(text: str) -> str | None:
    return None if text == NO_VERSION else text


def _iso(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="seconds")


def _move_tags(
    registry: RegistryHandle,
    action: str,
    moved: tuple[str | None, str | None],
    actor: str,
    reason: str,
) -> dict[str, str]:
    return {
        "mt.model_name": registry.name,
        "mt.action": action,
        "mt.from_version": moved[0] or NO_VERSION,
        "mt.to_version": moved[1] or NO_VERSION,
        "mt.actor": actor,
        "mt.reason": reason or "(none given)",
    }


def record_intent(
    registry: RegistryHandle, action: str, moved: tuple[str | None, str], actor: str, reason: str
) -> str:
    """Open the RUNNING run of a move mt is about to make, dated by the server's clock (the
    clock of the delivery that will report it); its run id."""
    run = registry.client.create_run(
        audit_experiment_id(registry),
        start_time=server_now_ms(registry.uri),
        run_name=f"{registry.name} {action}: v{moved[0]} -> v{moved[1]}",
        tags=_move_tags(registry, action, moved, actor, reason),
    )
    return str(run.info.run_id)


def finish_move(registry: RegistryHandle, run_id: str) -> ChampionMove:
    registry.client.set_terminated(run_id, "FINISHED")
    return move_from_run(registry.client.get_run(run_id))


def record_outside(
    registry: RegistryHandle,
    moved: tuple[str | None, str | None],
    actor: str,
    reason: str,
    when_ms: int,
    extra_tags: dict[str, str],
) -> ChampionMove:
    """A FINISHED `outside` run for a move that already happened, dated `when_ms`."""
    run = registry.client.create_run(
        audit_experiment_id(registry),
        start_time=when_ms,
        run_name=f"{registry.name} {OUTSIDE}: v{moved[0]} -> v{moved[1]}",
        tags={**_move_tags(registry, OUTSIDE, moved, actor, reason), **extra_tags},
    )
    log.warning(
        "@champion of %s was moved outside mt: v%s -> v%s (%s)",
        registry.name,
        moved[0] or "-",
        moved[1] or "-",
        actor,
    )
    return finish_move(registry, run.info.run_id)


def settle_unfinished_moves(registry: RegistryHandle, actor: str) -> list[ChampionMove]:
    """Finish or fail the moves a killed process left RUNNING; the moves it settled.

    Only the newest recorded move can have moved the alias (this runs under the lock before
    every new move): it is FINISHED if `@champion` points at its target, else FAILED. Any
    older RUNNING move predates a settled one and is FAILED.
    """
    moves = recorded_moves(registry)
    unsettled = [move for move in moves if move.status == "RUNNING"]
    if not unsettled:
        return []
    champion = registry.champion_number()
    settled = []
    for move in unsettled:
        moved = move is moves[-1] and move.to_version == champion
        status = "FINISHED" if moved else "FAILED"
        note = f"settled by {actor}: @champion was at v{champion or '-'}"
        registry.client.set_tag(move.run_id, "mt.settled", note)
        registry.client.set_terminated(move.run_id, status)
        settled.append(dataclasses.replace(move, status=status))
        log.warning(
            "an interrupted move of @champion (%s v%s -> v%s) was settled as %s (@champion "
            "is at v%s)",
            move.action,
            move.from_version or "-",
            move.to_version,
            status,
            champion or "-",
        )
    return settled


def reconcile(registry: RegistryHandle, actor: str) -> ChampionMove | None:
    """Record an `outside` move when `@champion` is not where the trail's newest finished
    move put it (or is unset while the trail has one); the move recorded, if any.

    MLflow keeps no time for an alias move: the date is the registered model's
    last_updated_timestamp, kept after the trail's newest move so replay order holds.
    """
    moves = recorded_moves(registry)
    last = last_finished(moves)
    trail_at = None if last is None else last.to_version
    champion = registry.champion_number()
    if champion == trail_at:
        return None
    updated = registry.client.get_registered_model(registry.name).last_updated_timestamp
    when_ms = max(int(updated or 0), (last.start_ms + 1) if last else 0)
    reason = (
        f"found by {actor} at {_iso(server_now_ms(registry.uri))}: @champion was at "
        f"v{champion or '-'}, the trail at v{trail_at or '-'}; MLflow records neither who "
        "moved it nor when (dated by the registered model's last update)"
    )
    tags = {"mt.outside.source": "reconcile"}
    return record_outside(registry, (trail_at, champion), RECONCILE_ACTOR, reason, when_ms, tags)


def record_delivery(registry: RegistryHandle, delivery: AliasDelivery) -> str:
    """Record a webhook's alias move unless the trail has it already; what was done."""
    if recorded_moves(registry, f" AND tags.`{DELIVERY_TAG}` = '{delivery.delivery_id}'"):
        return "duplicate delivery: recorded already"
    moves = [move for move in recorded_moves(registry) if move.status != "FAILED"]
    echo = _echoed_move(moves, delivery)
    if echo is not None:
        return (
            f"already in the trail: {echo.action} v{echo.from_version or '-'} -> "
            f"v{echo.to_version or '-'} by {echo.actor}"
        )
    before = last_finished([move for move in moves if move.start_ms <= delivery.when_ms])
    trail_at = None if before is None else before.to_version
    if trail_at == delivery.version:
        return f"no change: the trail has @champion at v{trail_at or '-'} already"
    actor = f"outside mt (MLflow webhook delivery {delivery.delivery_id})"
    reason = (
        f"@champion {'deleted' if delivery.version is None else 'set'} outside mt, reported "
        f"by MLflow's webhook at {_iso(delivery.when_ms)} (MLflow does not say who)"
    )
    tags = {
        "mt.outside.source": "webhook",
        DELIVERY_TAG: delivery.delivery_id,
        "mt.webhook.timestamp": _iso(delivery.when_ms),
    }
    moved = (trail_at, delivery.version)
    record_outside(registry, moved, actor, reason, delivery.when_ms, tags)
    return f"recorded: outside v{trail_at or '-'} -> v{delivery.version or '-'}"


def _echoed_move(moves: list[ChampionMove], delivery: AliasDelivery) -> ChampionMove | None:
    """The move (mt's own, or one reconcile found) that this delivery reports, if any: the
    newest move at the delivery's time, when it goes to the same version and is recent."""
    at_delivery = [m for m in moves if m.start_ms <= delivery.when_ms + CLOCK_READING_MS]
    if not at_delivery:
        return None
    newest = at_delivery[-1]
    recent = newest.start_ms >= delivery.when_ms - ECHO_WINDOW_MS
    return newest if recent and newest.to_version == delivery.version else None
