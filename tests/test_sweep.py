"""Sweeps (pipeline/sweep): the grid, its checks, the table, and `mt sweep` end to end.

The end-to-end test runs `mt sweep run` (2 points, 2 at a time) and `mt sweep best --register`
on the tiny corpus against a real `mlflow server`, in a project that keeps the same outputs out
of git as this repository (so the winner's registration has to remake them).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import cli
from pipeline.errors import ConfigError
from pipeline.sweep import runner
from pipeline.sweep.commands import run_points
from pipeline.sweep.errors import SweepError
from pipeline.sweep.grid import (
    MAX_POINTS,
    Axis,
    Point,
    check_points,
    check_sweep_name,
    grid_points,
    parse_axis,
    parse_grid,
)
from pipeline.sweep.table import PointRow, duration, ranked, render, winner
from pipeline.sweep.tracking import Sweep
from pipeline.tracking import experiment_run_tags
from pipeline.workspaces import RUNS_DIR, Workspace, stage_environment
from tests.airflow_harness import make_project
from tests.conftest import REPO_ROOT, git_commit_all, write_tiny_corpus
from tests.mlflow_server import MlflowServer

VENV_BIN = Path(sys.executable).parent

# ---------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize(
    ("text", "axis"),
    [
        ("train.learning_rate=0.001,0.002", Axis("train.learning_rate", ("0.001", "0.002"))),
        ("train.epochs=range(1,4)", Axis("train.epochs", ("1", "2", "3"))),
        (
            "tokenize.model_type=choice(bpe,unigram)",
            Axis("tokenize.model_type", ("bpe", "unigram")),
        ),
        ("train.bucket_boundaries=[8,16],[8]", Axis("train.bucket_boundaries", ("[8,16]", "[8]"))),
        ("model.dropout=0.1", Axis("model.dropout", ("0.1",))),
    ],
    ids=["list", "range", "choice", "list-values", "one-value"],
)
def test_a_set_is_dvc_grid_syntax(text: str, axis: Axis) -> None:
    assert parse_axis(text) == axis


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train.lerning_rate=0.1,0.2",
            "--set 'train.lerning_rate=0.1,0.2': `train.lerning_rate` is not a key of "
            "params.yaml; did you mean train.learning_rate?",
        ),
        ("train.epochs", "--set 'train.epochs': not KEY=VALUE[,VALUE...]"),
        ("+train.extra=1", "--set '+train.extra=1': only KEY=VALUES; a sweep cannot add"),
        (
            "train.epochs=interval(1,3)",
            "--set 'train.epochs=interval(1,3)': use a list (a,b), range(...) or choice(...)",
        ),
        ("train.epochs=2,3,2", "--set 'train.epochs=2,3,2': '2' is listed twice"),
        (
            "register.min_score=0,1",
            "--set 'register.min_score=0,1': `register.min_score` is not sweepable: a sweep tunes",
        ),
        (
            "data.url=http://10.0.0.5/a",
            "--set 'data.url=http://10.0.0.5/a': `data.url` is not sweepable",
        ),
        (
            "orchestration.retries=1,2",
            "--set 'orchestration.retries=1,2': `orchestration.retries` is not sweepable",
        ),
        (
            "monitor.canary_size=1,2",
            "--set 'monitor.canary_size=1,2': `monitor.canary_size` is not sweepable",
        ),
    ],
    ids=[
        "misspelt-key",
        "no-value",
        "adds-a-key",
        "interval",
        "value-twice",
        "gate-rule",
        "data-url",
        "deployment",
        "monitoring",
    ],
)
def test_a_bad_set_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_axis(text)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--set train\.epochs is given twice"):
        parse_grid(["train.epochs=1,2", "train.epochs=3"])
    with pytest.raises(ConfigError, match="at least one --set"):
        parse_grid([])


def test_the_points_are_the_cartesian_product_in_set_order() -> None:
    axes = parse_grid(["train.learning_rate=0.01,0.02", "model.dropout=0.0,0.1"])
    points = grid_points("lr", axes)
    assert [(p.name, p.overrides) for p in points] == [
        ("lr-1", {"train.learning_rate": "0.01", "model.dropout": "0.0"}),
        ("lr-2", {"train.learning_rate": "0.01", "model.dropout": "0.1"}),
        ("lr-3", {"train.learning_rate": "0.02", "model.dropout": "0.0"}),
        ("lr-4", {"train.learning_rate": "0.02", "model.dropout": "0.1"}),
    ]
    assert points[1].set_params() == ["-S", "train.learning_rate=0.01", "-S", "model.dropout=0.1"]
    assert Point.from_dict(json.loads(json.dumps(points[1].as_dict()))) == points[1]


def test_a_grid_larger_than_the_cap_is_refused() -> None:
    axes = [Axis("train.epochs", tuple(map(str, range(1, 12)))), Axis("seed", ("1",) * 10)]
    with pytest.raises(ConfigError, match=f"11 x 10 = 110 points; at most {MAX_POINTS}"):
        grid_points("big", axes)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["train.learning_rate=0.01,2"],
            "params.yaml with train.learning_rate=2: `train.learning_rate` is 2.0; allowed: "
            "(0, 1]",
        ),
        (
            ["train.epochs=2.5"],
            "params.yaml with train.epochs=2.5: `train.epochs` must be of type int, got 2.5",
        ),
        (
            ["train.bucket_boundaries=[16,8]"],
            "params.yaml with train.bucket_boundaries=[16,8]: `train.bucket_boundaries` must "
            "increase",
        ),
    ],
    ids=["out-of-range", "wrong-type", "list-rule"],
)
def test_every_point_is_checked_against_params_yaml_as_dvc_applies_it(
    project_dir: Path, sets: list[str], message: str
) -> None:
    points = grid_points("s", parse_grid(sets))
    with pytest.raises(ConfigError) as raised:
        check_points((project_dir / "params.yaml").read_text("utf-8"), points)
    assert str(raised.value).startswith(message)


def test_valid_points_pass_and_leave_params_yaml_alone(project_dir: Path) -> None:
    before = (project_dir / "params.yaml").read_bytes()
    points = grid_points("s", parse_grid(["train.epochs=1,2", "train.bucket_boundaries=[8,16]"]))
    check_points((project_dir / "params.yaml").read_text("utf-8"), points)
    assert (project_dir / "params.yaml").read_bytes() == before


@pytest.mark.parametrize("name", ["lr", "lr-sweep_2", "A" * 40])
def test_sweep_names_that_make_dvc_experiment_names(name: str) -> None:
    assert check_sweep_name(name) == name


@pytest.mark.parametrize("name", ["", "1lr", "lr sweep", "lr/1", "A" * 41])
def test_sweep_names_dvc_could_not_use_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="sweep name"):
        check_sweep_name(name)


# --------------------------------------------------------------------------------- the table

ROWS = [
    PointRow("s-1", {"train.learning_rate": "0.01"}, "finished", 21.5, 61.4, "r1", "a" * 40),
    PointRow("s-2", {"train.learning_rate": "0.02"}, "failed"),
    PointRow("s-3", {"train.learning_rate": "0.03"}, "finished", 23.25, 3601, "r3", "b" * 40),
    PointRow("s-4", {"train.learning_rate": "0.04"}, "finished", 21.5, 59.5, "r4", "c" * 40),
]


def test_rows_rank_by_val_bleu_ties_in_grid_order_unscored_last() -> None:
    assert [row.name for row in ranked(ROWS)] == ["s-3", "s-1", "s-4", "s-2"]
    assert winner(ROWS, "s").name == "s-3"


def test_the_table_is_markdown_with_each_swept_key() -> None:
    assert render(ROWS, ["train.learning_rate"]).splitlines() == [
        "| # | DVC experiment | train.learning_rate | val BLEU | training | status |",
        "| ---: | --- | --- | ---: | ---: | --- |",
        "| 1 | s-3 | 0.03 | 23.25 | 60 min 01 s | finished |",
        "| 2 | s-1 | 0.01 | 21.50 | 1 min 01 s | finished |",
        "| 3 | s-4 | 0.04 | 21.50 | 1 min 00 s | finished |",
        "| 4 | s-2 | 0.02 | - | - | failed |",
    ]
    assert duration(None) == "-"


def test_no_finished_point_means_no_winner() -> None:
    with pytest.raises(SweepError, match="sweep s: no point has finished with a val BLEU"):
        winner([ROWS[1]], "s")


# -------------------------------------------------------------- progress of `mt sweep run`


def test_each_point_logs_its_params_as_it_starts_and_its_result_as_it_ends(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rates = [{"train.learning_rate": "0.01"}, {"train.learning_rate": "0.02"}]
    points = (Point("s-1", rates[0]), Point("s-2", rates[1]))
    sweep = Sweep("s", "parent", "1", "f" * 40, points, ("train.learning_rate",))

    def run_and_record(root: Path, sweep: Sweep, point: Point) -> PointRow:
        if point.name == "s-2":
            raise SweepError("`dvc exp run` failed (exit 1)")
        return ROWS[0]

    monkeypatch.setattr(runner, "run_and_record", run_and_record)
    with caplog.at_level(logging.INFO, logger="pipeline.sweep.runner"):
        assert run_points(sweep, jobs=1) == ["s-2: `dvc exp run` failed (exit 1)"]
    assert [r.getMessage() for r in caplog.records if r.name == "pipeline.sweep.runner"] == [
        "point 1 of 2 (s-1): train.learning_rate=0.01",
        "point 1 of 2 (s-1): val BLEU 21.50, training 1 min 01 s",
        "point 2 of 2 (s-2): train.learning_rate=0.02",
        "point 2 of 2 (s-2) failed: `dvc exp run` failed (exit 1)",
    ]
    # A DAG's mapped task gets the sweep without its points.
    assert runner.point_place(Sweep.from_header(sweep.header()), points[1]) == "point s-2"


# ----------------------------------------------------------- what a point's processes are told


def test_a_training_run_learns_its_experiment_and_sweep_from_the_environment() -> None:
    assert experiment_run_tags({}) == {}
    environ = {"DVC_EXP_NAME": "s-1", "MT_SWEEP_PARENT_RUN_ID": "abc"}
    assert experiment_run_tags(environ) == {
        "mt.dvc_exp_name": "s-1",
        "mlflow.parentRunId": "abc",
    }


def test_dvc_runs_a_point_in_its_workspace_with_the_project_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    environ = {"MT_PROJECT_DIR": str(tmp_path), "PATH": "/usr/bin", "PYTHONPATH": "/x"}
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    workspace = Workspace(tmp_path, "lr-1")
    env = stage_environment(workspace, environ, {"MT_SWEEP_PARENT_RUN_ID": "abc"})
    assert env["MT_PROJECT_DIR"] == str(tmp_path / RUNS_DIR / "lr-1")
    assert env["PATH"] == f"{tmp_path / '.venv' / 'bin'}:/usr/bin"
    assert env["PYTHONPATH"] == f"{workspace.path}:/x"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert (env["DVC_EXP_NAME"], env["MT_SWEEP_PARENT_RUN_ID"]) == ("lr-1", "abc")


# ------------------------------------------------------------------------ `mt sweep` refusals


def test_a_bad_grid_stops_mt_sweep_run_before_anything_runs(
    project_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    git_commit_all(project_dir)
    assert cli.main(["sweep", "run", "--set", "train.epochs=0,1", "--name", "s"]) == 2
    assert "sweep failed: params.yaml with train.epochs=0: `train.epochs` is 0" in caplog.text
    assert not (project_dir / "mlruns.db").exists()  # no sweep was opened
    assert not (project_dir / RUNS_DIR).exists()  # and no point started


# ---------------------------------------------------------------------------- end to end

# The tiniest training that still makes a model: one epoch of the tiny config.
TINY_SWEEP: dict[str, Any] = {"train": {"epochs": 1}}
MODEL = "multi30k-en-de-lstm"


def project_env(**extra: str) -> dict[str, str]:
    """What `dvc`/`mt` run with from a test: the venv first, no project or Airflow context."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MT_", "AIRFLOW"))}
    env |= {"CI": "true", "DVC_NO_ANALYTICS": "1", "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    return env | extra


def run_in(project: Path, env: dict[str, str], *command: str) -> str:
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    output = f"{done.stdout[-6000:]}{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{' '.join(command)}:\n{output}"
    return done.stdout


def commit_data_stages(project: Path) -> None:
    """`dvc repro tokenize` and a commit of everything: the baseline the points start from,
    so they reuse the data stages (as in a user's repository, where dvc.lock is committed)."""
    env = project_env()
    run_in(project, env, "dvc", "repro", "tokenize")
    run_in(project, env, "git", "add", "-A")
    run_in(project, env, *GIT_USER, "commit", "-qm", "data stages", "--allow-empty")


def committed_project(root: Path) -> Path:
    """The tiny project, its data stages committed, keeping evaluate's reports and the training
    run's record out of git as this repository does: the experiment commits lack them, so the
    winner's registration has to remake evaluate's (the repository also ignores validate's and
    clean's reports, which the same `dvc repro --single-item` remakes; left in git here, they
    spare each point two stages)."""
    project = make_project(root / "project", write_tiny_corpus(root / "corpus"), TINY_SWEEP)
    ignored = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert set(GIT_IGNORED) <= set(ignored)
    with (project / ".gitignore").open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in GIT_IGNORED))
    commit_data_stages(project)
    return project


