"""An exclusive lock between processes of this host: flock(2) on a lock file.

For state that several processes may change at once (the drift pool, the watch history): the
holder finishes its read-modify-write before the next one reads. The kernel drops the lock
when its holder's file is closed or the holder dies, so a killed process never leaves it held.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_flock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock of `lock_file` (created, with its folder) until the block ends."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # closing the file (or dying) releases it
        yield
