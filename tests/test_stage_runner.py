"""`mt stage run` outside Airflow, as a worker of a multi-host deployment runs it: real `dvc`
against a DVC remote on a local path, two separate clones of one project, each making the
run's workspace in itself (pipeline/workspaces.py); the clones' own files are never touched."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipeline.orchestration.carried import RunInputs, StageResult
from pipeline.workspaces import RUNS_DIR
from tests.airflow_harness import VENV_BIN, make_project
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

EXPERIMENT = "retrain_translation-manual__2026-11-27T10-00-00-00-00"


@pytest.fixture
def origin(tmp_path: Path, tiny_corpus_dir: Path) -> Path:
    return make_project(tmp_path / "origin", tiny_corpus_dir)


def clone(origin: Path, target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(target)], check=True)
    (target / ".venv").symlink_to(REPO_ROOT / ".venv")
    return target


def head(checkout: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True)
    return done.stdout.decode().strip()


def run_stage(
    checkout: Path, stage: str, inputs: RunInputs, remote: str
) -> subprocess.CompletedProcess[str]:
    inputs_file = checkout.parent / f"{checkout.name}-{stage}-inputs.json"
    inputs_file.write_text(inputs.to_json(), encoding="utf-8")
    env = {
        **os.environ,
        "MT_PROJECT_DIR": str(checkout),
        "PYTHONPATH": str(checkout),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "MT_DVC_REMOTE": remote,
        "DVC_NO_ANALYTICS": "1",
    }
    command = [str(VENV_BIN / "mt"), "stage", "run", stage, "--inputs", str(inputs_file)]
    return subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)


def workspace(checkout: Path) -> Path:
    return checkout / RUNS_DIR / EXPERIMENT


def result_of(done: subprocess.CompletedProcess[str]) -> StageResult:
    assert done.returncode == 0, done.stderr[-4000:]
    return StageResult.from_json(done.stdout.strip().splitlines()[-1])


def out_hashes(result: StageResult) -> dict[str, str]:
    return {out["path"]: out["md5"] for out in result.entry["outs"]}


def test_a_stage_run_on_one_host_is_restored_from_the_run_cache_on_another(
    origin: Path, tmp_path: Path
) -> None:
    first, second = clone(origin, tmp_path / "a"), clone(origin, tmp_path / "b")
    remote = str(tmp_path / "remote")
    inputs = RunInputs(head(first), (first / "params.yaml").read_text("utf-8"), EXPERIMENT)
    fetched = result_of(run_stage(first, "fetch", inputs, remote))
    assert list(out_hashes(fetched)) == ["data/raw"]

    again = run_stage(second, "fetch", inputs, remote)
    assert "Stage 'fetch' is cached - skipping run" in again.stderr
    assert "> mt fetch" not in again.stderr
    assert out_hashes(result_of(again)) == out_hashes(fetched)

    # The next stage on the second host gets the first host's outputs by their lock entry.
    validated = run_stage(
        second,
        "validate_raw",
        RunInputs(inputs.commit, inputs.params_text, EXPERIMENT, (fetched,)),
        remote,
    )
    report = workspace(second) / "reports/validation/summary.json"
    assert result_of(validated).files.keys() == {"reports/validation/summary.json"}
    assert json.loads(report.read_text("utf-8"))["success"] is True
    for checkout in (first, second):
        assert not (checkout / "data").exists() and not (checkout / "dvc.lock").exists()


def test_a_clone_without_the_runs_commit_is_refused_and_nothing_is_made(
    origin: Path, tmp_path: Path
) -> None:
    checkout = clone(origin, tmp_path / "a")
    params = (checkout / "params.yaml").read_text("utf-8")
    done = run_stage(checkout, "fetch", RunInputs("0" * 40, params, EXPERIMENT), str(tmp_path))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"stage failed: {checkout}: this checkout does not have commit 000000000000, where the "
        "run started; fetch it (git fetch) or restart the run once every worker has it"
    )
    assert not workspace(checkout).exists()


def test_an_unreachable_remote_fails_in_one_line_before_the_stage_runs(
    origin: Path, tmp_path: Path
) -> None:
    checkout = clone(origin, tmp_path / "a")
    params = (checkout / "params.yaml").read_text("utf-8")
    inputs = RunInputs(head(checkout), params + "# this run's params\n", EXPERIMENT)
    done = run_stage(checkout, "fetch", inputs, "webdav://127.0.0.1:9/dvc")
    assert done.returncode == 2  # PipelineError's exit code
    last = done.stderr.strip().splitlines()[-1]
    unreachable = "stage failed: DVC remote webdav://127.0.0.1:9/dvc: unreachable from this worker"
    assert last.endswith(
        f"{unreachable} (ConnectError: [Errno 111] Connection refused); nothing ran"
    )
    assert not (workspace(checkout) / "data" / "raw").exists()
    assert (workspace(checkout) / "params.yaml").read_text("utf-8") == inputs.params_text
    assert (checkout / "params.yaml").read_text("utf-8") == params