GIT_IGNORED = ("reports/eval/", "reports/train/run.json")


GIT_USER = ("git", "-c", "user.name=test", "-c", "user.email=test@example.com")


def experiment_revs(project: Path) -> dict[str, str]:
    """DVC experiment name -> commit, from DVC's refs."""
    refs = run_in(
        project, project_env(), "git", "for-each-ref", "--format=%(refname) %(objectname)"
    )
    found = [line.split() for line in refs.splitlines() if line.startswith("refs/exps/")]
    internal = ("refs/exps/stash", "refs/exps/exec/")  # DVC's own, not experiments
    return {ref.rsplit("/", 1)[1]: rev for ref, rev in found if not ref.startswith(internal)}


def table_rows(output: str) -> list[list[str]]:
    return [line.strip("| ").split(" | ") for line in output.splitlines() if line.startswith("| ")]


@pytest.fixture
def sweep_env(shared_mlflow: MlflowServer) -> dict[str, str]:
    """The environment `mt` runs in against the test run's real `mlflow server`."""
    return project_env(MLFLOW_TRACKING_URI=shared_mlflow.url)


@pytest.mark.slow
def test_mt_sweep_run_then_best_register_through_the_gate(
    tmp_path: Path, sweep_env: dict[str, str]
) -> None:
    from mlflow import MlflowClient

    env = sweep_env
    project = committed_project(tmp_path)
    status_before = run_in(project, env, "git", "status", "--porcelain")
    params_before = (project / "params.yaml").read_bytes()
    sets = ("--set", "train.learning_rate=0.01,0.02", "--jobs", "2", "--name", "lr")
    table = table_rows(run_in(project, env, "mt", "sweep", "run", *sets))
    assert table[0] == [
        "#",
        "DVC experiment",
        "train.learning_rate",
        "val BLEU",
        "training",
        "status",
    ]
    assert sorted(row[1:3] for row in table[2:]) == [["lr-1", "0.01"], ["lr-2", "0.02"]]
    assert [row[-1] for row in table[2:]] == ["finished", "finished"]
    best_name = table[2][1]

    # One parent run; each point's training run is its child, named and tagged after its
    # DVC experiment, with the point's params, val scores and experiment commit.
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment_id = client.get_experiment_by_name("translation").experiment_id
    (parent,) = client.search_runs([experiment_id], "tags.`mt.sweep` = 'lr'")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mt.sweep.metric"] == "bleu"  # register.metric: ranked by val BLEU
    children = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {child.data.tags["mt.dvc_exp_name"]: child for child in children}
    revs = experiment_revs(project)
    assert sorted(by_name) == sorted(revs) == ["lr-1", "lr-2"]
    for name, rate in (("lr-1", "0.01"), ("lr-2", "0.02")):
        child = by_name[name]
        assert (child.info.run_name, child.data.tags["stage"]) == (name, "train")
        assert child.data.params["train.learning_rate"] == rate
        assert json.loads(child.data.tags["mt.sweep.point"]) == {"train.learning_rate": rate}
        assert child.data.tags["mt.dvc_exp_rev"] == revs[name]
        assert {"val.bleu", "val.chrf", "sweep.train_seconds"} <= set(child.data.metrics)

    # The best point goes through the register stage: into its own training run, from its
    # own experiment commit, past the gate (the first version becomes @champion).
    best = run_in(project, env, "mt", "sweep", "best", "--register")
    assert f"registered {MODEL} version 1 (created); gate: promoted" in best
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == by_name[best_name].info.run_id
    assert version.tags["git.commit"] == revs[best_name]
    assert "metrics.val.bleu" in version.tags and version.tags["gate.outcome"] == "promoted"
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    tags = client.get_run(parent.info.run_id).data.tags
    assert (tags["mt.sweep.winner"], tags["mt.sweep.registered_version"]) == (best_name, "1")

    # The workspace is as it was: the points and the registration ran elsewhere.
    assert (project / "params.yaml").read_bytes() == params_before
    assert run_in(project, env, "git", "status", "--porcelain") == status_before
    assert len(run_in(project, env, "git", "worktree", "list").splitlines()) == 1
    assert list((project / RUNS_DIR).glob("*/")) == []
