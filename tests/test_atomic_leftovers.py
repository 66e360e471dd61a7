"""Temp paths a killed writer left beside an output are removed by the next write of it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from pipeline.atomic import atomic_directory, atomic_write_text

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
