"""A DAG run holds params.yaml from apply to restore (issue 17, defect 5).

pipeline/params_lock.py (the owner record and its flock), pipeline/params_backup.py (overrides
in and out, a three-way restore) and their use in pipeline/orchestration.py: a second run is
refused or takes over a dead run's lock, a hand-run `mt`/`dvc repro` is refused naming the run,
and restore drops the run's overrides while keeping a person's edits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.config import load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.orchestration import apply_run_params, release_dead_run, restore_params
from pipeline.params_backup import ParamsBackup, restore_text, with_overrides
from pipeline.params_lock import (
    LockOwner,
    ParamsHeld,
    ParamsLock,
    RunRef,
    RunState,
    refuse_if_held_by_another_run,
)
from pipeline.params_lock import main as params_lock_main
from pipeline.paths import project_paths
from tests.conftest import REPO_ROOT, TINY_OVERRIDES, write_params

RUN_A = RunRef("retrain_translation", "manual__2026-03-01T10:00:00+00:00")
RUN_B = RunRef("retrain_translation", "scheduled__2026-03-01T10:00:05+00:00")
REPO_PARAMS = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
REPO_EPOCHS = yaml.safe_load(REPO_PARAMS)["train"]["epochs"]


def answer(state: RunState) -> Callable[[RunRef], RunState]:
    """What Airflow says about the holder (the DAG asks it with the Task SDK's get_dr_count)."""
    return lambda run: state


def never_asked(run: RunRef) -> RunState:
    raise AssertionError(f"Airflow was asked about {run} though nobody held params.yaml")


@pytest.fixture
def project(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """project_dir with the repository's params.yaml as is (comments and all); not in Airflow."""
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    (project_dir / "params.yaml").write_text(REPO_PARAMS, encoding="utf-8")
    return project_dir


def holder(root: Path) -> LockOwner | None:
    return ParamsLock(project_paths(root)).owner()


def params_text(root: Path) -> str:
    return (root / "params.yaml").read_text(encoding="utf-8")


# ---- one run ------------------------------------------------------------------------------


def test_a_run_holds_params_yaml_from_apply_to_restore(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    owner = holder(project)
    assert owner is not None and owner.run == RUN_A
    assert params_text(project) == REPO_PARAMS.replace(
        f"  epochs: {REPO_EPOCHS}\n", "  epochs: 4\n"
    )

    outcome = restore_params(project, RUN_A)
    assert outcome == (
        "params.yaml: restored the original (dropped this run's overrides: train.epochs)"
    )
    assert params_text(project) == REPO_PARAMS
    assert holder(project) is None


def test_a_run_without_overrides_holds_the_lock_too(project: Path) -> None:
    apply_run_params(project, {}, RUN_A, never_asked)
    owner = holder(project)
    assert owner is not None and owner.run == RUN_A
    assert params_text(project) == REPO_PARAMS
    assert restore_params(project, RUN_A) == "params.yaml: no overrides to restore"
    assert holder(project) is None


# ---- a second run -------------------------------------------------------------------------


def test_a_second_run_is_refused_while_airflow_runs_the_first(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    applied = params_text(project)
    owner = holder(project)

    with pytest.raises(ParamsHeld) as error:
        apply_run_params(project, {"epochs": 2}, RUN_B, answer(RunState.ACTIVE))
    assert str(error.value) == (
        f"{project / 'params.yaml'}: held by {owner}, whose run params are in it; Airflow reports "
        "it still running; this run changed nothing, trigger it again later"
    )
    assert params_text(project) == applied
    assert holder(project) == owner


def test_a_holder_this_airflow_does_not_know_is_not_taken_over(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    with pytest.raises(ParamsHeld) as error:
        apply_run_params(project, {}, RUN_B, answer(RunState.UNKNOWN))
    assert str(error.value).endswith(
        "this Airflow does not know that run (another Airflow, or `airflow dags test` on another "
        f"database); if it is dead: `mt params-lock release {RUN_A.run_id}`"
    )
    assert holder(project).run == RUN_A  # type: ignore[union-attr]


def test_the_lock_of_a_run_that_finished_without_restoring_is_taken_over(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)  # its worker died: no restore
    with caplog.at_level(logging.WARNING, logger="pipeline.orchestration"):
        settings = apply_run_params(
            project, {"promotion_policy": "manual"}, RUN_B, answer(RunState.FINISHED)
        )
    assert settings["overrides"] == {"register": {"policy": "manual"}}
    assert holder(project).run == RUN_B  # type: ignore[union-attr]
    applied = yaml.safe_load(params_text(project))
    assert (applied["train"]["epochs"], applied["register"]["policy"]) == (REPO_EPOCHS, "manual")
    assert "finished without its restore_params task; restoring for it" in caplog.text
    restore_params(project, RUN_B)
    assert params_text(project) == REPO_PARAMS


def test_restore_by_a_run_that_does_not_hold_the_lock_changes_nothing(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    applied, owner = params_text(project), holder(project)
    assert restore_params(project, RUN_B) == (
        f"params.yaml: held by {owner}, not by this run; left alone"
    )
    assert params_text(project) == applied
    assert holder(project) == owner


def test_two_runs_applying_at_once_cannot_both_take_the_lock(project: Path) -> None:
    """B blocks on the flock while A's record is written; it then sees A and is refused."""
    lock = ParamsLock(project_paths(project))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.orchestration import apply_run_params\n"
        "from pipeline.params_lock import ParamsHeld, RunRef, RunState\n"
        f"run = RunRef({RUN_B.dag_id!r}, {RUN_B.run_id!r})\n"
        "try:\n"
        f"    apply_run_params(Path({str(project)!r}), {{}}, run, lambda r: RunState.ACTIVE)\n"
        "except ParamsHeld as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with lock.exclusive():
        second = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        )
        wait_until_blocked_on_a_flock(second.pid)
        lock.take(RUN_A)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 3
    assert f"held by {holder(project)}, whose run params are in it" in out
    assert holder(project).run == RUN_A  # type: ignore[union-attr]


def wait_until_blocked_on_a_flock(pid: int) -> None:
    """Until the kernel lists `pid` as waiting for a flock (a `->` line of /proc/locks)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
        if any(fields[1] == "->" and fields[5] == str(pid) for fields in waiting):
            return
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} never waited for the params.yaml flock")


# ---- restore: three-way, at the key level -------------------------------------------------


def test_restore_drops_the_overrides_and_keeps_an_edit_made_during_the_run(
    project: Path,
) -> None:
    apply_run_params(project, {"epochs": 4, "promotion_policy": "manual"}, RUN_A, never_asked)
    edited = params_text(project).replace("seed: 1234", "seed: 7")
    (project / "params.yaml").write_text(edited, encoding="utf-8")

    outcome = restore_params(project, RUN_A)
    assert outcome == (
        "params.yaml: dropped this run's overrides (train.epochs, register.policy); kept the "
        "edits made during the run (seed)"
    )
    assert params_text(project) == REPO_PARAMS.replace("seed: 1234", "seed: 7")


def test_a_person_who_changed_an_overridden_key_keeps_their_value(project: Path) -> None:
    apply_run_params(project, {"epochs": 4, "promotion_policy": "manual"}, RUN_A, never_asked)
    edited = params_text(project).replace("  epochs: 4\n", "  epochs: 6\n")
    (project / "params.yaml").write_text(edited, encoding="utf-8")
    restore_params(project, RUN_A)
    assert params_text(project) == REPO_PARAMS.replace(
        f"  epochs: {REPO_EPOCHS}\n", "  epochs: 6\n"
    )


def test_overrides_keep_comments_and_a_yaml_1_1_word_stays_a_string() -> None:
    applied = with_overrides(REPO_PARAMS, {"data": {"tgt_lang": "no"}, "train": {"epochs": 3}})
    expected = REPO_PARAMS.replace("  tgt_lang: de\n", '  tgt_lang: "no"\n')
    assert applied == expected.replace(f"  epochs: {REPO_EPOCHS}\n", "  epochs: 3\n")
    assert yaml.safe_load(applied)["data"]["tgt_lang"] == "no"  # not False (Norwegian)


def test_keys_a_person_added_or_deleted_during_the_run_stay_so() -> None:
    original = "train:\n  epochs: 8\n  patience: 2\nseed: 1\n"
    applied = with_overrides(original, {"train": {"epochs": 4}})
    current = applied.replace("  patience: 2\n", "") + "extra: true\n"
    restored = restore_text(original, applied, current)
    assert restored.text == "train:\n  epochs: 8\nseed: 1\nextra: true\n"
    assert (restored.dropped, restored.kept) == (["train.epochs"], ["train.patience", "extra"])


def test_an_edit_that_breaks_the_yaml_is_kept_and_the_lock_stays(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    (project / "params.yaml").write_text("train: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="edited during the run into invalid YAML"):
        restore_params(project, RUN_A)
    assert params_text(project) == "train: [\n"
    assert holder(project).run == RUN_A  # type: ignore[union-attr]
    assert ParamsBackup(project_paths(project)).original.is_file()


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i` (we run as root in CI): not even root may replace the file in the block."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_restore_that_cannot_write_keeps_the_lock_and_says_why(project: Path) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    applied = params_text(project)
    with immutable(project / "params.yaml"), pytest.raises(PipelineError) as error:
        restore_params(project, RUN_A)
    assert str(error.value) == (
        f"{project / 'params.yaml'}: cannot be written (Operation not permitted); the run's "
        "overrides are still in it and the run keeps params.yaml until a restore succeeds"
    )
    assert params_text(project) == applied
    assert holder(project).run == RUN_A  # type: ignore[union-attr]
    restore_params(project, RUN_A)
    assert params_text(project) == REPO_PARAMS


# ---- hand-run commands while a run holds params.yaml --------------------------------------


def test_a_hand_run_stage_is_refused_in_one_line_naming_the_run(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    with caplog.at_level(logging.ERROR, logger="pipeline.cli"):
        assert cli.main(["fetch"]) == 2
    [record] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert record.getMessage() == (
        f"fetch failed: {project / 'params.yaml'}: held by {holder(project)}, whose run params "
        "are in it; wait until that run's restore_params task has run (if the run is dead: "
        f"`mt params-lock release {RUN_A.run_id}`)"
    )
    assert not (project / "data").exists()


def test_the_runs_own_stages_read_their_params(
    project: Path, tiny_corpus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_params(project, {**TINY_OVERRIDES, "data": {"source": "dir", "path": ""}})
    apply_run_params(project, {"data_path": str(tiny_corpus_dir)}, RUN_A, never_asked)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", RUN_A.dag_id)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", RUN_A.run_id)
    assert load_config().data.path == str(tiny_corpus_dir)
    assert cli.main(["fetch"]) == 0
    assert (project / "data" / "raw" / "train.en").is_file()


@pytest.mark.slow
def test_a_hand_run_dvc_repro_is_refused_and_changes_nothing(
    tmp_path: Path, tiny_corpus_dir: Path
) -> None:
    from tests.airflow_harness import VENV_BIN, make_project

    project = make_project(tmp_path / "project", tiny_corpus_dir)
    before = params_text(project)
    apply_run_params(project, {"epochs": 1}, RUN_A, never_asked)
    applied = params_text(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MT_"))}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    done = subprocess.run(
        [str(VENV_BIN / "dvc"), "repro"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert f"fetch failed: {project / 'params.yaml'}: held by {holder(project)}" in done.stderr
    assert "Traceback" not in done.stderr
    assert params_text(project) == applied
    assert not (project / "data").exists() and not (project / "dvc.lock").exists()
    restore_params(project, RUN_A)
    assert params_text(project) == before


# ---- the operator's way out ---------------------------------------------------------------


def test_status_and_release_of_a_dead_runs_lock(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_run_params(project, {"epochs": 4}, RUN_A, never_asked)
    owner = holder(project)
    assert params_lock_main(["status"]) == 0
    assert capsys.readouterr().out == f"{project / 'params.yaml'}: held by {owner}\n"
    with pytest.raises(ConfigError) as error:
        release_dead_run(project, RUN_B.run_id)
    assert str(error.value) == (
        f"{project / 'params.yaml'}: not held by run {RUN_B.run_id!r} (holder: {owner})"
    )

    assert params_lock_main(["release", RUN_A.run_id]) == 0
    assert capsys.readouterr().out.endswith(f"; released the lock of {owner}\n")
    assert params_text(project) == REPO_PARAMS
    assert holder(project) is None


def test_release_of_a_run_that_holds_nothing_exits_2_in_one_line(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.params_lock", "release", "manual__x"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"params_lock: {project / 'params.yaml'}: not held by run 'manual__x' (holder: None)\n"
    )


def test_a_lock_record_that_is_not_ours_is_named(project: Path) -> None:
    record = ParamsLock(project_paths(project)).record_file
    record.parent.mkdir(parents=True)
    record.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="params.owner.json: not a lock record written by"):
        refuse_if_held_by_another_run(project_paths(project))
