"""The pool of small incoming batches: lines waiting to be judged for drift together.

A batch of fewer than monitor.min_drift_lines lines is too small for a drift verdict
(pipeline/monitor/drift.py). Its lines wait here, one JSON file per batch in
reports/monitoring/drift/pool/, until the pool holds min_drift_lines lines; drift.py then
judges them as one batch and removes them. The lines are kept as a JSON list, so any string
comes back exactly as it was checked.

Every change happens under an exclusive flock of pool/.lock: translate_batch's mapped tasks and
a hand-run `mt translate-batch` may check small batches at the same moment, and each batch's
lines must be judged once. The kernel drops the flock when its holder dies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import atomic_write_json
from pipeline.errors import DataError
from pipeline.file_lock import exclusive_flock

LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Pool:
    """The pool's folder; use it only inside `locked_pool`."""

    directory: Path

    def add(self, batch_id: str, lines: Sequence[str]) -> None:
        """Put a batch's lines in the pool (again: the same lines, replaced)."""
        atomic_write_json(self.directory / f"{batch_id}.json", {"lines": list(lines)})

    def members(self) -> tuple[str, ...]:
        """The batch ids waiting, by name."""
        return tuple(sorted(path.stem for path in self.directory.glob("*.json")))

    def lines_of(self, members: Sequence[str]) -> list[str]:
        """The lines of `members`, in that order."""
        return [line for batch_id in members for line in self._read(batch_id)]

    def remove(self, members: Sequence[str]) -> None:
        for batch_id in members:
            (self.directory / f"{batch_id}.json").unlink()

    def _read(self, batch_id: str) -> list[str]:
        path = self.directory / f"{batch_id}.json"
        try:
            lines = json.loads(path.read_text(encoding="utf-8"))["lines"]
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise TypeError("`lines` is not a list of strings")
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(
                f"{path}: not a pooled batch ({type(error).__name__}: {error}); remove the file "
                "(that batch's lines are then left out of the pool)"
            ) from None
        return lines


@contextmanager
def locked_pool(directory: Path) -> Iterator[Pool]:
    """The pool in `directory`, held exclusively until the block ends."""
    with exclusive_flock(directory / LOCK_FILE):
        yield Pool(directory)
