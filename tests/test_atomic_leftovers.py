"""Temp paths a killed writer left beside an output are removed by the next write of it; a
live writer's, in this pid namespace or another (a second container with this hostname), never.

Names `<pid>@<host>` are those of mt before writers were told apart by namespace.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.atomic import atomic_directory, atomic_write_text, remove_leftovers
from pipeline.pause_points import PAUSE_AT_ENV, PAUSE_DIR_ENV
from pipeline.process_identity import start_ticks, this_process
from tests.conftest import REPO_ROOT
from tests.pid_namespace import skip_unless_pid_namespaces, start_in_own_pid_namespace

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_directory_write_removes_what_dead_writers_on_this_host_left(tmp_path: Path) -> None:
    dead = dead_pid()
    names = {
        "dead staging": f".eval.{dead}@{HOST}.k3j2h1g0.tmp",
        "dead moved-aside old output": f".eval.old.{dead}@{HOST}",
        "live writer": f".eval.{os.getpid()}@{HOST}.a1b2c3d4.tmp",
        "another host's writer": f".eval.{dead}@elsewhere.a1b2c3d4.tmp",
        "another output's staging": f".evaluation.{dead}@{HOST}.a1b2c3d4.tmp",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "samples.md").write_text("half written", encoding="utf-8")
    with atomic_directory(tmp_path / "eval") as staging:
        (staging / "samples.md").write_text("whole", encoding="utf-8")
    kept = ("live writer", "another host's writer", "another output's staging")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["eval", *(names[what] for what in kept)]
    )
    assert (tmp_path / "eval" / "samples.md").read_text(encoding="utf-8") == "whole"


def test_a_file_write_removes_a_dead_writers_temp_file(tmp_path: Path) -> None:
    stale = tmp_path / f".metrics.json.{dead_pid()}@{HOST}.x7y8z9.tmp"
    stale.write_text('{"half": ', encoding="utf-8")
    atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_an_old_output_whose_writer_died_between_the_renames_is_put_back(tmp_path: Path) -> None:
    """The writer moved the old `eval` aside and was killed before its new one was in place:
    the next write restores the old one first, so when that write fails too, nothing is lost."""
    old = tmp_path / f".eval.old.{dead_pid()}@{HOST}"
    old.mkdir()
    (old / "samples.md").write_text("the old output", encoding="utf-8")
    failing = pytest.raises(RuntimeError, match="the new output failed")
    with failing, atomic_directory(tmp_path / "eval") as staging:
        (staging / "samples.md").write_text("half", encoding="utf-8")
        raise RuntimeError("the new output failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
    assert (tmp_path / "eval" / "samples.md").read_text(encoding="utf-8") == "the old output"


def test_files_and_their_folder_are_fsynced_before_and_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(handle: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{handle}"))
        real_fsync(handle)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_text(tmp_path / "metrics.json", "{}\n")
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / ".metrics.json."))  # the temp file, before
    assert synced[1] == str(tmp_path)  # the folder, after the rename


def test_a_killed_model_save_leaves_nothing_the_next_save_keeps(tmp_path: Path) -> None:
    import keras

    from pipeline.training.outputs import stage_model

    me, gone = this_process(), dead_pid()
    parent_started = start_ticks(os.getppid())
    partials = {
        "dead, this namespace": (f"{gone}-{me.started}-{me.namespace}", False),
        "a reused pid (started at another time)": (
            f"{me.pid}-{me.started + 1}-{me.namespace}",
            False,
        ),
        "dead, older mt's name": (f"{gone}", False),
        "a save still running": (f"{os.getppid()}-{parent_started}-{me.namespace}", True),
        "another container's save": (f"{gone}-{me.started}-abcdef012345", True),
        "older mt's name, running": (f"{os.getppid()}", True),
    }
    for writer, _ in partials.values():
        (tmp_path / f".seq2seq.{writer}.tmp.keras").write_bytes(b"half a model")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stage_model(model, tmp_path / "seq2seq.keras")
    kept = [f".seq2seq.{writer}.tmp.keras" for writer, stays in partials.values() if stays]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "seq2seq.keras"])


# --- writers told apart by pid namespace and start time (issue 25) --------------------------


def test_a_writer_of_this_namespace_is_judged_by_its_pid_and_start_time(tmp_path: Path) -> None:
    me, dead = this_process(), dead_pid()
    names = {
        "dead writer's staging": f".eval.{dead}-{me.started}-{me.namespace}.k3j2h1g0.tmp",
        "dead writer's old output": f".eval.old.{dead}-{me.started}-{me.namespace}",
        "reused pid's staging": f".eval.{me.pid}-{me.started + 1}-{me.namespace}.q1w2e3r4.tmp",
        "live writer's staging": f".eval.{me.pid}-{me.started}-{me.namespace}.a1b2c3d4.tmp",
        "another namespace's writer": f".eval.{dead}-{me.started}-0123456789ab.a1b2c3d4.tmp",
        "a writer that could not read /proc": f".eval.{dead}-0-unknown.a1b2c3d4.tmp",
    }
    (tmp_path / "eval").mkdir()
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = remove_leftovers(tmp_path / "eval")
    gone = ("dead writer's staging", "dead writer's old output", "reused pid's staging")
    assert sorted(path.name for path in removed) == sorted(names[what] for what in gone)
    kept = [names[what] for what in names if what not in gone]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["eval", *kept])


WRITE_EVAL = """
import sys
from pathlib import Path
from pipeline.atomic import atomic_directory

