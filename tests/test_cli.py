import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pipeline
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
    assert "missing key `task`" in result.stderr
    assert "Traceback" not in result.stderr


def command_lines(help_text: str) -> list[str]:
    """The lines of the `commands:` block of `mt --help`."""
    block = help_text.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_version_is_the_installed_distributions() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mt = Path(sys.executable).with_name("mt")
    result = subprocess.run([mt, "--version"], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"mt {pyproject['project']['version']}\n",
        "",
    )
    assert pipeline.__version__ == pyproject["project"]["version"]  # one source: pyproject.toml


def test_python_m_pipeline_lists_the_same_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert [line.split()[0] for line in command_lines(result.stdout)] == list(cli.COMMANDS)


def test_every_help_description_starts_in_one_column() -> None:
    lines = command_lines(cli.usage())
    columns = {
        line.index(help_text)
        for line, (_, _, help_text) in zip(lines, cli.COMMANDS.values(), strict=True)
    }
    assert columns == {2 + max(map(len, cli.COMMANDS)) + 2}


KERAS_START_PROBE = """
import sys
from pipeline.keras_start import import_keras_without_scikit_learn
import_keras_without_scikit_learn()
loaded_with_keras = "keras" in sys.modules, "sklearn" in sys.modules
import sklearn
import keras
print(loaded_with_keras, sklearn.__name__, keras.wrappers.SKLearnClassifier.__mro__[-2].__module__)
"""


def test_keras_starts_without_scikit_learn_which_stays_importable() -> None:
    """Keras loaded, scikit-learn not loaded with it, yet importable afterwards; Keras's
    scikit-learn wrappers sit on their stand-in base class (pipeline/keras_start.py)."""
    done = subprocess.run(
        [sys.executable, "-c", KERAS_START_PROBE],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == (
        "(True, False) sklearn keras.src.wrappers.sklearn_wrapper"
    )
