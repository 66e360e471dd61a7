"""Write outputs all-or-nothing: into a temp path beside the target, then rename.

A stage that fails half way leaves the previous outputs (or none) in place, never a mix.
A process killed half way can leave its temp path (or the old directory it moved aside)
behind. Each name carries its writer (pipeline/process_identity.py: pid, start time and pid
namespace, since containers sharing a hostname and a volume number their pids independently),
and the next write of the same target deletes those whose writer is certainly gone, except an
old directory whose target is missing (the writer died between its two renames): that one is
put back, so nothing is lost. A writer of another pid namespace or host is never judged gone.
Names of mt before that (`<pid>@<host>`) are judged as then: by the pid, on this host.
Files are fsynced before they are renamed into place and their folder after, so a power cut
leaves the old output or the new one, not an empty file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.pause_points import pause_point
from pipeline.process_identity import ProcessIdentity, is_gone, this_process


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# A writer in a temp path's name: `<pid>-<start ticks>-<namespace key>`.
WRITER = r"(\d+)-(\d+)-([0-9a-f]{12}|unknown)"
TEMP_SUFFIX = r"\.[a-z0-9_]+\.tmp"  # tempfile's random part, then .tmp


def writer_tag() -> str:
    """This process, as it appears in the names of its temp paths."""
    me = this_process()
    return f"{me.pid}-{me.started}-{me.namespace}"


def tagged_writer_is_gone(tag: str) -> bool:
    """Whether the writer a `writer_tag()` names has certainly exited (False for no tag)."""
    found = re.fullmatch(WRITER, tag)
    if found is None:
        return False
    pid, started, namespace = found.groups()
    return is_gone(ProcessIdentity("", namespace, int(pid), int(started)))


def remove_leftovers(target: Path) -> list[Path]:
    """Delete temp paths of `target` whose writers are gone; what was deleted."""
    removed = []
    for entry in target.parent.glob(f".{target.name}.*") if target.parent.is_dir() else []:
        if not _writer_is_gone(target, entry.name):
            continue
        if entry.name.startswith(f".{target.name}.old.") and not target.exists():
            os.replace(entry, target)  # its writer died between the renames: the output is back
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry)
    return removed


def _writer_is_gone(target: Path, name: str) -> bool:
    """Whether `name` is a temp path of `target` whose writer has certainly exited."""
    stem = re.escape(target.name)
    found = re.fullmatch(rf"\.{stem}\.(?:old\.{WRITER}|{WRITER}{TEMP_SUFFIX})", name)
    if found:
        pid, started, namespace = (part for part in found.groups() if part is not None)
        return is_gone(ProcessIdentity("", namespace, int(pid), int(started)))
    host = re.escape(socket.gethostname())
    before = re.fullmatch(rf"\.{stem}\.(?:old\.)?(\d+)@{host}(?:\..*\.tmp)?", name)
    return before is not None and not process_alive(int(before.group(1)))


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host is alive (a zombie counts as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8, newlines as given) in one rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp"
    )
    try:
        # mkstemp makes 0600 files; outputs should get the usual permissions.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_text(payload: Any) -> str:
    """Pretty, key-sorted JSON (stable diffs for `dvc metrics diff`), as the files hold it."""
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, payload: Any) -> None:
    """Replace `path` with `json_text(payload)`."""
    atomic_write_text(path, json_text(payload))


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    prefix = f".{target.name}.{writer_tag()}."
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix, suffix=".tmp"))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700 directories
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target)


def fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_tree(root: Path) -> None:
    """Every file under `root` and every folder, on disk before `root` is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            handle = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        fsync_directory(Path(folder))


def _swap_in(staging: Path, target: Path) -> None:
    """Move the old target aside, rename staging into place, then delete the old one."""
    _fsync_tree(staging)
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old.{writer_tag()}")
        os.replace(target, retired)
        pause_point(f"atomic.old_moved_aside.{target.name}")
    os.replace(staging, target)
    fsync_directory(target.parent)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def remove_outputs(*paths: Path) -> None:
    """Delete stale outputs of a stage that is about to fail, so nothing downstream reads them."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
