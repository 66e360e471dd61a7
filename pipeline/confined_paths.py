"""Paths named by someone the pipeline does not trust, kept inside a root folder.

An Airflow user's Trigger form or an asset-event producer may name files the worker reads or
writes. Such a path is accepted only when it lies inside the root a param of params.yaml sets:

- the root is resolved strictly (it must exist on this worker), so a symlinked root still
  compares by what it really is;
- the path has no `..` and is compared with `Path.is_relative_to` against the root, as given
  or resolved;
- no component below the root is a symlink (a link inside the root could point anywhere), what
  exists of it is checked, and a missing tail (an output not written yet) cannot be one.

The check names what the path is and which param sets the root, so the message says the fix.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ConfigError


def real_root(root: Path, root_key: str) -> Path:
    """`root` resolved strictly: an existing folder, or a ConfigError naming `root_key`."""
    try:
        resolved = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        resolved = None
    if resolved is None or not resolved.is_dir():
        raise ConfigError(
            f"{root_key} {root}: not a folder on this worker; create it, or set {root_key} in "
            "params.yaml"
        )
    return resolved


def inside_root(path: Path, root: Path, what: str, root_key: str) -> Path:
    """`path` (absolute) as it lies inside `root`, with no `..` and no symlink below the root;
    else a ConfigError naming `what`, the path and `root_key`."""
    resolved_root = real_root(root, root_key)
    below = _part_below(path, root, resolved_root)
    if below is None:
        raise ConfigError(
            f"{what} {path}: outside {root_key} ({resolved_root}); put the file under it, or "
            f"change {root_key} in params.yaml"
        )
    step = resolved_root
    for part in below.parts:
        step = step / part
        if step.is_symlink():
            raise ConfigError(
                f"{what} {path}: {step} is a symlink; give a path with no symlink, inside "
                f"{root_key} ({resolved_root})"
            )
    return resolved_root / below


def _part_below(path: Path, root: Path, resolved_root: Path) -> Path | None:
    """The part of `path` below the root (given or resolved), or None when it is not below it
    or climbs with `..`."""
    if not path.is_absolute() or ".." in path.parts:
        return None
    for base in (root, resolved_root):
        if path.is_relative_to(base):
            return path.relative_to(base)
    return None
