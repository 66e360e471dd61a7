"""Where a translate_batch request may read and write: `monitor.input_root`, `output_root`.

A request of the DAG comes from its Trigger form or an asset event on monitor.incoming_asset:
whoever may trigger it or emit the event names the paths, so they are not trusted. Its input
must lie inside the input root and its output inside the output root (pipeline/confined_paths.py:
resolved strictly, no `..`, no symlink below the root), and neither may lie inside the project
checkout: the request may not read `.dvc/config.local` or `mlruns.db`, nor overwrite
`params.yaml`, `dvc.lock`, a DAG file or a report. Empty roots mean `orchestration.data_root`
for inputs and the folder of `monitor.translated_asset` for outputs.

`mt translate-batch` run by a person at the shell is not confined: the person names the paths
and could read or write them anyway (docs/monitoring.md). The byte cap and the regular-file
check (batch_input.py) hold for both.

Light imports only: pipeline/orchestration/batch_request.py reads this when a run is planned.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, local_folder_of
from pipeline.confined_paths import inside_root, real_root
from pipeline.errors import ConfigError

INPUT_ROOT_KEY = "monitor.input_root"
OUTPUT_ROOT_KEY = "monitor.output_root"


@dataclass(frozen=True)
class BatchRoots:
    """The folders a DAG request may read in and write in, and the project it may not touch."""

    inputs: Path
    outputs: Path
    project: Path

    def input_path(self, path: Path) -> Path:
        """An input (file or folder) inside the input root, outside the project; it exists."""
        inside = inside_root(path, self.inputs, "input", INPUT_ROOT_KEY)
        self._outside_project(inside, "input", INPUT_ROOT_KEY)
        if not inside.exists():
            raise ConfigError(f"input {path}: not found; give a text file or a folder")
        return inside

    def output_path(self, path: Path) -> Path:
        """An output (file or folder) inside the output root, outside the project."""
        inside = inside_root(path, self.outputs, "output", OUTPUT_ROOT_KEY)
        self._outside_project(inside, "output", OUTPUT_ROOT_KEY)
        return inside

    def _outside_project(self, path: Path, what: str, root_key: str) -> None:
        project = self.project.resolve()
        if path.is_relative_to(project):
            raise ConfigError(
                f"{what} {path}: inside the project checkout ({project}); a request may not "
                f"read or write the project's files, use a path under {root_key} outside it"
            )


def batch_roots(config: Config, project: Path) -> BatchRoots:
    """The roots params.yaml sets for DAG requests, absolute (relative ones under `project`).
    The input root must be a folder on this worker; the output root is made when missing, as
    any output folder is (params.yaml names it, not the request)."""
    monitor = config.monitor
    inputs = project / (monitor.input_root or config.orchestration.data_root)
    outputs = project / (monitor.output_root or _default_output_root(monitor.translated_asset))
    with contextlib.suppress(OSError):  # a path that cannot be a folder: real_root says so
        outputs.mkdir(parents=True, exist_ok=True)
    real_root(inputs, INPUT_ROOT_KEY)
    real_root(outputs, OUTPUT_ROOT_KEY)
    return BatchRoots(inputs, outputs, project)


def _default_output_root(translated_asset: str) -> Path:
    folder = local_folder_of(translated_asset)
    if folder is None:
        raise ConfigError(
            f"{OUTPUT_ROOT_KEY} is empty and monitor.translated_asset {translated_asset!r} is "
            f"not a local file:// URI, so there is no output root; set {OUTPUT_ROOT_KEY}"
        )
    return folder
