"""The champion lock (pipeline/registry/lock.py) against the test run's real `mlflow server`
(tests/conftest.py `shared_mlflow`), with holders and waiters as real processes: SIGKILLed,
on a clock two minutes ahead (libfaketime), or in a pid namespace of their own with this
host's name (a second container of a scaled compose service).

Each test has a registered model of its own; the lock is `<model>.champion-lock`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config import load_config
from pipeline.paths import project_paths
from pipeline.process_identity import this_process
from pipeline.registry.errors import RegistryError
from pipeline.registry.lock import _iso, champion_lock, lock_name
from pipeline.registry.store import Registry
from tests import lock_process
from tests.mlflow_server import MlflowServer, prepare_registry_project
from tests.pid_namespace import skip_unless_pid_namespaces, start_in_own_pid_namespace

pytestmark = pytest.mark.slow

ADMIN_FIX = "fix: once no mt command runs, an MLflow admin deletes registered model"


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    project_dir: Path,
    shared_mlflow: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    model_name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]  # [case] too
    prepare_registry_project(project_dir, monkeypatch, model_name=model_name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_mlflow.url)
    return project_dir


@pytest.fixture
def registry(project: Path) -> Registry:
    return Registry.connect(project_paths(), load_config().register.model_name)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Lock processes a test starts, each a session of its own; any still running at its end
    are killed with all they started."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def start_holder(
    registry: Registry, started: list[subprocess.Popen[str]], *args: str
) -> subprocess.Popen[str]:
    process = lock_process.start_holder(registry.name, *args)
    started.append(process)
    return process


def forged_lock(registry: Registry, **tags: str) -> str:
    """Create the lock with `tags` over those of a holder in this namespace; its token."""
    me = this_process()
    token = uuid.uuid4().hex
    mine = {"holder": "forged", "token": token, "pid": str(me.pid), "host": me.host}
    mine |= {"started": str(me.started), "namespace": me.namespace, "lease_s": "60"}
    mine |= {"expires_ms": str(int(time.time() * 1000) + 60_000)}
    all_tags = {key: value for key, value in (mine | tags).items() if value != "-"}
    registry.client.create_registered_model(lock_name(registry.name), tags=all_tags)
    return str(all_tags.get("token", ""))


def acquire_once(registry: Registry, actor: str, wait_s: float) -> None:
    with champion_lock(registry, actor, wait_s=wait_s):
        pass


def holder_tag(client: MlflowClient, name: str) -> str:
    return str(client.get_registered_model(name).tags["holder"])


def no_lock_left(registry: Registry) -> bool:
    return not registry.client.search_registered_models(f"name = '{lock_name(registry.name)}'")


# --- one holder at a time -----------------------------------------------------------------


def test_a_second_holder_waits_then_gives_up_naming_the_holder(registry: Registry) -> None:
    with (
        champion_lock(registry, "first holder"),
        pytest.raises(RegistryError, match=r"^@champion is locked by first holder \(registered "),
        champion_lock(registry, "second holder", wait_s=0.5),
    ):
        pass
    assert no_lock_left(registry)


def test_a_lock_with_its_own_token_is_taken_as_acquired(registry: Registry) -> None:
    """MLflow's client retries a request answered with a 5xx: a create the server did anyway
    is then answered "already exists". The lock found holds this acquire's own token: it is
    ours, not a holder to wait for (which would time out waiting for itself)."""
    from pipeline.registry.lock import _acquire, _release, _tags, _try_create

    name = lock_name(registry.name)
    tags = _tags("retried mover", uuid.uuid4().hex, 60, int(time.time() * 1000) + 60_000)
    assert _try_create(registry, name, tags)  # the lost first try
    _acquire(registry, name, tags, wait_s=0)  # the retry: no wait
    assert holder_tag(registry.client, name) == "retried mover"
    _release(registry, name, tags["token"])
    assert no_lock_left(registry)


# --- holders that are gone ---------------------------------------------------------------


def test_a_killed_holder_of_this_namespace_is_taken_over_at_once(
    registry: Registry, started: list[subprocess.Popen[str]]
) -> None:
    client, name = registry.client, lock_name(registry.name)
    holder = start_holder(registry, started)
    token = client.get_registered_model(name).tags["token"]
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    # Its lease (60 s) is far from over: only its exit can make a 1 s wait enough.
    with champion_lock(registry, "taker", wait_s=1):
        assert holder_tag(client, name) == "taker"
    assert holder_tag(client, f"{name}.stale.{token}") == "holder"

    # A lock whose pid runs again, but another process (started at another time): gone too.
    reused = forged_lock(registry, started=str(this_process().started + 1))
    with champion_lock(registry, "taker", wait_s=1):
        assert holder_tag(client, name) == "taker"
    assert client.get_registered_model(f"{name}.stale.{reused}").tags["holder"] == "forged"
    assert no_lock_left(registry)


def test_a_killed_holder_elsewhere_is_taken_over_once_its_lock_stood_a_lease(
    registry: Registry, started: list[subprocess.Popen[str]]
) -> None:
    """A holder in another pid namespace (or on another host) is never judged by its pid:
    its lock is taken over when a waiter has seen it unchanged for its whole lease (2 s here)
    by the waiter's own clock, never before."""
    skip_unless_pid_namespaces()
    client, name = registry.client, lock_name(registry.name)
    argv = lock_process.argv(registry.name, "hold", "--lease-s", "2")
    holder, _ = start_in_own_pid_namespace(
        argv, env=lock_process.environ(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    started.append(holder)
    lock_process.wait_until_held(holder)
    token = client.get_registered_model(name).tags["token"]
    os.killpg(holder.pid, signal.SIGKILL)  # the whole "container", its holder included
    holder.wait()
    with pytest.raises(RegistryError, match=r"^@champion is locked by holder "):
        acquire_once(registry, "impatient", wait_s=0.5)  # sees it unchanged 0.5 s, not 2
    with champion_lock(registry, "taker", wait_s=10):
        assert holder_tag(client, name) == "taker"
    assert holder_tag(client, f"{name}.stale.{token}") == "holder"


# --- live holders that a check by hostname, pid or wall clock judged gone (issue 25) -----


def test_a_live_holder_in_another_pid_namespace_with_this_hostname_keeps_the_lock(
    registry: Registry, started: list[subprocess.Popen[str]]
) -> None:
    """Two containers of one compose service scaled with a fixed `hostname:`: the other's
    holder has a pid that runs no process here, and it is alive."""
    skip_unless_pid_namespaces()
    argv = lock_process.argv(registry.name, "hold")
    holder, pid = start_in_own_pid_namespace(
        argv, env=lock_process.environ(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    started.append(holder)
    lock_process.wait_until_held(holder)
    held = registry.client.get_registered_model(lock_name(registry.name)).tags
    assert (held["pid"], held["host"]) == (str(pid), this_process().host)
    assert not Path(f"/proc/{pid}").exists()  # no process of this namespace has its pid
    with pytest.raises(RegistryError, match=r"^@champion is locked by holder "):
        acquire_once(registry, "waiter", wait_s=1)
    assert registry.client.get_registered_model(lock_name(registry.name)).tags == held

    holder.communicate(
        input="", timeout=lock_process.PROCESS_WAIT_S
    )  # it releases the lock and exits
    assert holder.returncode == 0
    with champion_lock(registry, "waiter", wait_s=1):
        assert holder_tag(registry.client, lock_name(registry.name)) == "waiter"


def test_a_waiter_whose_clock_runs_two_minutes_ahead_does_not_take_a_live_lock(
    registry: Registry,
) -> None:
    if shutil.which("faketime") is None:
        pytest.fail("libfaketime is not installed: run `make test-packages`")
    with champion_lock(registry, "live holder") as lease:
        waiter = lock_process.run_waiter(registry.name, "faketime", "-f", "+120s")
        assert (waiter.returncode, waiter.stdout.split(" (")[0]) == (
            2, "@champion is locked by live holder"
        )  # fmt: skip
        lease.confirm()  # still ours: the move would go on
    assert no_lock_left(registry)


# --- the holder's lease ------------------------------------------------------------------


def test_the_holder_renews_its_lease_when_it_confirms(registry: Registry) -> None:
    client, name = registry.client, lock_name(registry.name)
    with champion_lock(registry, "slow holder", lease_s=8) as lease:
        first = client.get_registered_model(name).tags["expires_ms"]
        time.sleep(2.1)  # past a quarter of its lease
        lease.confirm()
        renewed = client.get_registered_model(name).tags["expires_ms"]
        assert int(renewed) > int(first)


def test_a_holder_too_late_in_its_lease_refuses_to_move(registry: Registry) -> None:
    with champion_lock(registry, "stalled holder", lease_s=1) as lease:
        time.sleep(0.8)  # three quarters of its lease are gone: a waiter may take it now
        with pytest.raises(RegistryError) as late:
            lease.confirm()
    assert str(late.value).startswith(f"held the lock {lock_name(registry.name)} ")
    assert str(late.value).endswith(
        "s into its 1s lease, too late to move safely (a waiter may be taking it over); nothing "
        "moved. Re-run the command"
    )
    assert no_lock_left(registry)


# --- locks mt did not write ----------------------------------------------------------------

GARBLED = {
    "no-token": ({"token": "-"}, "it has no tag 'token'"),
    "no-pid": ({"pid": "-"}, "it has no tag 'pid'"),
    "odd-token": ({"token": "lock"}, "its token 'lock' is not one mt makes"),
    "bad-pid": ({"pid": "12x"}, "its tag pid is '12x', not a whole number"),
    "long-lease": ({"lease_s": "3600"}, "it declares a 3600s lease, beyond 1 to 60s"),
}


@pytest.mark.parametrize("case", sorted(GARBLED))
def test_a_lock_mt_did_not_write_is_refused_at_once(registry: Registry, case: str) -> None:
    tags, problem = GARBLED[case]
    forged_lock(registry, **tags)
    name = lock_name(registry.name)
    with pytest.raises(RegistryError) as refused:
        acquire_once(registry, "mover", wait_s=60)  # a wait would end otherwise
    assert str(refused.value) == (
        f"the @champion lock of {registry.name}, registered model {name}, was not written by "
        f"mt ({problem}): nothing moved; {ADMIN_FIX} {name} (MLflow UI, or "
        f"MlflowClient().delete_registered_model({name!r}))"
    )


def test_a_lock_expiring_in_2100_is_refused_at_once(registry: Registry) -> None:
    """Any logged-in user may create the lock model; one with a far expiry blocked every
    promotion while waiters believed its `expires_ms`."""
    forged_lock(registry, expires_ms="4102444800000")
    with pytest.raises(RegistryError) as refused:
        acquire_once(registry, "mover", wait_s=60)  # a wait would end otherwise
    created = registry.client.get_registered_model(lock_name(registry.name)).creation_timestamp
    assert (
        f"(it expires 2100-01-01T00:00:00+00:00, further than any lease from its creation at "
        f"{_iso(created)}): nothing moved; {ADMIN_FIX}"
    ) in str(refused.value)


def test_a_waiter_that_cannot_take_over_paces_itself_and_gives_up(registry: Registry) -> None:
    """A gone holder whose stale name is taken: every takeover fails. The waiter once looped
    on this without a pause or a deadline (350,319 create calls in 1.5 s)."""
    client, name = registry.client, lock_name(registry.name)
    finished = subprocess.Popen(["true"])
    finished.wait()
    past = str(int(time.time() * 1000) - 1000)  # what older mt took for "gone"
    token = forged_lock(registry, pid=str(finished.pid), expires_ms=past)
    client.create_registered_model(f"{name}.stale.{token}")
    waiter = lock_process.run_waiter(registry.name)
    assert (waiter.returncode, waiter.stdout.split(" (")[0]) == (
        2, "@champion is locked by forged"
    )  # fmt: skip
