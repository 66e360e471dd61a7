"""A process in a pid namespace of its own with this host's name: a second container of a
service scaled with a fixed `hostname:` (docker compose --scale), made with util-linux's
`unshare --pid --fork --mount-proc` (root). Its pid is chosen to be one that runs no process
here, so a check by hostname and pid alone would judge it dead while it runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text(encoding="ascii"))


def skip_unless_pid_namespaces() -> None:
    """Skip (with the reason) where a pid namespace cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("a pid namespace needs root (CI runs the tests as root)")
    if shutil.which("unshare") is None:
        pytest.skip("`unshare` (util-linux) is not installed")


def pid_unused_here() -> int:
    """A pid no process of this namespace has now."""
    start = PID_MAX // 2
    return next(pid for pid in range(start, PID_MAX) if not Path(f"/proc/{pid}").exists())


def start_in_own_pid_namespace(argv: list[str], **popen: Any) -> tuple[subprocess.Popen[str], int]:
    """Start `argv` in a new pid namespace as pid P, P unused here; the process and P.

    bash is the namespace's pid 1; it sets the namespace's last pid to P - 1 so that `argv`,
    its child, gets P, then waits for it (the namespace ends with its pid 1). All of them are
    one new session: `os.killpg(process.pid, SIGKILL)` kills the whole "container".
    """
    pid = pid_unused_here()
    script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?'
    command = ["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script, "bash", *argv]
    return subprocess.Popen(command, text=True, start_new_session=True, **popen), pid
