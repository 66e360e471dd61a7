"""Who a process is, told apart across hosts and containers: to judge whether a writer is gone.

A pid alone names a process only inside one pid namespace on one boot of one kernel: two
containers started with the same `hostname:` (e.g. `docker compose --scale` of a service that
sets one) number their processes independently, so pid 57 of one is no process of the other,
and a pid is reused once its process exits. A process is therefore recorded as its host (for
people), its namespace key (a hash of the kernel's boot id and the inode of its pid namespace:
equal exactly for processes that see the same pids), its pid, and its start time in clock ticks
after boot (`/proc/<pid>/stat`, field 22), which a reused pid does not share.

Only a process of this namespace can be judged gone, and then only when its pid no longer runs
or runs a process started at another time. A process of another namespace or host never is.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

UNKNOWN_NAMESPACE = "unknown"  # no /proc to read: nobody, this process included, is judged gone


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    namespace: str
    pid: int
    started: int  # clock ticks after boot; 0 when unknown


def this_process() -> ProcessIdentity:
    """This process, as its writes record it."""
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), namespace_key(), pid, start_ticks(pid) or 0)


@functools.cache
def namespace_key() -> str:
    """12 hex digits naming this kernel boot's pid namespace of this process."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return UNKNOWN_NAMESPACE
    return hashlib.sha256(f"{boot_id}/{pid_namespace}".encode()).hexdigest()[:12]


def start_ticks(pid: int) -> int | None:
    """When process `pid` of this namespace started (clock ticks after boot); None if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ')': fields 3 on
    # follow the last ')'. Field 22, the start time, is the 20th of those.
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_gone(process: ProcessIdentity) -> bool:
    """Whether `process` has certainly exited: it belongs to this namespace, and its pid runs no
    process or one started at another time (a zombie still counts as running)."""
    if process.namespace != namespace_key() or process.namespace == UNKNOWN_NAMESPACE:
        return False
    started = start_ticks(process.pid)
    return started is None or started != process.started
