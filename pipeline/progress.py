"""Progress of long CLI work on stderr: a tqdm bar where a person watches, plain lines elsewhere.

Shared by `mt translate` (pipeline/translator.py) and `mt translate-batch`
(pipeline/monitor/batch_model.py); imports nothing heavy, so a command whose model never needs
Keras does not load it for a progress bar.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)

# Off a terminal, one plain progress line per this fraction of the work (a tenth).
PROGRESS_LINES = 10

T = TypeVar("T")


def progress_on_terminal() -> bool:
    """tqdm's bar only where a person watches it: stderr is a terminal, and not under CI."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true"


def with_progress(items: Sequence[T], what: str, unit: str) -> Iterator[T]:
    """`items` one by one, showing how far the loop has come on stderr.

    On a terminal, tqdm's bar. In a log file or CI a bar's carriage-return frames become one
    line per update, so there each tenth of the items done is one plain log line instead
    ("translating: batch 3 of 30 (10%)"), at most ten per loop.
    """
    if progress_on_terminal():
        yield from tqdm(items, desc=what, unit=unit)
        return
    total = len(items)
    tenths = {-(-total * step // PROGRESS_LINES) for step in range(1, PROGRESS_LINES + 1)}
    for done, item in enumerate(items, start=1):
        yield item
        if done in tenths:
            log.info("%s: %s %d of %d (%d%%)", what, unit, done, total, 100 * done // total)
