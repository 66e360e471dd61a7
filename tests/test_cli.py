import subprocess
import sys

import pytest

from pipeline import cli
from tests.conftest import REPO_ROOT


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert f"  {command}" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: mt COMMAND" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_resolves_to_a_callable() -> None:
    for command in cli.COMMANDS:
        assert callable(cli.resolve(command)), command


def test_bad_params_give_a_clear_error_and_exit_code(tmp_path, monkeypatch) -> None:
    (tmp_path / "params.yaml").write_text("seed: 1\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "fetch"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "fetch failed:" in result.stderr
    assert "missing key `data`" in result.stderr
    assert "Traceback" not in result.stderr
