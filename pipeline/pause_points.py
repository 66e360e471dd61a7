"""Named points where a fault-injection test can hold a real `mt` process and SIGKILL it there.

Test-only. Some windows are too short to hit by timing: between evaluate's two output renames,
between the audit entry of a `@champion` move and the move itself. A test starts the process
with `MT_TEST_PAUSE_AT=<point>` and `MT_TEST_PAUSE_DIR=<dir>`; on reaching `<point>` the
process writes `<dir>/<point>.paused` (holding its pid) and waits until `<dir>/<point>.resume`
exists. The test then kills it for real, or lets it go on. Without `MT_TEST_PAUSE_AT` (always,
outside tests) a point is one environment lookup.

Points (name: where the process stops):
- `train.epochs_checkpointed`: every epoch is checkpointed, no train output written yet
- `train.epoch_mirrored`: an epoch's checkpoint is uploaded to MLflow (MT_CHECKPOINT_MIRROR)
- `evaluate.between_outputs`: reports/eval/ is replaced, metrics.json not yet
- `atomic.old_moved_aside.<name>`: a directory output `<name>` has been moved aside and the
  new one is not in place yet
- `registry.gate_decided`: the gate decided to promote, before it takes the champion lock and
  moves the alias (the race test holds one registration here)
- `registry.champion_move_recorded`: the audit run of a `@champion` move exists, the alias
  has not moved
- `registry.champion_alias_moved`: the alias has moved, the audit run is not yet FINISHED
- `batch.request_translated`: a batch translation has sent a request (each one), nothing of
  its output written yet
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT_ENV = "MT_TEST_PAUSE_AT"
PAUSE_DIR_ENV = "MT_TEST_PAUSE_DIR"
POLL_S = 0.05


def pause_point(name: str) -> None:
    """Hold here while a test has asked to pause at `name`; return at once otherwise."""
    if os.environ.get(PAUSE_AT_ENV) != name:
        return
    directory = Path(os.environ.get(PAUSE_DIR_ENV) or ".")
    resume = directory / f"{name}.resume"
    (directory / f"{name}.paused").write_text(str(os.getpid()), encoding="utf-8")
    while not resume.exists():
        time.sleep(POLL_S)
