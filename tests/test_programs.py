"""mt starts git and dvc by absolute path: the venv's own first, then PATH; absent is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.programs import program

VENV_BIN = Path(sys.executable).parent


def test_dvc_is_the_venvs_own_even_when_path_does_not_name_the_venv() -> None:
    assert program("dvc", search_path="/usr/bin:/bin") == str(VENV_BIN / "dvc")


def test_git_comes_from_path_by_its_absolute_name(tmp_path: Path) -> None:
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert program("git", search_path=f"{tmp_path}:/usr/bin") == str(fake)
    assert program("git", search_path="/usr/bin:/bin") == "/usr/bin/git"


def test_a_missing_program_is_one_line_naming_where_it_was_looked_for() -> None:
    with pytest.raises(PipelineError) as raised:
        program("no-such-program", search_path="/nowhere")
    assert str(raised.value) == (
        f"`no-such-program` not found in {VENV_BIN} or on PATH; install it (make install "
        "installs dvc; git comes from the system's packages)"
    )
