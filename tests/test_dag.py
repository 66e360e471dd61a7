"""The DAG (dags/retrain_translation.py) and its tasks (pipeline/orchestration/tasks.py).

DagBag import test, structure and defaults, a run's settings (start_run) and the stage script.
Whole runs on a tiny corpus go through a live Airflow (tests/test_airflow_live.py) and Celery
(tests/test_celery_topology.py, tests/test_multi_host.py).
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.orchestration.run_params import (
    KEEP,
    RUN_PARAM_SCHEMA,
    event_values,
    model_name_for_pair,
    overrides_from_run_params,
    run_values,
)
from pipeline.orchestration.tasks import (
    STAGES,
    approval_request,
    resolve_project_dir,
    stage_command,
    start_run,
)
from pipeline.params_edit import merge_overrides, with_overrides
from tests.conftest import REPO_ROOT, deep_merge, git_commit_all, write_params

DAG_ID = "retrain_translation"
SETTINGS = load_config(REPO_ROOT / "params.yaml").orchestration
CLOSE_TASKS = ("close_run_default", "close_run_gpu")
RUN_ID = "manual__2026-03-01T10:00:00+00:00"
EXPERIMENT = "retrain_translation-manual__2026-03-01T10-00-00-00-00"


@pytest.fixture
def git_project(project_dir: Path) -> Path:
    """project_dir with its params.yaml committed: where a run starts; run data paths may be
    anywhere in it."""
    write_params(project_dir, {"orchestration": {"data_root": "."}})
    git_commit_all(project_dir)
    return project_dir


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The repo's dags/ folder parsed by Airflow's DagBag, with a throw-away AIRFLOW_HOME."""
    home = tmp_path_factory.mktemp("airflow_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(home))
        patch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        patch.delenv("MT_PROJECT_DIR", raising=False)
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(REPO_ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


def test_dag_folder_imports_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    # One DAG per file, its dag_id the file's name.
    assert sorted(dagbag.dags) == sorted(path.stem for path in (REPO_ROOT / "dags").glob("*.py"))


def test_one_task_per_dvc_stage_in_dvc_yaml_order(dag: Any) -> None:
    dvc_stages = list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text("utf-8"))["stages"])
    assert list(STAGES) == dvc_stages
    assert {"start_run", *STAGES, "save_experiment", *CLOSE_TASKS} <= set(dag.task_ids)
    chain = ["start_run", *STAGES, "choose_promotion", "save_experiment"]
    for upstream, downstream in itertools.pairwise(chain):
        assert upstream in dag.get_task(downstream).upstream_task_ids, (upstream, downstream)
    assert dag.get_task("fetch").upstream_task_ids == {"start_run"}
    for close in CLOSE_TASKS:
        assert dag.get_task(close).upstream_task_ids == {"start_run", "save_experiment"}


def test_train_runs_on_the_train_queue_and_every_other_task_on_the_default_one(dag: Any) -> None:
    queues = {task.task_id: task.queue for task in dag.tasks}
    assert (SETTINGS.queue, SETTINGS.train_queue) == ("default", "gpu")
    assert queues == {
        **{task_id: "default" for task_id in queues},
        "train": "gpu",
        "close_run_gpu": "gpu",
    }


def test_promotion_branch_follows_register_and_always_saves_the_experiment(dag: Any) -> None:
    assert dag.get_task("choose_promotion").upstream_task_ids == {"register", "start_run"}
    assert dag.get_task("choose_promotion").downstream_task_ids == {
        "approve_promotion",
        "save_experiment",
    }
    assert dag.get_task("approve_promotion").upstream_task_ids == {"choose_promotion"}
    assert dag.get_task("promote_challenger").upstream_task_ids == {"approve_promotion"}
    approval = dag.get_task("approve_promotion")
    assert type(approval).__name__ == "ApprovalOperator"
    assert approval.defaults == ["Reject"]
    assert approval.response_timeout == timedelta(hours=SETTINGS.approval_timeout_h)


