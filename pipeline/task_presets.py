"""`mt task`: switch the project between translation, summarization and dialogue.

A preset (presets/<task>.yaml) holds only the keys a task changes. `mt task use summarization`
writes them into params.yaml with everything else kept byte for byte, comments included, so
`git diff params.yaml` and `dvc params diff` show exactly what switching changed, and the next
`dvc repro` reruns what those keys feed. presets/translation.yaml puts back the shipped values of
every key another preset sets (a test keeps it equal to params.yaml), so switching back is the
same one command.

The result is checked as a whole before it is written: a preset that would not load (a wrong
key, a name of another task) leaves params.yaml as it was.

    mt task list
    mt task use summarization
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.params_edit import merge_overrides, with_overrides
from pipeline.paths import project_paths
from pipeline.tasks import TASKS


def presets_dir(root: Path) -> Path:
    return root / "presets"


def read_preset(root: Path, task: str) -> dict[str, Any]:
    """presets/<task>.yaml: {section: {key: value}} and the top-level `task`."""
    path = presets_dir(root) / f"{task}.yaml"
    if task not in TASKS:
        raise ConfigError(f"mt task use: unknown task {task!r}; one of {', '.join(TASKS)}")
    if not path.is_file():
        raise ConfigError(f"{path}: preset not found (the project's presets/ folder)")
    preset = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(preset, dict) or preset.get("task") != task:
        raise ConfigError(f"{path}: a preset is a mapping whose `task` is {task!r}")
    return preset


def params_with_preset(params_text: str, preset: dict[str, Any], where: str) -> str:
    """params.yaml text with the preset's keys set; ConfigError if the result would not load."""
    current = yaml.safe_load(params_text)
    for section, keys in preset.items():
        known = current.get(section)
        if isinstance(keys, dict) and not isinstance(known, dict):
            raise ConfigError(f"{where}: preset section `{section}` is not in params.yaml")
    parse_config(merge_overrides(current, preset), f"{where} with the {preset['task']} preset")
    return with_overrides(params_text, changes_only(current, preset))


def changes_only(current: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any]:
    """The preset's keys whose value differs from params.yaml's: the rest keep their text."""
    changes: dict[str, Any] = {}
    for section, keys in preset.items():
        if isinstance(keys, dict):
            differing = {key: value for key, value in keys.items()
                         if current[section].get(key) != value}  # fmt: skip
            if differing:
                changes[section] = differing
        elif current.get(section) != keys:
            changes[section] = keys
    return changes


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Dotted names of the keys whose value differs."""
    changed = []
    for section in after:
        old, new = before.get(section), after[section]
        if isinstance(new, dict) and isinstance(old, dict):
            changed += [f"{section}.{key}" for key in new if old.get(key) != new[key]]
        elif old != new:
            changed.append(section)
    return changed


def use_task(root: Path, task: str) -> list[str]:
    """Write presets/<task>.yaml into root/params.yaml; the keys that changed."""
    params = root / "params.yaml"
    text = params.read_text(encoding="utf-8")
    merged = params_with_preset(text, read_preset(root, task), str(params))
    atomic_write_text(params, merged)
    return changed_keys(yaml.safe_load(text), yaml.safe_load(merged))


def main(argv: list[str]) -> int | None:
    """`mt task list | use TASK`: the tasks, or switch params.yaml to one (docs/tasks.md)."""
    parser = argparse.ArgumentParser(prog="mt task", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the tasks and the one params.yaml is set to")
    use = commands.add_parser("use", help="write presets/TASK.yaml into params.yaml")
    use.add_argument("task", choices=TASKS)
    args = parser.parse_args(argv)
    root = project_paths().root
    if args.command == "list":
        current = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["task"]
        for task in TASKS:
            print(f"{'*' if task == current else ' '} {task}")
        return 0
    changed = use_task(root, args.task)
    print(f"params.yaml: task {args.task}; {len(changed)} keys changed: {', '.join(changed)}")
    print("next: `dvc repro` (docs/tasks.md)")
    return 0
