"""`mt task use`: a preset is written into params.yaml, everything else kept byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.params_edit import merge_overrides
from pipeline.task_presets import changes_only, read_preset, use_task
from pipeline.tasks import TASKS
from tests.conftest import REPO_ROOT


def shipped_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def project_copy(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO_ROOT / "presets", tmp_path / "presets")
    return tmp_path


def test_the_translation_preset_is_the_shipped_params() -> None:
    # Switching back must restore the defaults: the preset may not drift from params.yaml.
    assert changes_only(shipped_params(), read_preset(REPO_ROOT, "translation")) == {}


def test_the_translation_preset_puts_back_every_key_another_preset_sets() -> None:
    translation = read_preset(REPO_ROOT, "translation")
    for task in ("summarization", "dialogue"):
        for section, keys in read_preset(REPO_ROOT, task).items():
            if isinstance(keys, dict):
                assert set(keys) <= set(translation[section]), (task, section)


@pytest.mark.parametrize("task", TASKS)
def test_every_preset_makes_params_that_load_as_its_task(task: str) -> None:
    config = parse_config(merge_overrides(shipped_params(), read_preset(REPO_ROOT, task)))
    assert config.task == task
    assert config.register.model_name.split("-")[-1] == "lstm"


def test_switching_there_and_back_restores_params_byte_for_byte(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    before = (root / "params.yaml").read_text(encoding="utf-8")
    changed = use_task(root, "summarization")
    after = (root / "params.yaml").read_text(encoding="utf-8")
    assert changed[:3] == ["task", "data.source", "data.path"]
    assert "register.metric" in changed and "decode.max_source_length" in changed
    # Only the changed lines differ: comments and the other keys keep their text.
    assert "# translation | summarization | dialogue" in after
    assert "task: summarization\n" in after and "  metric: rouge_l " in after
    assert len(after.splitlines()) == len(before.splitlines())
    assert use_task(root, "translation") == changed
    assert (root / "params.yaml").read_text(encoding="utf-8") == before


def test_a_preset_that_would_not_load_leaves_params_as_they_were(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    preset = root / "presets" / "dialogue.yaml"
    preset.write_text(
        preset.read_text(encoding="utf-8").replace(
            "chatterbot-dialogue-lstm", "chatterbot-summarization-lstm"
        ),
        encoding="utf-8",
    )
    before = (root / "params.yaml").read_bytes()
    with pytest.raises(ConfigError, match="names the task summarization, but `task` is dialogue"):
        use_task(root, "dialogue")
    assert (root / "params.yaml").read_bytes() == before