def test_the_run_is_fixed_in_a_setup_and_its_workspace_closed_in_teardowns(dag: Any) -> None:
    assert dag.get_task("start_run").is_setup
    for close in CLOSE_TASKS:
        task = dag.get_task(close)
        assert task.is_teardown
        assert task.trigger_rule.value == "all_done_setup_success"


def test_dag_level_settings(dag: Any) -> None:
    assert dag.catchup is False
    assert dag.max_active_runs == SETTINGS.max_active_runs == 2
    assert dag.owner == "mt-team"
    assert set(dag.tags) == {"translation", "mlops", "dvc"}
    assert "dvc repro --single-item" in dag.doc_md
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert timetable.timetable.expression == "0 0 * * 0"  # @weekly
    assert timetable.asset_condition.name == "mt_raw_corpus"
    assert timetable.asset_condition.uri == SETTINGS.raw_data_asset


def test_retries_on_fetch_and_register_and_one_resume_of_train(dag: Any) -> None:
    retries = {stage: dag.get_task(stage).retries for stage in STAGES}
    expected = {stage: 0 for stage in STAGES} | {"train": 1}
    expected |= {"fetch": SETTINGS.retries, "register": SETTINGS.retries}
    assert retries == expected
    fetch = dag.get_task("fetch")
    assert fetch.retry_exponential_backoff
    assert fetch.retry_delay == timedelta(seconds=SETTINGS.retry_delay_s)
    assert fetch.max_retry_delay == timedelta(seconds=SETTINGS.max_retry_delay_s)


def test_every_task_has_an_execution_timeout(dag: Any) -> None:
    timeouts = {task.task_id: task.execution_timeout for task in dag.tasks}
    assert all(timeouts.values()), timeouts
    assert timeouts["train"] == timedelta(minutes=SETTINGS.train_timeout_min)
    assert timeouts["evaluate"] == timedelta(minutes=SETTINGS.stage_timeout_min)


def test_params_form_defaults_mean_keep_params_yaml(dag: Any) -> None:
    defaults = {name: dag.params[name] for name in dag.params}
    assert defaults == {
        "epochs": None,
        "data_source": KEEP,
        "data_path": None,
        "src_lang": None,
        "tgt_lang": None,
        "model_name": None,
        "promotion_policy": KEEP,
    }
    config = load_config(REPO_ROOT / "params.yaml")
    assert overrides_from_run_params(defaults, config) == {}


def test_params_form_uses_the_run_param_schema_from_the_config_ranges(dag: Any) -> None:
    form = {}
    for name in dag.params:
        schema = dict(dag.params.get_param(name).schema)
        assert schema.pop("title") and dag.params.get_param(name).description
        form[name] = schema
    assert form == RUN_PARAM_SCHEMA
    assert RUN_PARAM_SCHEMA["epochs"] == {
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 500,
    }
    assert RUN_PARAM_SCHEMA["src_lang"]["pattern"] == "^(?:[a-z]{2,3})$"


