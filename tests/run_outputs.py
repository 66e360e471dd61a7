"""What a fault test checks in a project after a pipeline run: nothing lost, nothing half-made.

The training checkpoint's progress, the history the train stage wrote, the outputs against
`dvc.lock` and leftover staging files of the atomic writers.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.airflow_harness import VENV_BIN


def recorded_epochs(project: Path) -> int:
    """Epochs the in-flight training has finished (its checkpoint's history rows)."""
    store = project / "models" / "checkpoints" / "epochs.json"
    try:
        return len(json.loads(store.read_text(encoding="utf-8")))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def history_epochs(project: Path) -> list[int]:
    """The epoch column of reports/train/history.csv."""
    with (project / "reports" / "train" / "history.csv").open(encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def dvc_changed_outs(project: Path) -> dict[str, Any]:
    """Stages whose outputs on disk differ from dvc.lock (`dvc status`), with the details."""
    done = subprocess.run(
        [str(VENV_BIN / "dvc"), "status", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    status: dict[str, list[Any]] = json.loads(done.stdout or "{}")
    return {
        stage: change
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict) and "changed outs" in change
    }


def leftover_temp_files(project: Path) -> list[str]:
    """Staging files of the atomic writers (`.name.*.tmp`) left in the outputs."""
    folders = [project / name for name in ("data", "models", "reports")]
    return sorted(
        str(path.relative_to(project))
        for folder in folders
        for path in folder.rglob("*.tmp")
        if path.name.startswith(".")
    )
