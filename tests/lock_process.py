"""A champion-lock holder or waiter as a process of its own (a holder to SIGKILL, a waiter on a
skewed clock or in another pid namespace), and how tests start one. The store and the login
come from the environment, as for `mt`.

    python -m tests.lock_process MODEL hold [--lease-s S]  # "held", then holds until stdin ends
    python -m tests.lock_process MODEL wait [--wait-s S]   # "acquired", or the refusal; exit 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.paths import project_paths
from pipeline.registry.errors import RegistryError
from pipeline.registry.lock import LEASE_S, champion_lock
from pipeline.registry.store import Registry
from tests.mlflow_server import venv_environ

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESS_WAIT_S = 120  # a guard against a hung child, not a timing assertion


def argv(model: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.lock_process", model, *args]


def environ(**extra: str) -> dict[str, str]:
    """This test's environment (its store, its login), with `extra` over it."""
    return {**venv_environ(), "PYTHONPATH": str(REPO_ROOT), **extra}


def start_holder(
    model: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A holder of `model`'s lock, once it says it holds it; a session of its own."""
    process = subprocess.Popen(
        argv(model, "hold", *args), env=env or environ(), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    wait_until_held(process)
    return process


def wait_until_held(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line != "held\n":
        process.kill()
        pytest.fail(f"the holder did not take the lock: {line!r}{process.communicate()}")


def run_waiter(model: str, *command_prefix: str) -> subprocess.CompletedProcess[str]:
    """A waiter of up to 1 s, run to its end (`command_prefix`: e.g. faketime's)."""
    return subprocess.run(
        [*command_prefix, *argv(model, "wait", "--wait-s", "1")], env=environ(),
        capture_output=True, text=True, timeout=PROCESS_WAIT_S, check=False,
    )  # fmt: skip


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("role", choices=["hold", "wait"])
    parser.add_argument("--lease-s", type=int, default=LEASE_S)
    parser.add_argument("--wait-s", type=float, default=5)
    options = parser.parse_args(args)
    registry = Registry.connect(project_paths(), options.model)
    try:
        with champion_lock(registry, f"{options.role}er", options.wait_s, options.lease_s):
            print("held" if options.role == "hold" else "acquired", flush=True)
            if options.role == "hold":
                sys.stdin.read()  # until the test closes our stdin (or kills us)
    except RegistryError as error:
        print(error, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