def test_parsing_the_dag_imports_no_heavy_library(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO_ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "heavy = {'tensorflow', 'keras', 'mlflow', 'dvc', 'sentencepiece', 'great_expectations'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


# ---- per-run params ------------------------------------------------------------------------


def repo_config() -> Any:
    return load_config(REPO_ROOT / "params.yaml")


def test_set_run_params_become_params_yaml_overrides() -> None:
    values = {
        "epochs": 3,
        "data_source": "tsv",
        "data_path": "/corpora/new",
        "src_lang": "",
        "tgt_lang": "",
        "model_name": "",
        "promotion_policy": "manual",
    }
    assert overrides_from_run_params(values, repo_config()) == {
        "train": {"epochs": 3},
        "data": {"source": "tsv", "path": "/corpora/new"},
        "register": {"policy": "manual"},
    }


def test_a_new_language_pair_gets_its_own_model_name() -> None:
    overrides = overrides_from_run_params({"tgt_lang": "fr"}, repo_config())
    assert overrides == {
        "data": {"tgt_lang": "fr"},
        "register": {"model_name": "multi30k-en-fr-lstm"},
    }


def test_an_explicit_model_name_wins_over_the_derived_one() -> None:
    values = {"tgt_lang": "fr", "model_name": "fr-try"}
    assert overrides_from_run_params(values, repo_config())["register"] == {"model_name": "fr-try"}


def test_a_model_name_without_the_pair_cannot_be_derived() -> None:
    with pytest.raises(ConfigError, match="does not contain 'en-de'; set the `model_name`"):
        model_name_for_pair("translator", ("en", "de"), ("en", "fr"))


def test_unknown_run_params_are_refused_with_the_allowed_names() -> None:
    with pytest.raises(ConfigError, match="unknown param `epoch`; allowed: epochs, data_source"):
        overrides_from_run_params({"epoch": 3}, repo_config())


def test_asset_event_extras_fill_in_what_the_run_did_not_set() -> None:
    extras = [
        {"data_path": "/old", "from_rest_api": True},
        {"data_path": "/new", "data_source": "dir"},
    ]
    params = {"epochs": None, "data_source": KEEP, "data_path": "", "promotion_policy": "auto"}
    assert run_values(params, event_values(extras, repo_config())) == {
        "data_path": "/new",
        "data_source": "dir",
        "promotion_policy": "auto",
    }


# ---- asset-event extras meet the Trigger form's rules (issue 17, defect 3) ----------------

FORM_RULE = "(the rule of the Trigger form's `{}`)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"epochs": 10_000},
            "asset event extra `epochs` is 10000: 10000 is greater than the maximum of 500 "
            + FORM_RULE.format("epochs"),
        ),
        (
            {"epochs": "3"},
            "asset event extra `epochs` is '3': '3' is not of type 'null', 'integer' "
            + FORM_RULE.format("epochs"),
        ),
        (
            {"src_lang": "../etc"},
            "asset event extra `src_lang` is '../etc': '../etc' does not match "
            "'^(?:[a-z]{2,3})$' " + FORM_RULE.format("src_lang"),
        ),
        (
            {"data_source": "s3"},
            "asset event extra `data_source` is 's3': 's3' is not one of ['params.yaml', "
            "'multi30k', 'dir', 'tsv'] " + FORM_RULE.format("data_source"),
        ),
        (
            {"model_name": "someone-elses-model"},
            "asset event extra `model_name` is 'someone-elses-model': an asset event cannot "
            "choose the registered model; set the run's `model_name` in the Trigger form, or "
            "register.model_name in params.yaml",
        ),
    ],
    ids=["too_many_epochs", "epochs_as_text", "path_as_language", "unknown_source", "model"],
)
def test_asset_event_extras_outside_the_form_schema_are_refused(
    extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        event_values([{"from_rest_api": True}, extra], repo_config())
    assert str(error.value) == message


def test_an_asset_event_may_not_loosen_a_manual_policy() -> None:
    manual = parse_config(deep_merge(repo_params(), {"register": {"policy": "manual"}}))
    with pytest.raises(ConfigError) as error:
        event_values([{"promotion_policy": "auto"}], manual)
    assert str(error.value) == (
        "asset event extra `promotion_policy` is 'auto' but register.policy is 'manual': an "
        "asset event may tighten the promotion policy to manual, never loosen it"
    )
    assert event_values([{"promotion_policy": "manual"}], manual) == {"promotion_policy": "manual"}


def test_an_asset_event_may_tighten_an_auto_policy_to_manual() -> None:
    values = event_values([{"promotion_policy": "manual"}], repo_config())
    assert overrides_from_run_params(values, repo_config()) == {"register": {"policy": "manual"}}


def repo_params() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text("utf-8"))
    return loaded


