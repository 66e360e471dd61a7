"""retrain_translation: the DVC pipeline as an Airflow 3 DAG (see docs/airflow.md).

This file is configuration: no work and no heavy import at parse time. Every stage task runs
`mt stage run <stage>`: `dvc repro --single-item <stage>` in the run's own workspace; the other
tasks call pipeline.orchestration.tasks, which imports MLflow and DVC only inside the functions
that need them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    chain,
    dag,
    setup,
    task,
    teardown,
)

from pipeline.orchestration import alerts, tasks
from pipeline.orchestration.dag_defaults import parse_time_config, project_dir, task_defaults
from pipeline.orchestration.run_params import KEEP, RUN_PARAM_SCHEMA
from pipeline.orchestration.tasks import STAGES

# At parse time the params.yaml beside this DAG (or MT_PROJECT_DIR's) gives schedule and retries.
CONFIG = parse_time_config(__file__)
# Schedule and retries (orchestration:); where failures and pending approvals are sent (monitor:).
SETTINGS, MONITOR = CONFIG.orchestration, CONFIG.monitor
RAW_CORPUS = Asset(name="mt_raw_corpus", uri=SETTINGS.raw_data_asset, group="translation")
# Stages that talk to the outside world (download, registry server) retry; the rest fail fast,
# since a retry cannot fix bad data or a bug. Train is the exception: a worker lost mid-epoch
# (the slowest task is the likeliest to meet one) retries once and resumes from its checkpoint.
FLAKY_STAGES = {"fetch", "register"}
RESUMABLE_STAGES = {"train"}

DOC_MD = """
### Retrain the English→German translator

One task per DVC stage: **fetch → validate_raw → clean → tokenize → profile → train →
evaluate → register**. Each runs `dvc repro --single-item <stage>` in **the run's own
workspace**: a git worktree of the project (env `MT_PROJECT_DIR` or the Variable
`mt_project_dir`) at its HEAD commit, under `.dvc/tmp/runs/`, sharing the project's DVC cache.
A stage whose inputs did not change does nothing, and the stage's own log streams into the
task log. The project folder itself is never edited: a person's `dvc repro` there works
during a run, and runs overlap (`orchestration.max_active_runs`).

**Runs start** on the schedule in `params.yaml` (`orchestration.schedule`), when a producer
updates the Asset `mt_raw_corpus` (new raw data; the event's `extra` may carry run params such
as `data_path`, checked against this form's rules; it may tighten the promotion policy to
manual, never loosen it, and cannot choose the model name), or from *Trigger* with the form.

**Run params** override the committed `params.yaml` for this run only: `start_run` checks them
and fixes the run (commit, params, experiment name) before any stage starts. The train stage
logs the params it ran with to MLflow; the register stage tags the version with this run's id
and its DVC experiment. **save_experiment** records the workspace as a DVC experiment named
after this run (`dvc exp show` in the project lists it; `dvc exp apply <name>` brings its
model into the checkout); **close_run** removes the workspace, or keeps a failed run's for
`orchestration.keep_failed_days`.

**Promotion**: policy `auto` lets the register stage's significance gate move `@champion`;
`manual` stops at `approve_promotion`, which shows the challenger against the champion and waits
for *Approve* (then `mt registry promote <version>`) or *Reject*.
"""


def _timeout(stage: str) -> timedelta:
    minutes = SETTINGS.train_timeout_min if stage == "train" else SETTINGS.stage_timeout_min
    return timedelta(minutes=minutes)


def _inputs(context: dict[str, Any], stages: tuple[str, ...]) -> str:
    """The run's inputs for this task: its settings, and on several hosts the results of
    `stages` (on one host every task works in the same workspace)."""
    ti = context["ti"]
    settings = ti.xcom_pull(task_ids="start_run")
    results = [ti.xcom_pull(task_ids=name) for name in stages] if settings["distributed"] else []
    return tasks.run_inputs(settings, results)


def stage_task(stage: str) -> Any:
    """The task that runs one DVC stage, on the train queue or the default one."""
    retries = SETTINGS.retries if stage in FLAKY_STAGES else int(stage in RESUMABLE_STAGES)

    @task.bash(
        task_id=stage,
        queue=SETTINGS.train_queue if stage == "train" else SETTINGS.queue,
        execution_timeout=_timeout(stage),
        retries=retries,
        doc_md=f"`dvc repro --single-item {stage}` in the run's workspace (several hosts: "
        "pulled from and pushed to the DVC remote).",
    )
    def run_stage(**context: Any) -> str:
        earlier = STAGES[: STAGES.index(stage)]
        return tasks.stage_command(project_dir(), stage, _inputs(context, earlier))

    return run_stage()


@task.bash(execution_timeout=timedelta(minutes=10))
def save_experiment(**context: Any) -> str:
    """`dvc exp save` of the run's workspace as the DVC experiment named after this run."""
    return tasks.save_command(project_dir(), _inputs(context, STAGES))


def close_task(queue: str) -> Any:
    """A worker of `queue` removes the run's workspace on its host (kept if the run failed)."""

    @teardown
    @task(task_id=f"close_run_{queue}", queue=queue, execution_timeout=timedelta(minutes=10))
    def close_run(**context: Any) -> str:
        ti = context["ti"]
        settings = ti.xcom_pull(task_ids="start_run") or {}
        if "experiment" not in settings:
            return "start_run did not finish: no workspace was made"
        saved = ti.xcom_pull(task_ids="save_experiment") is not None
        return tasks.close_run(
            project_dir(), settings["experiment"], saved, SETTINGS.keep_failed_days
        )

    return close_run()


