"""What a multi-host run carries from task to task (pipeline/orchestration/carried.py): which
uncached outputs travel, how lock entries merge into dvc.lock, the task scripts' inputs, and
what a worker refuses of what XCom carries (orchestration/carried_checks.py)."""

from __future__ import annotations

import base64
import gzip
import re
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError, PipelineError
from pipeline.orchestration.carried import (
    RunInputs,
    StageResult,
    carried_files,
    check_results,
    load_pipeline,
    read_lock,
    write_carried_files,
    write_lock_entries,
)
from pipeline.orchestration.carried_checks import (
    MAX_PACKED_BYTES,
    MAX_UNPACKED_BYTES,
    check_commit,
    check_params_text,
    unpack,
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
    write_carried_files(target, inputs.results, PIPELINE)
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


# --- what a worker accepts from XCom (pipeline/orchestration/carried_checks.py) ---------------

REPO_PARAMS = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")


def packed(data: bytes) -> str:
    return base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")


@pytest.mark.parametrize(
    "relative",
    [
        "/etc/cron.d/evil",
        "../outside.txt",
        "dvc.yaml",
        "params.yaml",
        "pipeline/cli.py",
        "reports/validation/../../dvc.yaml",
        "reports/validation_summary.json",
    ],
)
def test_a_carried_file_outside_its_stages_uncached_outputs_is_refused(
    tmp_path: Path, relative: str
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    result = StageResult("validate_raw", {}, {relative: packed(b"stage: {cmd: evil}\n")})
    with pytest.raises(ConfigError, match="is not under the stage's uncached outputs"):
        write_carried_files(workspace, [result], PIPELINE)
    assert sorted(tmp_path.rglob("*")) == [workspace]


def test_a_carried_file_through_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "workspace", tmp_path / "outside"
    outside.mkdir()
    (workspace / "reports").mkdir(parents=True)
    (workspace / "reports" / "validation").symlink_to(outside)
    result = StageResult("validate_raw", {}, {"reports/validation/x.json": packed(b"{}")})
    with pytest.raises(ConfigError, match="reports/validation is a symlink"):
        write_carried_files(workspace, [result], PIPELINE)
    assert list(outside.iterdir()) == []


def test_a_gzip_bomb_is_refused_before_it_is_unpacked_in_full() -> None:
    bomb = packed(b"\0" * (MAX_UNPACKED_BYTES + 1))
    assert len(bomb) < 100_000  # ~87 kB that would unpack to 64 MB
    with pytest.raises(ConfigError, match="unpacks to more than 64000000 bytes"):
        unpack("reports/validation/summary.json", bomb, MAX_UNPACKED_BYTES)


def test_results_over_the_packed_cap_or_with_foreign_outputs_are_refused() -> None:
    too_big = StageResult(
        "validate_raw", {}, {"reports/validation/a": "A" * (MAX_PACKED_BYTES + 1)}
    )
    with pytest.raises(PipelineError, match=f"carries {MAX_PACKED_BYTES + 1} bytes packed"):
        check_results([too_big], PIPELINE)
    foreign = StageResult("fetch", {"outs": [{"path": "pipeline/cli.py", "md5": "0" * 32}]})
    with pytest.raises(ConfigError, match="records outputs dvc.yaml does not give it: pipeline"):
        check_results([foreign], PIPELINE)
    with pytest.raises(ConfigError, match="stage 'deploy' is not in dvc.yaml"):
        check_results([StageResult("deploy", {})], PIPELINE)


def test_carried_params_may_change_only_what_a_run_param_sets() -> None:
    check_params_text(REPO_PARAMS, REPO_PARAMS.replace("  epochs: 15", "  epochs: 4"))
    elsewhere = REPO_PARAMS.replace("https://github.com/multi30k", "http://10.0.0.5/")
    with pytest.raises(ConfigError, match="changes data.url, which no run param sets"):
        check_params_text(REPO_PARAMS, elsewhere)
    with pytest.raises(ConfigError, match="`train.epochs` is 10000: 10000 is greater than"):
        check_params_text(REPO_PARAMS, REPO_PARAMS.replace("  epochs: 15", "  epochs: 10000"))
    with pytest.raises(ConfigError, match="run inputs: commit '' is not 40 hex digits"):
        check_commit("")
