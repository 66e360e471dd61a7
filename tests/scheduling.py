"""How `make test`'s two pytest-xdist workers share the suite (docs/testing.md, *Two workers*).

Whole modules go to one worker (`--dist loadfile`), so a module's Airflow, Celery stack or
network namespaces start once. On top of that:

- **The waiting modules share one worker.** The live-orchestration modules spend most of their
  time waiting (on Airflow's scheduler, Celery, a heartbeat timeout, a deferral), while the rest
  of the suite keeps a core busy. Two waiting modules side by side left the 2-core machine
  idle for minutes; as one scope they run one after another on the first worker, beside the
  CPU-bound modules on the other.
- **Costliest first**: the rest follow COSTLIEST_MODULES' order, so no long module is left for
  the end.
- `MT_TEST_TIMELINE=FILE` appends one line per test (worker, start, end, test id, and the CPU
  seconds of the worker and of the subprocesses it waited for): what ran beside what and what
  cost the CPU, for `benchmarks/ci_time.py`-style investigations.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Most of their time is spent waiting on live orchestration, not computing.
WAITING_MODULES = (
    "test_multi_host", "test_celery_topology", "test_airflow_live", "test_monitoring_live",
)  # fmt: skip
WAITING_SCOPE = "live orchestration (tests/scheduling.py)"

# The costliest of the other modules, most costly first (`--durations` of a full run on a
# 2-core AMD EPYC, 2026-12-06).
COSTLIEST_MODULES = (
    "test_train_faults", "test_registry_faults", "test_sweep", "test_checkpoint_mirror",
    "test_registry_postgres", "test_jax_backend", "test_tasks_end_to_end", "test_copy_attention",
    "test_dag", "test_train", "test_validate", "test_champion_lock", "test_registry_auth",
    "test_serving", "test_decoding",
)  # fmt: skip


def cost_rank(item: pytest.Item) -> int:
    """The waiting modules first (one scope), then the costliest, then the rest."""
    module = item.path.stem
    if module in WAITING_MODULES:
        return WAITING_MODULES.index(module)
    if module in COSTLIEST_MODULES:
        return len(WAITING_MODULES) + COSTLIEST_MODULES.index(module)
    return len(WAITING_MODULES) + len(COSTLIEST_MODULES)


def scope_of(nodeid: str) -> str:
    """The unit a worker takes whole: the module, or the waiting modules together."""
    module = nodeid.split("::", 1)[0]
    return WAITING_SCOPE if Path(module).stem in WAITING_MODULES else module


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` with the waiting modules as one scope; other modes as xdist has them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WaitingTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return WaitingTogether(config, log)


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Clock:
    """Wall time and CPU time at one moment; children count once they have been waited for
    (a server a test starts and stops counts, one that outlives the test does not)."""

    wall: float
    own_cpu: float
    children_cpu: float

    @classmethod
    def now(cls) -> Clock:
        own, children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
        return cls(time.time(), own, children)


def record_timeline(item: pytest.Item, started: Clock) -> None:
    """One line of MT_TEST_TIMELINE, when set."""
    target = os.environ.get("MT_TEST_TIMELINE")
    if not target:
        return
    ended = Clock.now()
    line = {
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "start": started.wall,
        "end": ended.wall,
        "test": item.nodeid,
        "own_cpu_s": round(ended.own_cpu - started.own_cpu, 2),
        "children_cpu_s": round(ended.children_cpu - started.children_cpu, 2),
    }
    with open(target, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(line) + "\n")