@setup
@task(execution_timeout=timedelta(minutes=5))
def start_run(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    """Check the run params and fix the run: commit, params text, experiment name."""
    return tasks.start_run(
        project_dir(),
        params or {},
        context["dag"].dag_id,
        context["run_id"],
        _asset_event_extras(context),
    )


def _asset_event_extras(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The `extra` of each asset event that triggered this run, oldest first."""
    events = context.get("triggering_asset_events") or {}
    return [dict(event.extra or {}) for batch in events.values() for event in batch]


@task.branch(execution_timeout=timedelta(minutes=10))
def choose_promotion(run_settings: dict[str, Any], **context: Any) -> list[str]:
    """Policy manual: describe the challenger for the approver; auto: the gate already decided.
    The experiment is saved either way."""
    if run_settings["policy"] != "manual":
        return ["save_experiment"]
    inputs = _inputs(context, STAGES)
    request = tasks.challenger_awaiting_approval(project_dir(), inputs, context["run_id"])
    if request is None:
        return ["save_experiment"]
    context["ti"].xcom_push(key="approval", value=request)
    return ["save_experiment", "approve_promotion"]


@task(execution_timeout=timedelta(minutes=10))
def promote_challenger(**context: Any) -> str:
    """`mt registry promote <version>` once a human approved it."""
    ti = context["ti"]
    request = ti.xcom_pull(task_ids="choose_promotion", key="approval")
    answer = ti.xcom_pull(task_ids="approve_promotion") or {}
    approver = (answer.get("responded_by_user") or {}).get("name", "unknown")
    reason = f"approved by {approver} in Airflow run {context['run_id']}"
    tasks.promote_version(project_dir(), request["model_name"], request["version"], reason)
    return str(request["version"])


RUN_PARAMS = {
    "epochs": Param(
        None,
        **RUN_PARAM_SCHEMA["epochs"],
        title="Epochs",
        description="Training epochs for this run. Empty: train.epochs from params.yaml.",
    ),
    "data_source": Param(
        KEEP,
        **RUN_PARAM_SCHEMA["data_source"],
        title="Data source",
        description=(
            "multi30k: the public corpus; dir: {split}.{lang}(.gz) files; tsv: {split}.tsv(.gz)."
        ),
    ),
    "data_path": Param(
        None,
        **RUN_PARAM_SCHEMA["data_path"],
        title="Data path",
        description="Folder on the worker with the corpus (dir/tsv). Empty: data.path.",
    ),
    "src_lang": Param(
        None,
        **RUN_PARAM_SCHEMA["src_lang"],
        title="Source language",
        description="e.g. en. Empty: data.src_lang from params.yaml.",
    ),
    "tgt_lang": Param(
        None,
        **RUN_PARAM_SCHEMA["tgt_lang"],
        title="Target language",
        description="e.g. de or fr. Empty: data.tgt_lang from params.yaml.",
    ),
    "model_name": Param(
        None,
        **RUN_PARAM_SCHEMA["model_name"],
        title="Registered model name",
        description="Empty: register.model_name, with the language pair swapped if it changed.",
    ),
    "promotion_policy": Param(
        KEEP,
        **RUN_PARAM_SCHEMA["promotion_policy"],
        title="Promotion policy",
        description="auto: the significance gate decides; manual: a human approves in the UI.",
    ),
}


def _schedule() -> Any:
    if SETTINGS.schedule.lower() in {"none", ""}:
        return RAW_CORPUS
    timetable = CronTriggerTimetable(SETTINGS.schedule, timezone=SETTINGS.timezone)
    return AssetOrTimeSchedule(timetable=timetable, assets=RAW_CORPUS)


@dag(
    dag_id="retrain_translation",
    schedule=_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Each run has its own workspace; the registry's champion lock orders their promotions.
    max_active_runs=SETTINGS.max_active_runs,
    doc_md=DOC_MD,
    tags=["translation", "mlops", "dvc"],
    params=RUN_PARAMS,
    default_args={
        **task_defaults(SETTINGS, MONITOR),
        "execution_timeout": timedelta(minutes=SETTINGS.stage_timeout_min),
    },
)
def retrain_translation() -> None:
    run_settings = start_run()
    stages = [stage_task(stage) for stage in STAGES]
    chain(run_settings, *stages)
    choice, saved = choose_promotion(run_settings), save_experiment()
    approval = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote {{ ti.xcom_pull(task_ids='choose_promotion', key='approval').title }}?",
        body="{{ ti.xcom_pull(task_ids='choose_promotion', key='approval').body }}",
        defaults="Reject",
        response_timeout=timedelta(hours=SETTINGS.approval_timeout_h),
        # Called once the request is in the UI (HITLOperator.execute), so the link works.
        notifiers=alerts.approval_notifiers(MONITOR),
    )
    chain(stages[-1], choice, [saved, approval])
    chain(approval, promote_challenger())
    for queue in dict.fromkeys([SETTINGS.queue, SETTINGS.train_queue]):
        closing = close_task(queue)
        saved >> closing
        run_settings >> closing


retrain_translation()