with atomic_directory(Path(sys.argv[1])) as staging:
    (staging / "samples.md").write_text("the new output", encoding="utf-8")
"""


def test_a_live_writer_in_another_pid_namespace_with_this_hostname_keeps_its_paths(
    tmp_path: Path,
) -> None:
    """Two containers of one compose service scaled with a fixed `hostname:`, writing to one
    volume: the other's writer has a pid that runs no process here, and it is alive. It is
    held between its two renames, its old output moved aside and its new one not yet in place,
    while this namespace cleans up before its own write of that target (`remove_leftovers`,
    which every write runs first)."""
    skip_unless_pid_namespaces()
    target, pauses = tmp_path / "out" / "eval", tmp_path / "pauses"
    pauses.mkdir()
    with atomic_directory(target) as staging:
        (staging / "samples.md").write_text("the old output", encoding="utf-8")
    point = "atomic.old_moved_aside.eval"
    env = {
        **os.environ,
        PAUSE_AT_ENV: point,
        PAUSE_DIR_ENV: str(pauses),
        "PYTHONPATH": str(REPO_ROOT),
    }
    argv = [sys.executable, "-c", WRITE_EVAL, str(target)]
    writer, pid = start_in_own_pid_namespace(argv, env=env, stderr=subprocess.PIPE)
    try:
        wait_for(pauses / f"{point}.paused", writer)
        during = sorted(path.name for path in target.parent.iterdir())
        writers = [re.match(r"\.eval\.(old\.)?\d+", name) for name in during]
        assert [found and found.group() for found in writers] == [
            f".eval.{pid}",
            f".eval.old.{pid}",
        ]
        assert not Path(f"/proc/{pid}").exists()  # no process of this namespace has its pid
        assert remove_leftovers(target) == []
        assert sorted(path.name for path in target.parent.iterdir()) == during
        (pauses / f"{point}.resume").touch()
        assert writer.wait(timeout=WRITER_WAIT_S) == 0, writer.communicate()[1]
    finally:
        if writer.poll() is None:
            os.killpg(writer.pid, signal.SIGKILL)
            writer.wait()
    assert sorted(path.name for path in target.parent.iterdir()) == ["eval"]
    assert (target / "samples.md").read_text(encoding="utf-8") == "the new output"


WRITER_WAIT_S = 120  # a guard against a hung child, not a timing assertion


def wait_for(marker: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WRITER_WAIT_S
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"the writer never paused: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