def start(root: Path, values: dict[str, Any], extras: list[dict[str, Any]] | None = None) -> Any:
    return start_run(root, values, DAG_ID, RUN_ID, extras or [])


def test_bad_extras_fail_the_first_task(git_project: Path) -> None:
    write_params(git_project, {"register": {"policy": "manual"}})
    git_commit_all(git_project)
    with pytest.raises(ConfigError, match="may tighten the promotion policy to manual, never"):
        start(git_project, {}, [{"promotion_policy": "auto"}])


def test_merge_overrides_keeps_the_rest_of_each_section() -> None:
    raw = {"train": {"epochs": 10, "batch_size": 64}, "seed": 1}
    merged = merge_overrides(raw, {"train": {"epochs": 2}})
    assert merged == {"train": {"epochs": 2, "batch_size": 64}, "seed": 1}
    assert raw["train"]["epochs"] == 10


def test_a_run_is_the_commit_its_params_and_its_experiment_and_writes_nothing(
    git_project: Path,
) -> None:
    committed = (git_project / "params.yaml").read_text("utf-8")
    commit = _head(git_project)
    # An uncommitted edit is the person's, not the run's: runs start from the commit.
    (git_project / "params.yaml").write_text(committed.replace("seed: 1234", "seed: 7"))
    before = sorted(p.name for p in git_project.iterdir())
    settings = start(git_project, {"epochs": 4, "promotion_policy": "manual"})
    assert settings == {
        "experiment": EXPERIMENT,
        "commit": commit,
        "params_text": with_overrides(
            committed, {"train": {"epochs": 4}, "register": {"policy": "manual"}}
        ),
        "overrides": {"train": {"epochs": 4}, "register": {"policy": "manual"}},
        "policy": "manual",
        "model_name": "multi30k-en-de-lstm",
        "distributed": False,
    }
    carried = parse_config(yaml.safe_load(settings["params_text"]))
    assert (carried.seed, carried.train.epochs, carried.register.policy) == (1234, 4, "manual")
    assert "seed: 7" in (git_project / "params.yaml").read_text("utf-8")
    assert sorted(p.name for p in git_project.iterdir()) == before


