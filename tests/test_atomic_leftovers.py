"""Temp paths a killed writer left beside an output are removed by the next write of it."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

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

    dead = tmp_path / f".seq2seq.{dead_pid()}.tmp.keras"
    live = tmp_path / f".seq2seq.{os.getppid()}.tmp.keras"  # a save still running: kept
    dead.write_bytes(b"half a model")
    live.write_bytes(b"a model being saved")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    stage_model(model, tmp_path / "seq2seq.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "seq2seq.keras"])
