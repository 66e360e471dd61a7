"""What a multi-host run carries from task to task (pipeline/orchestration/carried.py): which
uncached outputs travel, how lock entries merge into dvc.lock, the task scripts' inputs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline.orchestration.carried import (
    RunInputs,
    StageResult,
    carried_files,
    load_pipeline,
    read_lock,
    write_carried_files,
    write_lock_entries,
)
from tests.conftest import REPO_ROOT

PIPELINE = load_pipeline(REPO_ROOT)
ORDER = list(PIPELINE["stages"])


def write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text, encoding="utf-8")


def test_only_what_later_stages_read_or_small_reports_travel(tmp_path: Path) -> None:
    write(tmp_path, "reports/validation/summary.json", '{"ok": true}')
    write(tmp_path, "reports/validation/docs/index.html", "<html>data docs</html>")
    write(tmp_path, "reports/eval/test_2016_flickr.hyp", "Ein Hund.\n")
    write(tmp_path, "reports/eval/report.json", "{}")
    write(tmp_path, "metrics.json", '{"bleu": 1}')
    write(tmp_path, "reports/train/history.csv", "epoch\n1\n")
    write(tmp_path, "reports/train/metrics.json", "{}")
    (tmp_path / "reports/train/run.json").write_text("{}")  # cached: DVC's remote moves it
    travelling = {stage: sorted(carried_files(tmp_path, stage, PIPELINE)) for stage in ORDER}
    assert travelling["validate_raw"] == ["reports/validation/summary.json"]
    assert travelling["evaluate"] == [
        "metrics.json",
        "reports/eval/report.json",
        "reports/eval/test_2016_flickr.hyp",
    ]
    assert travelling["train"] == ["reports/train/history.csv", "reports/train/metrics.json"]
    assert travelling["fetch"] == travelling["tokenize"] == []


def test_carried_files_arrive_byte_identical(tmp_path: Path) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    write(source, "reports/validation/summary.json", '{"rows": 3}\n')
    result = StageResult("validate_raw", {}, carried_files(source, "validate_raw", PIPELINE))
    inputs = RunInputs.from_json(RunInputs("abc", "seed: 1\n", "run-1", (result,)).to_json())
    write_carried_files(target, inputs.results)
    assert (target / "reports/validation/summary.json").read_bytes() == b'{"rows": 3}\n'


def test_lock_entries_merge_in_dvc_yaml_order_and_keep_the_others(tmp_path: Path) -> None:
    old = {"cmd": "mt register", "outs": [{"path": "reports/registration.json", "md5": "1"}]}
    stale_train = {"cmd": "mt train", "outs": [{"path": "models/seq2seq.keras", "md5": "old"}]}
    lock = {"schema": "2.0", "stages": {"register": old, "train": stale_train}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")
    new_train = {"cmd": "mt train", "outs": [{"path": "models/seq2seq.keras", "md5": "new"}]}
    fetched = {"cmd": "mt fetch", "outs": [{"path": "data/raw", "md5": "f.dir"}]}
    results = [StageResult("train", new_train), StageResult("fetch", fetched)]
    write_lock_entries(tmp_path, results, ORDER)
    merged = read_lock(tmp_path)
    assert list(merged["stages"]) == ["fetch", "train", "register"]
    assert merged["stages"]["train"] == new_train
    assert merged["stages"]["register"] == old
    assert merged["schema"] == "2.0"


def test_a_task_script_runs_mt_stage_on_inputs_in_a_private_file(tmp_path: Path) -> None:
    from pipeline.orchestration.tasks import save_command, stage_command

    inputs = RunInputs("abc", "seed: 1\n", "retrain_translation-manual__1").to_json()
    scripts = {
        "run train": stage_command(tmp_path, "train", inputs),
        "save": save_command(tmp_path, inputs),
    }
    for action, script in scripts.items():
        found = re.search(rf"mt stage {action} --inputs (\S+)$", script)
        assert found, script
        file = Path(found.group(1))
        assert file.read_text("utf-8") == inputs
        assert file.stat().st_mode & 0o777 == 0o600  # the params text may be private
        assert f"trap 'rm -f {file}' EXIT" in script
        file.unlink()