def _head(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip()


def test_with_a_dvc_remote_the_run_says_it_is_distributed(
    git_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MT_DVC_REMOTE", "webdav://10.0.0.1:8080/dvc")
    assert start(git_project, {"epochs": 4})["distributed"] is True


def test_a_remote_that_is_no_url_is_refused_in_one_line(
    git_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MT_DVC_REMOTE", "bucket-without-scheme")
    with pytest.raises(ConfigError, match=r"^DVC remote 'bucket-without-scheme' \(env MT_DVC"):
        start(git_project, {})


def test_a_run_without_overrides_runs_the_committed_params_as_they_are(git_project: Path) -> None:
    settings = start(git_project, {})
    assert settings["overrides"] == {} and settings["policy"] == "auto"
    assert settings["params_text"] == (git_project / "params.yaml").read_text("utf-8")


def test_a_relative_data_path_is_resolved_against_the_project(git_project: Path) -> None:
    (git_project / "incoming").mkdir()
    settings = start(git_project, {"data_source": "dir", "data_path": "incoming"})
    folder = str(git_project / "incoming")
    assert settings["overrides"]["data"] == {"source": "dir", "path": folder}


def test_a_data_path_outside_the_data_root_is_refused(git_project: Path, tmp_path: Path) -> None:
    (git_project / "incoming").mkdir()
    (tmp_path / "elsewhere").mkdir()
    write_params(git_project, {"orchestration": {"data_root": "incoming"}})
    git_commit_all(git_project)
    assert start(git_project, {"data_source": "dir", "data_path": "incoming"})["overrides"]
    (git_project / "incoming" / "escape").symlink_to(tmp_path / "elsewhere")
    for path in (str(tmp_path / "elsewhere"), "incoming/escape", "incoming/.."):
        with pytest.raises(ConfigError, match="is outside orchestration.data_root"):
            start(git_project, {"data_source": "dir", "data_path": path})


def test_invalid_overrides_fail_the_first_task(git_project: Path) -> None:
    with pytest.raises(ConfigError, match=r"`train.epochs` is 0; allowed: \[1, 500\]"):
        start(git_project, {"epochs": 0})
    with pytest.raises(ConfigError, match="data source 'dir' needs a data path"):
        start(git_project, {"data_source": "dir"})
    with pytest.raises(DataError, match="nowhere: data path not found on the worker"):
        start(git_project, {"data_source": "dir", "data_path": "nowhere"})


def test_a_project_without_git_cannot_start_a_run(project_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not a git repository; each run is a DVC experiment"):
        start(project_dir, {})


# ---- project dir and stage script ----------------------------------------------------------


def test_project_dir_comes_from_the_env_then_the_variable(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project_dir / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")
    assert resolve_project_dir(lambda: "/elsewhere") == project_dir.resolve()
    monkeypatch.delenv("MT_PROJECT_DIR")
    assert resolve_project_dir(lambda: str(project_dir)) == project_dir.resolve()
    with pytest.raises(PipelineError, match="no project directory: set env MT_PROJECT_DIR"):
        resolve_project_dir(lambda: None)
    with pytest.raises(PipelineError, match="no dvc.yaml here"):
        resolve_project_dir(lambda: str(project_dir / "reports"))


def test_stage_script_runs_mt_stage_of_the_project_on_a_private_inputs_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "my project"
    fake_bin = root / ".venv" / "bin"
    fake_bin.mkdir(parents=True)
    fake_mt = fake_bin / "mt"
    fake_mt.write_text(
        '#!/bin/sh\necho "cwd=$PWD args=$*"\necho "project=$MT_PROJECT_DIR path=$PYTHONPATH"\n'
        'cat "$5"; echo; stat -c %a "$5"\n'
    )
    fake_mt.chmod(fake_mt.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PYTHONPATH", "/site/extra")
    script = stage_command(root, "train", '{"experiment": "x"}')
    inputs_file = script.split("--inputs ")[1].strip()
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        f"cwd={root} args=stage run train --inputs {inputs_file}",
        f"project={root} path={root}:/site/extra",
        '{"experiment": "x"}',
        "600",
    ]
    assert not Path(inputs_file).exists()  # removed when the task's script exits


def test_stage_script_refuses_an_unknown_stage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage 'deploy'"):
        stage_command(tmp_path, "deploy", "{}")


def test_approval_request_shows_challenger_metrics_and_the_gate() -> None:
    registration = {
        "model_name": "multi30k-en-de-lstm",
        "version": "3",
        "decision": "awaiting_approval",
        "reason": "p=0.010 < 0.05",
        "delta": 1.25,
        "p_value": 0.01,
        "champion_before": "2",
    }
    metrics = {"test_2016_flickr": {"bleu": 31.5, "chrf": 58.25, "ter": 50.0, "sentences": 1000}}
    request = approval_request(registration, metrics)
    assert request["version"] == "3"
    assert request["title"] == "multi30k-en-de-lstm version 3"
    body = request["body"].splitlines()
    assert body[0] == (
        "**multi30k-en-de-lstm** version **3** (@challenger) against @champion version **2**."
    )
    assert "| test_2016_flickr | 31.50 | 58.25 | 50.00 | 1000 |" in body
    assert "Gate: **awaiting_approval**: p=0.010 < 0.05" in body
    assert "BLEU delta vs champion: +1.25, paired bootstrap p-value: 0.010." in body


# ---- a run's experiment, as `dvc exp show` lists it ----------------------------------------


def experiments_of(project: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` of the project: experiment name -> its params and metrics."""
    done = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "dvc"), "exp", "show", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for baseline in json.loads(done.stdout):
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                found[revision["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["metrics.json"]["data"],
                }
    return found


# ---- translate_batch (dags/translate_batch.py) ---------------------------------------------

MONITOR = load_config(REPO_ROOT / "params.yaml").monitor


@pytest.fixture(scope="module")
def batch_dag(dagbag: Any) -> Any:
    return dagbag.dags["translate_batch"]


def test_translate_batch_plans_then_translates_each_batch_as_a_mapped_task(batch_dag: Any) -> None:
    assert set(batch_dag.task_ids) == {"plan_batches", "translate"}
    translate = batch_dag.get_task("translate")
    assert translate.upstream_task_ids == {"plan_batches"}
    assert type(translate).__name__ == "DecoratedMappedOperator"  # one task per batch
    assert set(translate.op_kwargs_expand_input.value) == {"request"}
    assert translate.retries == SETTINGS.retries
    assert translate.execution_timeout == timedelta(minutes=SETTINGS.stage_timeout_min)
    assert batch_dag.get_task("plan_batches").retries == 0


def test_translate_batch_runs_on_the_incoming_asset_and_emits_the_translated_one(
    batch_dag: Any,
) -> None:
    timetable = batch_dag.timetable
    assert type(timetable).__name__ == "AssetTriggeredTimetable"
    assert (timetable.asset_condition.name, timetable.asset_condition.uri) == (
        "mt_incoming_text",
        MONITOR.incoming_asset,
    )
    outlets = batch_dag.get_task("translate").outlets
    assert [(asset.name, asset.uri) for asset in outlets] == [
        ("mt_translated_text", MONITOR.translated_asset)
    ]
    assert (batch_dag.catchup, batch_dag.max_active_runs, batch_dag.owner) == (False, 1, "mt-team")
    assert "input_path" in batch_dag.doc_md


def test_translate_batch_form_has_input_output_and_beam_with_the_shared_schema(
    batch_dag: Any,
) -> None:
    from pipeline.orchestration.batch_request import BATCH_PARAM_SCHEMA

    form = {}
    for name in batch_dag.params:
        param = batch_dag.params.get_param(name)
        schema = dict(param.schema)
        assert schema.pop("title") and param.description and param.value is None
        form[name] = schema
    assert form == BATCH_PARAM_SCHEMA
    assert BATCH_PARAM_SCHEMA["beam_size"] == {
        "type": ["null", "integer"],
        "minimum": 1,
        "maximum": 64,
    }


def test_translate_batch_plan_fails_on_a_path_outside_the_input_root(
    batch_dag: Any, project_dir: Path, tmp_path: Path
) -> None:
    # Issue 25 §3: the Trigger form (or an asset event) could name /etc/passwd; plan_batches,
    # the run's first task, confines the request to the roots of the project's params.yaml.
    from pipeline.config import _load_cached

    incoming, outgoing = tmp_path / "incoming", tmp_path / "outgoing"
    incoming.mkdir()
    outgoing.mkdir()
    monitor = {
        "input_root": str(incoming),
        "output_root": str(outgoing),
        "translated_asset": (outgoing / "translated").as_uri(),
    }
    write_params(project_dir, {"monitor": monitor})
    (project_dir / "dvc.yaml").write_text("stages: {}\n", encoding="utf-8")  # a project root
    _load_cached.cache_clear()
    plan = batch_dag.get_task("plan_batches").python_callable
    with pytest.raises(ConfigError) as error:
        plan(params={"input_path": "/etc/passwd", "output_path": None, "beam_size": None})
    assert str(error.value) == (
        f"input /etc/passwd: outside monitor.input_root ({incoming}); put the file under it, or "
        "change monitor.input_root in params.yaml"
    )
    (incoming / "news.txt").write_text("A dog runs.\n", encoding="utf-8")
    assert plan(params={"input_path": "news.txt"}) == [
        {
            "input_path": str(incoming / "news.txt"),
            "output_path": str(outgoing / "translated" / "news.txt"),
            "beam_size": None,
        }
    ]
