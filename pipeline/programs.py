"""The programs mt starts (git, dvc), by absolute path.

A bare name would be looked up on PATH at every call, by whichever process inherits it; one
lookup here, with the venv's own bin first (dvc is installed there, and a worker started by
Airflow may not have it on PATH), makes the program that runs the one this venv installed, and
its absence one line instead of a FileNotFoundError traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pipeline.errors import PipelineError


def program(name: str, search_path: str | None = None) -> str:
    """The absolute path of `name`: the venv's bin first, then `search_path` (default PATH)."""
    venv_bin = str(Path(sys.executable).parent)
    path = search_path if search_path is not None else os.environ.get("PATH", "")
    found = shutil.which(name, path=os.pathsep.join(filter(None, [venv_bin, path])))
    if found is None:
        raise PipelineError(
            f"`{name}` not found in {venv_bin} or on PATH; install it (make install installs "
            "dvc; git comes from the system's packages)"
        )
    return found
